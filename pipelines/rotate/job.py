"""``kmsbeam rotate``: move a dataset or an export to a new master key, for every format.

::

    kmsbeam rotate out/enc/ out/enc-rotated/ --to-key kms-emulator://127.0.0.1:9800/alias/pii
    kmsbeam rotate out/enc/ out/enc-new/ --reencrypt    # new data keys, data re-encrypted
    kmsbeam rotate out/enc/ out/x/ --to-key URI --dry-run   # count data keys and calls only
    kmsbeam rotate events-pme/ --in-place     # PME, external key material: key files only
    kmsbeam rotate oss://bucket/export/ --in-place   # OSS export: object metadata only

The job picks the format's rotator (``kmsbeam.pipelines.rotate.rotator``): ``records``
(fields and record datasets, a Beam job), ``cells``, ``pme`` (key material in place, or
rewritten into OUTPUT) and ``objects`` (OSS exports). Then, alike for all of them: one rotation
per target (``lock``), progress, the KMS call budget, ``--dry-run`` (count, change nothing),
the rotation, ``--verify``/``--verify-sample`` (read the result back), the rotation manifest
``_kmsbeam_rotation.json`` written last (``state``; docs/FORMAT.md) and the summary table.

Data keys are named by their commitment K (public: it is in every value header), never by
key material. ``--trust-manifest`` takes the target's version from the input's rotation
manifest (no ``DescribeKey``; see ``state``). ``--only-key URI`` keeps data keys under any
version of that source key.
"""

from __future__ import annotations

import argparse
import json
import sys

import kmsbeam
from kmsbeam import ConfigurationError
from kmsbeam.keys.budget import install_kms_budget, uninstall_kms_budget
from kmsbeam.pipelines import paths
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest
from kmsbeam.pipelines.progress import elapsed_progress
from kmsbeam.pipelines.rotate.cells import CellsRotator
from kmsbeam.pipelines.rotate.lock import rotation_lock
from kmsbeam.pipelines.rotate.objects import ExportRotator
from kmsbeam.pipelines.rotate.pme import PmeKeyMaterialRotator, PmeRewriteRotator
from kmsbeam.pipelines.rotate.records import RecordsRotator
from kmsbeam.pipelines.rotate.rotator import Rotator
from kmsbeam.pipelines.rotate.state import finished_at
from kmsbeam.pipelines.summary import table

__all__ = ["run_rotate"]


def run_rotate(args: argparse.Namespace, beam_args: list[str]) -> int:
    """The ``rotate`` command; returns the exit code. One rotation per target (``lock``)."""
    qps = getattr(args, "kms_qps", None)
    if not any(a.split("=")[0] == "--beam_plugins" for a in beam_args):  # oss:// in every worker
        beam_args = [*beam_args, "--beam_plugins=kmsbeam.transforms"]
    paths.use_options(beam_args)  # the launcher's filesystems see --oss_endpoint ...
    # every path as the workers must see it: local ones absolute, unknown schemes refused
    args.input = paths.absolute(args.input)
    args.output = None if args.output is None else paths.absolute(args.output)
    what = f"rotating {args.input}"
    why = "a rotation counts its values at the end"
    with rotation_lock(args), elapsed_progress(what, args.quiet or args.dry_run,
                                               getattr(args, "progress_every", None), why):  # fmt: skip
        if qps is not None:
            install_kms_budget(qps)  # this process's own calls (describe, in-process rotations)
        try:
            return execute(rotator_for(args, beam_args), args)
        finally:
            if qps is not None:
                uninstall_kms_budget(qps)


def execute(rotator: Rotator, args: argparse.Namespace) -> int:
    """Dry run, or rotate, verify, write the rotation manifest and summarise; the exit code."""
    if args.dry_run:
        outcome = rotator.dry_run()
        print(table(outcome.title, outcome.rows))
    else:
        outcome = rotator.rotate()
        verified = None
        if args.verify or args.verify_sample is not None:
            verified = rotator.verify(args.verify_sample)
            outcome.rotation["verify"] = verified.report
            outcome.rows += verified.rows
        outcome.rotation["finished_at"] = finished_at()
        rotator.write_rotation(json.dumps(outcome.rotation, indent=2) + "\n")
        if not args.quiet:
            print(table(outcome.title, outcome.rows))
        if verified is not None and verified.failed:
            return 1
    if outcome.warning:
        print(f"kmsbeam: warning: {outcome.warning}", file=sys.stderr)
    return 1 if outcome.failed else outcome.exit_code()


def _manifest_text(src: str) -> str | None:
    """The text of ``src/_kmsbeam.json`` on any filesystem, or None."""
    path = paths.join(src, MANIFEST_NAME)
    try:
        return paths.read_text(path) if paths.exists(path) else None
    except Exception as exc:  # Beam wraps IO errors
        raise ConfigurationError(f"cannot read {path} ({type(exc).__name__})") from None


def _dataset_manifest(src: str, text: str | None) -> Manifest:
    """The dataset manifest of ``src`` (a local directory or any FileSystems prefix)."""
    if text is None:
        raise ConfigurationError(f"{src} is not a directory written by kmsbeam encrypt (no "
                                 f"{MANIFEST_NAME}); rotate the output directory of an encrypt")  # fmt: skip
    if '"kmsbeam_export"' in text:
        raise ConfigurationError(f"{src} holds a kmsbeam export, not a dataset: rotate it with "
                                 "--in-place (object metadata only)")  # fmt: skip
    return Manifest.from_json(text, paths.join(src, MANIFEST_NAME))


def rotator_for(args: argparse.Namespace, beam_args: list[str]) -> Rotator:
    """The rotator of what ``args.input`` holds, after the checks that apply to every format."""
    if args.only_key:  # filters by source key become filters by every version of it
        if args.reencrypt:
            raise ConfigurationError("--only-key filters a rewrap; --reencrypt re-encrypts everything")
        versions = list(args.only_version or [])
        for uri in args.only_key:
            versions.extend(kmsbeam.open_key_source(uri, create=False).key_versions())
        args.only_version = versions
    if args.only_version and args.reencrypt:
        raise ConfigurationError("--only-version filters a rewrap; --reencrypt re-encrypts everything")
    # an oss:// export rotates in place (its rotator reads its manifest); otherwise one read
    # tells an export manifest from a dataset's, wherever it lives
    oss_in_place = args.in_place and args.input.startswith("oss://")
    text = None if oss_in_place else _manifest_text(args.input)
    export = oss_in_place or text is not None and '"kmsbeam_export"' in text
    if getattr(args, "require_key", None) and (args.in_place or export):
        raise ConfigurationError("--require-key applies to field, record and cells datasets "
                                 "rotated into an OUTPUT directory")  # fmt: skip
    if args.in_place:
        if args.output is not None:
            raise ConfigurationError("--in-place rewrites INPUT; give no OUTPUT")
        if export and args.input.startswith("oss://"):
            return ExportRotator(args)
        if export:
            raise ConfigurationError("only exports on oss:// rotate in place (their wrapped keys "
                                     "are object metadata); export this one again under the new key")  # fmt: skip
        if paths.is_remote(args.input):
            raise ConfigurationError("--in-place rotates a local PME dataset or an oss:// export; "
                                     "rotate other datasets into an OUTPUT directory")  # fmt: skip
        return PmeKeyMaterialRotator(args, _dataset_manifest(args.input, text))
    if export:
        raise ConfigurationError("an export is rotated in place, not into an OUTPUT: pass "
                                 "--in-place (oss:// exports; object metadata only)")  # fmt: skip
    m = _dataset_manifest(args.input, text)
    if m.mode == "pme" and (paths.is_remote(args.input) or paths.is_remote(args.output or "")):
        raise ConfigurationError("PME datasets are rotated on local disk for now; copy the "
                                 "dataset to a local directory, rotate it, and copy it back")  # fmt: skip
    if m.mode == "cells" and (args.output is None or args.reencrypt):
        raise ConfigurationError("a --parquet-mode cells dataset is rotated into an OUTPUT "
                                 "directory by rewrap (no --reencrypt yet)")  # fmt: skip
    if args.output is None:
        raise ConfigurationError("name the OUTPUT directory (or --in-place for PME datasets "
                                 "with external key material)")  # fmt: skip
    if m.mode == "pme":
        if getattr(args, "require_key", None):
            raise ConfigurationError("--require-key applies to field, record and cells datasets; "
                                     "a PME dataset opens only with the keys it names")  # fmt: skip
        return PmeRewriteRotator(args, m)
    if m.mode == "cells":
        return CellsRotator(args, m)
    return RecordsRotator(args, m, beam_args)
