"""The ``encrypt`` and ``decrypt`` commands for datasets: their arguments, and their run (plan,
progress, the Beam job, the summary and the exit code). Exports are ``kmsbeam.pipelines.export``.

No Beam import at module level: the CLI builds its parser before Beam loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import kmsbeam
from kmsbeam import ConfigurationError, KmsBeamError
from kmsbeam.pipelines import dead_letters
from kmsbeam.pipelines._noise import WorkerNoise, workers_share_stderr
from kmsbeam.pipelines.options import (
    add_kms_budget_arguments,
    add_require_key_argument,
    context_items,
    names,
    positive_int,
    positive_number,
)

__all__ = ["add_job_parsers", "job_spec", "plan_job", "run_job", "run_planned"]


def add_job_parsers(sub: Any) -> None:
    _job_parser(sub, "encrypt", "encrypt fields or whole records of JSONL, CSV or Parquet files")
    _job_parser(sub, "decrypt", "decrypt a dataset written by kmsbeam encrypt")


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
    job.add_argument("--key-vault", metavar="PREFIX", help=h["key-vault"])
    job.add_argument("--dead-letter", metavar="DIR",
                     help="dead-letter directory (default OUTPUT/_dead_letters)")
    if name == "encrypt":
        job.add_argument("--max-records-per-key", type=positive_int, metavar="N",
                         help="generate a new data key after N records")
        job.add_argument("--data-keys-across-bundles", dest="across_bundles",
                         action=argparse.BooleanOptionalAction,
                         help="keep a data key for a worker process's next bundles, within "
                         "--max-records-per-key and --data-key-max-age (default: one per bundle; "
                         "with --watch, kept across bundles and windows)")  # fmt: skip
    job.set_defaults(max_records_per_key=None, across_bundles=None, plaintext_footer=False, external_key_material=False)
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
    _watch_arguments(job)


def _watch_arguments(job: Any) -> None:
    watch = job.add_argument_group("watching a landing prefix (INPUT a directory or prefix)")
    watch.add_argument("--watch", action="store_true",
                       help="keep encrypting the files that land in INPUT into windows, datasets "
                       "OUTPUT/window-<UTC time>-<N>/ that kmsbeam decrypt reads; the files done "
                       "are listed in OUTPUT/_kmsbeam_watch.json (a restart skips them)")  # fmt: skip
    watch.add_argument("--watch-interval", type=positive_number, metavar="SECONDS",
                       help="seconds between two listings of INPUT (default 10); a file is taken "
                       "once two listings in a row saw the same size")  # fmt: skip
    watch.add_argument("--watch-stop-after", type=positive_number, metavar="SECONDS",
                       help="stop polling after SECONDS (the window in flight finishes)")
    watch.add_argument("--watch-max-windows", type=positive_int, metavar="N",
                       help="stop after N windows")


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
    "key-vault": "keep the wrapped data keys in this key vault (a directory or prefix such as "
                 "oss://bucket/_keys/, shared by datasets) and write values that name them: 3x "
                 "smaller, rotated by kmsbeam vault rotate without touching the data. Back it "
                 "up: losing it loses the data",
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
    "key-vault": "the key vault of the dataset's data keys (default: the manifest's)",
    "parquet": "Parquet files without a manifest (files written elsewhere, or copied alone)",
    "parquet-mode": "how the columns were protected: pme or cells",
    "columns": "cells: the encrypted columns (default: from the files' metadata)",
    "column-key": "pme: the key of one column (repeatable; default --key)",
    "footer-key": "pme: the footer key (default --key)",
}  # fmt: skip


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


def job_spec(args: argparse.Namespace, beam_args: list[str], input: str | None = None,
             output: str | None = None, dead_letter: str | None = None, *,
             files: list[str] | None = None) -> Any:  # fmt: skip
    """The ``JobSpec`` of parsed ``encrypt``/``decrypt`` arguments (``input``, ``output`` and
    ``dead_letter`` in place of the arguments', and the input ``files`` themselves: a watch's
    windows)."""
    from kmsbeam.pipelines import summary
    from kmsbeam.pipelines.plan import JobSpec, parquet_spec

    spec = JobSpec(args.command, input or args.input, output or args.output, format=args.format,
                   fields=args.fields, mode=args.mode, keep=args.keep, bind=args.bind, key=args.key,
                   context=context_items(args.context), dead_letter=dead_letter or args.dead_letter,
                   max_records_per_key=args.max_records_per_key, overwrite=args.overwrite,
                   beam_args=list(beam_args), kms_qps=args.kms_qps,
                   kms_price_per_10k=summary.kms_price_per_10k(args.kms_price_per_10k),
                   require_keys=getattr(args, "require_key", None),
                   key_cache_ttl=args.key_cache_ttl, data_key_max_age=args.data_key_max_age,
                   key_vault=args.key_vault, files=files, across_bundles=args.across_bundles)  # fmt: skip
    spec.parquet = parquet_spec(args)
    return spec


def plan_job(spec: Any, existed: tuple[bool, bool]) -> Any:
    """The checked plan of ``spec``; a plan that fails removes the empty OUTPUT it created."""
    from kmsbeam.pipelines.cleanup import remove_created
    from kmsbeam.pipelines.plan import plan_decrypt, plan_encrypt

    output, dead_letter = spec.output, spec.dead_letter
    try:
        if spec.action == "encrypt":
            return plan_encrypt(spec, notice=lambda line: print(line, file=sys.stderr))
        return plan_decrypt(spec)
    except BaseException:
        remove_created(output, dead_letter, existed)  # OUTPUT as it was before
        raise


def run_planned(args: argparse.Namespace, plan: Any, options: Any, existed: tuple[bool, bool]) -> Any:
    """Run a checked plan with the progress line (``jobs.run_plan``): its ``JobResult``, or None
    when the pipeline failed for a reason that is no kmsbeam error (one line printed: exit 1)."""
    from kmsbeam.pipelines import jobs

    noise = WorkerNoise().__enter__() if workers_share_stderr(options) else None  # Beam's noise
    progress = _progress(args, plan, options, noise.stream if noise else None)
    try:
        return jobs.run_plan(plan, on_start=progress.start if progress else None,
                             tally=progress.channel.tally() if progress and progress.channel else None,
                             existed=existed)  # fmt: skip
    except KmsBeamError:
        raise
    except Exception as exc:
        if os.environ.get("KMSBEAM_DEBUG"):
            raise
        # The message of a failure inside the pipeline may quote a record: show the type only.
        print(f"kmsbeam: error: the pipeline failed ({type(exc).__name__}); rerun with "
              "KMSBEAM_DEBUG=1 to see the traceback", file=sys.stderr)  # fmt: skip
        return None
    finally:
        if progress:
            progress.stop()
        if noise:
            noise.__exit__()


def run_job(args: argparse.Namespace, beam_args: list[str]) -> int:
    from kmsbeam.pipelines import jobs, summary
    from kmsbeam.pipelines.cleanup import existing

    given = [o for o in ("interval", "stop_after", "max_windows") if getattr(args, f"watch_{o}", None)]
    if given:
        raise ConfigurationError(f"--watch-{given[0].replace('_', '-')} is an option of --watch")
    spec = job_spec(args, beam_args)
    options, _ = jobs.pipeline_options(beam_args)  # option mistakes surface before any key is created
    existed = existing(args.output, args.dead_letter)  # a failed job removes what it created
    plan = plan_job(spec, existed)
    result = run_planned(args, plan, options, existed)
    if result is None:
        return 1
    if not args.quiet:
        print(summary.summary_table(result))
    return summary.finish(result, args.max_dead_letters)
