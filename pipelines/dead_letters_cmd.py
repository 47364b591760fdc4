"""``kmsbeam dead-letters show|replay``: read and re-run the dead letters of a job.

::

    kmsbeam dead-letters show OUT/_dead_letters                 # counts per reason
    kmsbeam dead-letters show OUT/_dead_letters --records       # unsealed records, terminal only
    kmsbeam dead-letters replay OUT/_dead_letters FIXED/        # the job's transform again

The job is read from ``DIR/_kmsbeam_dead_letters.json`` (``dead_letters.MANIFEST``): its
action and dataset manifest (key URI, context, fields, format). Its key URI is a hint resolved
against the caller's key sources (``--key``, ``KMSBEAM_KEY_SOURCES``), as decrypt does. Sealed
letters (``sealed``) are opened in memory only: ``show --records`` writes them to a terminal,
never to a file (``--allow-pipe`` to pipe them on purpose), and ``replay`` hands them to the
pipeline with ``beam.Create`` and writes only the job's normal output (and, for records that
fail again, sealed dead letters). Replay is for JSONL and CSV jobs: the dead letters hold a
record's JSON form, which loses Parquet's exact types.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any, TextIO

from kmsbeam import ConfigurationError, FormatError
from kmsbeam.keys.trust import TrustedKeySources

__all__ = ["add_dead_letters_parser", "run_dead_letters"]


def add_dead_letters_parser(sub: Any) -> None:
    text = "show or replay the dead letters of a job"
    cmd = sub.add_parser("dead-letters", help=text, description=text, allow_abbrev=False)
    inner = cmd.add_subparsers(dest="dl_command", metavar="show|replay")
    show = inner.add_parser("show", help="counts per reason (and the records with --records)")
    show.add_argument("dir", metavar="DIR", help="a dead-letter directory (OUTPUT/_dead_letters)")
    show.add_argument("--records", action="store_true",
                      help="also print each record, unsealed, to the terminal (cleartext!)")
    show.add_argument("--allow-pipe", action="store_true",
                      help="with --records: allow stdout that is not a terminal")
    show.add_argument("--key", help="the key URI to unseal with (default: the job's, if configured)")
    replay = inner.add_parser("replay", help="run the job's transform again over the records")
    replay.add_argument("dir", metavar="DIR", help="a dead-letter directory (OUTPUT/_dead_letters)")
    replay.add_argument("output", metavar="OUTPUT", help="where the replayed records are written")
    replay.add_argument("--key", help="the key URI (default: the job's, if configured)")
    replay.add_argument("--overwrite", action="store_true", help="replace kmsbeam output in OUTPUT")
    replay.add_argument("--quiet", "-q", action="store_true", help="no summary table")
    from kmsbeam.pipelines.dead_letters import add_budget_argument

    add_budget_argument(replay)


def _job(directory: str) -> dict[str, Any]:
    from kmsbeam.pipelines import paths
    from kmsbeam.pipelines.dead_letters import MANIFEST

    where = paths.join(directory, MANIFEST)
    if not paths.exists(where):
        raise ConfigurationError(f"{directory} holds no {MANIFEST}: give a dead-letter directory "
                                 "written by kmsbeam encrypt or decrypt")  # fmt: skip
    try:
        body = json.loads(paths.read_bytes(where))
        if body.get("kmsbeam_dead_letters") != 1 or not isinstance(body.get("job"), dict):
            raise ValueError
    except ValueError:
        raise FormatError(f"{where} is not a kmsbeam dead-letter manifest (version 1)") from None
    return dict(body)


def _letters(directory: str) -> list[dict[str, Any]]:
    from kmsbeam.pipelines import paths

    out: list[dict[str, Any]] = []
    for shard in paths.match(paths.join(directory, "part-*")):
        for line in paths.read_bytes(shard).decode("utf-8").splitlines():
            if line.strip():
                out.append(json.loads(line))
    return out


def _key(args: argparse.Namespace, job: dict[str, Any]) -> str:
    hint = str(job["job"]["key"])
    return str(args.key) if args.key else TrustedKeySources.configured(None).resolve(hint)


def _show(args: argparse.Namespace, out: TextIO) -> int:
    from kmsbeam.pipelines import paths
    from kmsbeam.pipelines.dead_letters import MANIFEST
    from kmsbeam.pipelines.sealed import is_sealed, unseal

    letters = _letters(args.dir)
    if not letters and not paths.exists(paths.join(args.dir, MANIFEST)):
        raise ConfigurationError(f"{args.dir} holds no dead letters (no part-* files, no {MANIFEST}): "
                                 "give a dead-letter directory written by kmsbeam")  # fmt: skip
    reasons = Counter(str(d.get("reason", "no reason given")) for d in letters)
    sealed = sum(1 for d in letters if is_sealed(d))
    if not paths.exists(paths.join(args.dir, MANIFEST)):  # e.g. rotate's: ciphertext, not sealed
        job: dict[str, Any] = {}
        print(f"kmsbeam dead letters: {args.dir} ({len(letters):,} records)", file=out)
    else:
        job = _job(args.dir)
        m = job["job"]
        print(f"kmsbeam dead letters: {args.dir} ({len(letters):,} records of {'an' if str(job['action'])[:1] in 'aeiou' else 'a'} {job['action']} "
              f"job, {m['format']}, {m['mode']} mode; {sealed:,} sealed under {m['key']})", file=out)  # fmt: skip
    width = max([len(f"{n:,}") for n in reasons.values()] or [1])
    for reason, n in reasons.most_common():
        print(f"  {n:>{width},}  {reason}", file=out)
    if not args.records:
        return 0
    if not (args.allow_pipe or out.isatty()):
        raise ConfigurationError("--records prints cleartext to a terminal only; stdout is not a "
                                 "terminal (add --allow-pipe to send it there on purpose)")  # fmt: skip
    from kmsbeam.pipelines._fns import dumps

    if sealed and not job:
        raise ConfigurationError(f"{args.dir} holds sealed dead letters but no {MANIFEST} naming their key")
    opened = unseal(letters, _key(args, job), job["job"].get("context") or {}) if sealed else letters
    for letter in opened:
        print(dumps(letter), file=out)
    return 0


def _replay(args: argparse.Namespace, beam_args: list[str]) -> int:
    from kmsbeam.pipelines import jobs, paths, summary
    from kmsbeam.pipelines.cleanup import existing
    from kmsbeam.pipelines.manifest import Manifest
    from kmsbeam.pipelines.output_dir import prepare_output
    from kmsbeam.pipelines.plan import JobSpec, Plan, dead_dir_for
    from kmsbeam.pipelines.sealed import unseal

    job = _job(args.dir)
    m = Manifest(**{k: v for k, v in job["job"].items() if k in Manifest.__dataclass_fields__})
    if m.format == "parquet" or m.mode not in ("fields", "record"):
        raise ConfigurationError("replay runs JSONL and CSV field or record jobs; the dead letters "
                                 "of a Parquet job lose its column types")  # fmt: skip
    m.key = _key(args, job)
    jobs.pipeline_options(beam_args)
    records = [d["record"] for d in unseal(_letters(args.dir), m.key, m.context)]
    spec = JobSpec(str(job["action"]), args.dir, args.output, overwrite=args.overwrite,
                   beam_args=beam_args, kms_price_per_10k=summary.kms_price_per_10k(None))  # fmt: skip
    out = paths.normalize(args.output, "the output").rstrip("/")
    plan = Plan(spec, [], args.dir, m, out, "")
    plan.dead_dir = dead_dir_for(spec, out)
    if m.format == "csv":
        plan.in_columns = list(m.columns or [])
        plan.out_columns = plan.in_columns if m.mode == "fields" or spec.action == "decrypt" \
            else [*m.keep, m.payload_field]  # fmt: skip
    existed = existing(args.output, None)
    prepare_output(out, plan.dead_dir, args.overwrite, [], keep_old=True)
    result = jobs.run_plan(plan, existed=existed, given=records)
    if not args.quiet:
        print(summary.summary_table(result))
    return summary.finish(result, args.max_dead_letters)


def run_dead_letters(args: argparse.Namespace, beam_args: list[str], out: TextIO | None = None) -> int:
    """``kmsbeam dead-letters show|replay``."""
    if args.dl_command == "show":
        if beam_args:
            raise ConfigurationError(f"unrecognized arguments: {' '.join(beam_args)}")
        return _show(args, out or sys.stdout)
    if args.dl_command == "replay":
        return _replay(args, beam_args)
    raise ConfigurationError("name what to do: kmsbeam dead-letters show DIR, or replay DIR OUTPUT")
