"""The ``kmsbeam`` command line: the parser, dispatch to each command's module (``crypt_cmd`` for
encrypt and decrypt, ``export``, ``cat``, ``rotate.cmd``, ``keys`` ...) and error handling.

::

    kmsbeam encrypt INPUT OUTPUT --fields ssn,email [--key URI] [--context k=v] [beam options]
    kmsbeam decrypt OUTPUT PLAIN                   # options come from OUTPUT/_kmsbeam.json
    kmsbeam encrypt|decrypt|export ... --kms-qps 50   # KMS calls/s per worker (kmsbeam.keys.budget)
    kmsbeam encrypt --watch LANDING/ OUT/ --fields ssn  # each poll's landed files: OUT/window-*/ (watch)
    kmsbeam keys create|list|describe|alias|rotate|disable|enable ...
    kmsbeam encrypt events.parquet OUT --columns ssn,card --parquet-mode pme|cells [--key URI]
    kmsbeam inspect OUT/part-00000-of-00001.parquet  # how Parquet files are protected
    kmsbeam emulator serve --port 9800 --data DIR --access-key-file FILE  # AK:SECRET[:POLICY]
    kmsbeam rotate OUTPUT ROTATED [--to-key URI] [--reencrypt] [--dry-run] [--verify] [--only-key URI]
    kmsbeam encrypt INPUT OUTPUT --fields ssn --key-vault oss://lake/_keys/   # values v2, keys in a vault
    kmsbeam vault rotate|check|gc ...                  # the vault's keys: rotated without the data
    kmsbeam instance-sdk install|check                 # the KMS-instance SDK (alibaba-kms-instance://)

Exit codes (``kmsbeam.pipelines.dead_letters``; the README has the same table):

==== ==========================================================================================
0    every record is good (or the dead letters are within ``--max-dead-letters``, default 0)
1    the job failed (a key-source failure, the KMS away, an unexpected pipeline error)
2    a usage error, found before anything was written (one ``kmsbeam: error: ...`` line)
3    the job finished with dead letters over the budget, or every record failed (one sentence)
130  interrupted (Ctrl-C)
==== ==========================================================================================

Errors are one line, never a traceback. Set ``KMSBEAM_DEBUG=1`` to see the traceback of an
unexpected pipeline failure.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import kmsbeam
from kmsbeam import ConfigurationError, FormatError, KeyNotFoundError, KmsBeamError
from kmsbeam.pipelines import cat, dead_letters, export
from kmsbeam.pipelines._noise import quiet_beam_logging
from kmsbeam.pipelines.crypt_cmd import add_job_parsers, run_job
from kmsbeam.pipelines.dead_letters_cmd import add_dead_letters_parser, run_dead_letters
from kmsbeam.pipelines.emulator_cmd import add_emulator_parser, reject_extra, run_emulator
from kmsbeam.pipelines.inspect import add_inspect_parser, run_inspect
from kmsbeam.pipelines.instance_sdk_cmd import add_instance_sdk_parser, run_instance_sdk
from kmsbeam.pipelines.keys import add_keys_parser, run_keys
from kmsbeam.pipelines.options import context_items
from kmsbeam.pipelines.oss_cmd import add_oss_parser, run_oss
from kmsbeam.pipelines.rotate.cmd import add_rotate_parser
from kmsbeam.pipelines.vault_cmd import add_vault_parser, run_vault

__all__ = ["build_parser", "main"]

USAGE_ERRORS = (ConfigurationError, FormatError, KeyNotFoundError)


class _Exit(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors (``kmsbeam: error: ...``) and no SystemExit."""

    def error(self, message: str) -> NoReturn:
        print(f"kmsbeam: error: {message} (see `{self.prog} --help`)", file=sys.stderr)
        raise _Exit(2)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            print(message, file=sys.stderr, end="")
        raise _Exit(status)

    def format_help(self) -> str:
        """Help text without the reStructuredText markup of docstrings used as descriptions."""
        return _plain(super().format_help())

    def add_argument(self, *names: Any, **kwargs: Any) -> Any:
        """``--oss-x`` options are spelt ``--oss_x`` (Beam's spelling); the other is an alias."""
        return super().add_argument(*[_OSS_ALIAS.sub(_oss_underscores, n) for n in names], **kwargs)


_OSS_ALIAS = re.compile(r"^--oss-[a-z-]+(?==|$)")


def _oss_underscores(match: re.Match[str]) -> str:
    return match.group(0)[:2] + match.group(0)[2:].replace("-", "_")


def _oss_spelling(argv: Sequence[str]) -> list[str]:
    """``--oss-endpoint URL`` -> ``--oss_endpoint URL`` (every ``--oss-*`` option): one
    spelling everywhere, for kmsbeam's parsers and the Beam options passed through."""
    return [_OSS_ALIAS.sub(_oss_underscores, a) if a.startswith("--oss-") else a for a in argv]


_ROLE = re.compile(r":[a-z]+:`~?([^`]+)`")


def _plain(text: str) -> str:
    """``code`` -> code, :func:`name` -> name, **bold** -> bold."""
    return _ROLE.sub(r"\1", text).replace("``", "").replace("**", "")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kmsbeam", allow_abbrev=False, epilog=dead_letters.EXIT_CODES_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Envelope encryption of datasets with Apache Beam.")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"kmsbeam {kmsbeam.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    add_job_parsers(sub)
    add_keys_parser(sub)
    add_inspect_parser(sub)
    add_emulator_parser(sub)
    export.add_export_parser(sub)
    cat.add_cat_parser(sub)
    add_rotate_parser(sub)
    add_dead_letters_parser(sub)
    add_oss_parser(sub)
    add_vault_parser(sub)
    add_instance_sdk_parser(sub)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"kmsbeam: error: {message}", file=sys.stderr)
    return code


def _is_export(location: str) -> bool:
    """``decrypt``'s dispatch: an export (``kmsbeam export``) or a dataset (``kmsbeam encrypt``),
    by the kind of ``_kmsbeam.json`` at ``location``, on any filesystem."""
    quiet_beam_logging()
    from kmsbeam.pipelines import paths
    from kmsbeam.pipelines.manifest import manifest_kind

    return manifest_kind(paths.normalize(location, "the input")) == "export"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (the console script exits with it)."""
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(_oss_spelling(sys.argv[1:] if argv is None else argv))
        if args.command is None:
            parser.print_help(sys.stderr)
            return 2
        if args.command == "emulator":
            reject_extra(parser, extra)
            return run_emulator(args, sys.stdout)
        if args.command == "oss":
            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            return run_oss(args, sys.stdout)
        if args.command == "instance-sdk":
            reject_extra(parser, extra)
            return run_instance_sdk(args, sys.stdout)
        if args.command == "inspect":
            return run_inspect(parser, args, extra, sys.stdout)
        if args.command != "keys" and extra and not any(a.startswith("-") for a in extra):
            parser.error(f"unexpected argument {extra[0]}")
        if args.command == "keys":
            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            return run_keys(args, sys.stdout)
        if args.command == "vault":
            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            if args.vault_command != "rotate" or "://" in args.vault:  # a local rotate loads no Beam
                quiet_beam_logging()
            return run_vault(args, sys.stdout)
        if args.command == "cat":
            return cat.run_command(args, extra, context_items(args.context))
        if args.command == "decrypt" and any(a.split("=")[0].startswith("--watch") for a in extra):
            return _fail("--watch is for kmsbeam encrypt; decrypt each window it wrote "
                         "(kmsbeam decrypt OUTPUT/window-... PLAIN)", 2)  # fmt: skip
        if args.command == "export" or args.command == "decrypt" and _is_export(args.input):
            return export.run_command(args, extra, context_items(args.context))  # objects, not datasets
        quiet_beam_logging()
        if args.command == "dead-letters":
            return run_dead_letters(args, extra)
        if args.command == "rotate":
            from kmsbeam.pipelines.rotate.job import run_rotate

            return run_rotate(args, extra)
        if args.command == "encrypt" and args.watch:
            from kmsbeam.pipelines.watch import run_watch

            return run_watch(args, extra)
        return run_job(args, extra)
    except _Exit as exc:
        return exc.code
    except USAGE_ERRORS as exc:
        return _fail(str(exc), 2)
    except KmsBeamError as exc:
        return _fail(str(exc), 1)
    except KeyboardInterrupt:
        return _fail("interrupted; everything the job had written was removed", 130)


if __name__ == "__main__":
    sys.exit(main())
