"""The ``kmsbeam`` command line: argument parsing, dispatch and error handling.

::

    kmsbeam encrypt INPUT OUTPUT --fields ssn,email [--key URI] [--context k=v] [beam options]
    kmsbeam decrypt OUTPUT PLAIN                   # options come from OUTPUT/_kmsbeam.json
    kmsbeam encrypt|decrypt|export ... --kms-qps 50   # KMS calls/s per worker (kmsbeam.keys.budget)
    kmsbeam keys create|list|describe|alias|rotate|disable|enable ...
    kmsbeam encrypt events.parquet OUT --columns ssn,card --parquet-mode pme|cells [--key URI]
    kmsbeam inspect OUT/part-00000-of-00001.parquet  # how Parquet files are protected
    kmsbeam emulator serve --port 9800 --data DIR --access-key-file FILE  # AK:SECRET[:POLICY]
    kmsbeam rotate OUTPUT ROTATED [--to-key URI] [--reencrypt] [--dry-run] [--verify] [--only-key URI]

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
import os
import re
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import kmsbeam
from kmsbeam import ConfigurationError, FormatError, KeyNotFoundError, KmsBeamError
from kmsbeam.pipelines import cat, dead_letters, export
from kmsbeam.pipelines._noise import WorkerNoise, quiet_beam_logging, workers_share_stderr
from kmsbeam.pipelines.dead_letters_cmd import add_dead_letters_parser, run_dead_letters
from kmsbeam.pipelines.emulator_cmd import add_emulator_parser, reject_extra, run_emulator
from kmsbeam.pipelines.inspect import add_inspect_parser, run_inspect
from kmsbeam.pipelines.keys import add_keys_parser, run_keys
from kmsbeam.pipelines.options import (
    add_kms_budget_arguments,
    add_require_key_argument,
    names,
    positive_int,
    positive_number,
)
from kmsbeam.pipelines.oss_cmd import add_oss_parser, run_oss
from kmsbeam.pipelines.rotate.cmd import add_rotate_parser

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


def _context(items: list[str] | None) -> dict[str, str] | None:
    if items is None:
        return None
    context: dict[str, str] = {}
    for item in items:
        name, eq, value = item.partition("=")
        if not eq or not name:
            raise ConfigurationError(f"--context takes NAME=VALUE, not {item.split('=')[0]!r}...")
        context[name] = value
    return context


def _job_parser(sub: Any, name: str, text: str) -> None:
    job = sub.add_parser(name, help=text, description=text, allow_abbrev=False,
                         epilog="Other options are passed to Beam's PipelineOptions, e.g. "
                         "--direct_running_mode multi_processing --direct_num_workers 2.")  # fmt: skip
    h = _DECRYPT_HELP if name == "decrypt" else _ENCRYPT_HELP
    job.add_argument("input", metavar="INPUT", help=h["input"])
    job.add_argument("output", metavar="OUTPUT", help=h["output"])
    job.add_argument("--format", choices=("jsonl", "csv", "parquet"), help=h["format"])
    job.add_argument("--fields", type=names, help=h["fields"])
    job.add_argument("--mode", choices=("fields", "record"), help=h["mode"])
    job.add_argument("--keep", type=names, help=h["keep"])
    job.add_argument("--bind", type=names, help=h["bind"])
    job.add_argument("--key", help=h["key"])
    if name == "decrypt":
        add_require_key_argument(job)
    job.add_argument("--context", action="append", metavar="NAME=VALUE", help=h["context"])
    job.add_argument("--dead-letter", metavar="DIR",
                     help="dead-letter directory (default OUTPUT/_dead_letters)")
    if name == "encrypt":
        job.add_argument("--max-records-per-key", type=positive_int, metavar="N",
                         help="generate a new data key after N records")
    job.set_defaults(max_records_per_key=None, plaintext_footer=False, external_key_material=False)
    job.add_argument("--overwrite", action="store_true",
                     help="replace kmsbeam output already in OUTPUT")
    dead_letters.add_budget_argument(job)
    job.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary table")
    job.add_argument("--progress-every", type=positive_number, metavar="SECONDS",
                     help="off a terminal, write a progress line every SECONDS (default 30)")
    add_kms_budget_arguments(job, name)
    parquet = job.add_argument_group(h["parquet"])
    parquet.add_argument("--parquet-mode", choices=("pme", "cells"), help=h["parquet-mode"])
    parquet.add_argument("--columns", type=names, help=h["columns"])
    parquet.add_argument("--column-key", action="append", metavar="COLUMN=URI", help=h["column-key"])
    parquet.add_argument("--footer-key", metavar="URI", help=h["footer-key"])
    if name == "decrypt":
        return
    parquet.add_argument("--plaintext-footer", action="store_true",
                         help="pme: a footer readable without keys (the schema, the row counts "
                         "and the plaintext columns' values; encrypted columns stay unreadable)")  # fmt: skip
    parquet.add_argument("--external-key-material", action="store_true",
                         help="pme: wrapped keys in _KEY_MATERIAL_FOR_<file>.json (rotatable)")


_ENCRYPT_HELP = {
    "input": "a file or a glob (local, or any Beam filesystem such as oss://)",
    "output": "the output directory (written: part-* shards and the _kmsbeam.json manifest)",
    "format": "input format (default: from the file extension)",
    "fields": "fields to encrypt: a,b.c (dotted paths)",
    "mode": "fields (default) or record",
    "keep": "record mode: fields kept in cleartext",
    "bind": "fields mode: record-identity fields bound into each value (its AAD)",
    "key": f"key URI (default {kmsbeam.DEFAULT_KEY_URI}, created on first use)",
    "context": "encryption context entry (repeatable); decrypting needs the same",
    "parquet": "Parquet column protection (Parquet input)",
    "parquet-mode": "pme: Parquet Modular Encryption; cells: binary kmsbeam field values",
    "columns": "columns to protect: a,b.c",
    "column-key": "pme: the key of one column (repeatable; default --key)",
    "footer-key": "pme: the footer key (default --key)",
}
_DECRYPT_HELP = {
    "input": "a directory written by kmsbeam encrypt (or an export), a file or a glob",
    "output": "the output directory (written: part-* shards of the original records)",
    "format": "the dataset's format (default: the manifest's, else from the file extension)",
    "fields": "decrypt only these of the encrypted fields: a,b.c (default: every field the "
              "manifest lists; name them when there is no manifest)",
    "mode": "how the data was encrypted: fields or record (default: the manifest's, else fields)",
    "keep": "record mode: the fields kept in cleartext (default: the manifest's)",
    "bind": "fields mode: the record-identity fields bound at encryption (default: the manifest's)",
    "key": "key URI to decrypt with (default: the manifest's key, if it is one of your "
           "configured key sources)",
    "context": "encryption context entry given at encryption (repeatable; default: the "
               "manifest's)",
    "parquet": "Parquet files without a manifest (files written elsewhere, or copied alone)",
    "parquet-mode": "how the columns were protected: pme or cells",
    "columns": "cells: the encrypted columns (default: from the files' metadata)",
    "column-key": "pme: the key of one column (repeatable; default --key)",
    "footer-key": "pme: the footer key (default --key)",
}  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kmsbeam", allow_abbrev=False, epilog=dead_letters.EXIT_CODES_HELP,
                     formatter_class=argparse.RawDescriptionHelpFormatter,
                     description="Envelope encryption of datasets with Apache Beam.")  # fmt: skip
    parser.add_argument("--version", action="version", version=f"kmsbeam {kmsbeam.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _job_parser(sub, "encrypt", "encrypt fields or whole records of JSONL, CSV or Parquet files")
    _job_parser(sub, "decrypt", "decrypt a dataset written by kmsbeam encrypt")
    add_keys_parser(sub)
    add_inspect_parser(sub)
    add_emulator_parser(sub)
    export.add_export_parser(sub)
    cat.add_cat_parser(sub)
    add_rotate_parser(sub)
    add_dead_letters_parser(sub)
    add_oss_parser(sub)
    return parser


def _fail(message: str, code: int) -> int:
    print(f"kmsbeam: error: {message}", file=sys.stderr)
    return code


def _progress(args: argparse.Namespace, plan: Any, options: Any, stream: Any = None) -> Any:
    """The job's progress reporter (``kmsbeam.pipelines.progress``), or None with ``--quiet``."""
    from apache_beam.options.pipeline_options import PortableOptions, StandardOptions
    from kmsbeam.pipelines import progress
    from kmsbeam.pipelines.runners import runner_name

    if args.quiet:
        return None
    local = progress.reports_to_launcher(runner_name(options.view_as(StandardOptions).runner),
                                         options.view_as(PortableOptions).environment_type)  # fmt: skip
    parquet = plan.manifest.mode in ("pme", "cells")
    why = "Parquet column jobs are not counted" if parquet else None
    return progress.Reporter(f"{plan.spec.action}ing {plan.spec.input}",
                             progress.estimate_totals(plan.files, plan.format),
                             progress.Channel() if local and not parquet else None,
                             stream=stream, every=args.progress_every or progress.DEFAULT_EVERY,
                             uncounted=why)  # fmt: skip


def _run_job(args: argparse.Namespace, beam_args: list[str]) -> int:
    from kmsbeam.pipelines import jobs, summary
    from kmsbeam.pipelines.plan import JobSpec, parquet_spec, plan_decrypt, plan_encrypt

    spec = JobSpec(args.command, args.input, args.output, format=args.format, fields=args.fields,
                   mode=args.mode, keep=args.keep, bind=args.bind, key=args.key,
                   context=_context(args.context), dead_letter=args.dead_letter,
                   max_records_per_key=args.max_records_per_key, overwrite=args.overwrite,
                   beam_args=beam_args, kms_qps=args.kms_qps,
                   kms_price_per_10k=summary.kms_price_per_10k(args.kms_price_per_10k),
                   require_keys=getattr(args, "require_key", None),
                   key_cache_ttl=args.key_cache_ttl, data_key_max_age=args.data_key_max_age)  # fmt: skip
    spec.parquet = parquet_spec(args)
    options, _ = jobs.pipeline_options(beam_args)  # option mistakes surface before any key is created
    from kmsbeam.pipelines.cleanup import existing, remove_created

    existed = existing(args.output, args.dead_letter)  # a failed job removes what it created
    try:
        if spec.action == "encrypt":
            plan = plan_encrypt(spec, notice=lambda line: print(line, file=sys.stderr))
        else:
            plan = plan_decrypt(spec)
    except BaseException:
        remove_created(args.output, args.dead_letter, existed)  # OUTPUT as it was before
        raise
    noise = WorkerNoise().__enter__() if workers_share_stderr(options) else None  # Beam's noise
    progress = _progress(args, plan, options, noise.stream if noise else None)
    try:
        result = jobs.run_plan(plan, on_start=progress.start if progress else None,
                               tally=progress.channel.tally() if progress and progress.channel else None,
                               existed=existed)  # fmt: skip
    except KmsBeamError:
        raise
    except Exception as exc:
        if os.environ.get("KMSBEAM_DEBUG"):
            raise
        # The message of a failure inside the pipeline may quote a record: show the type only.
        return _fail(f"the pipeline failed ({type(exc).__name__}); rerun with KMSBEAM_DEBUG=1 "
                     "to see the traceback", 1)  # fmt: skip
    finally:
        if progress:
            progress.stop()
        if noise:
            noise.__exit__()
    if not args.quiet:
        print(summary.summary_table(result))
    return summary.finish(result, args.max_dead_letters)


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
        if args.command == "inspect":
            return run_inspect(parser, args, extra, sys.stdout)
        if args.command != "keys" and extra and not any(a.startswith("-") for a in extra):
            parser.error(f"unexpected argument {extra[0]}")
        if args.command == "keys":
            if extra:
                parser.error(f"unrecognized arguments: {' '.join(extra)}")
            return run_keys(args, sys.stdout)
        if args.command == "cat":
            return cat.run_command(args, extra, _context(args.context))
        if args.command == "export" or args.command == "decrypt" and _is_export(args.input):
            return export.run_command(args, extra, _context(args.context))  # objects, not datasets
        quiet_beam_logging()
        if args.command == "dead-letters":
            return run_dead_letters(args, extra)
        if args.command == "rotate":
            from kmsbeam.pipelines.rotate.job import run_rotate

            return run_rotate(args, extra)
        return _run_job(args, extra)
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
