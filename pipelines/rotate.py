"""``kmsbeam rotate``: move a dataset written by ``kmsbeam encrypt`` to a new master key.

::

    kmsbeam rotate out/enc/ out/enc-rotated/ --to-key kms-emulator://127.0.0.1:9800/alias/pii
    kmsbeam rotate out/enc/ out/enc-new/ --reencrypt    # new data keys, data re-encrypted
    kmsbeam rotate out/enc/ out/x/ --to-key URI --dry-run   # count data keys and calls only
    kmsbeam rotate events-pme/ --in-place     # PME, external key material: key files only
    kmsbeam rotate oss://bucket/export/ --in-place   # OSS export: object metadata only

By default each value's wrapped data key is rewrapped (``RewrapDataKeys``): the bytes after
each value's header are copied unchanged and the key source is called once per distinct
data key (plus one unwrap to check it). Values already under the target's current key
version are copied as they are, so running it again on its own output makes no data-key
call. ``--reencrypt`` decrypts and encrypts again with new data keys.

OUTPUT gets the data, ``_kmsbeam.json`` (the input's manifest with ``key`` = the target) and
``_kmsbeam_rotation.json``, the rotation manifest::

    {"kmsbeam_rotation": 1, "method": "rewrap", "source_key": URI, "target_key": URI,
     "target_version": V, "source_versions": {V: data keys}, "data_keys_moved": N,
     "data_keys": [{"commitment": K-hex, "from": V, "to": V2}, ...],
     "counts": {"records": .., "values_rewrapped": .., "values_skipped": .., ...}}

Data keys are named by their commitment K (public: it is in every value header), never by
key material. Supported inputs: datasets in ``fields`` and ``record`` mode (JSONL, CSV,
Parquet). A crashed run is resumed by running it again with ``--overwrite``: values already
rewrapped by the crashed run are not in the input, so the work is redone (the output only
appears complete once ``_kmsbeam_rotation.json`` is written).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
from kmsbeam.pipelines import _fns, formats, jobs
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest
from kmsbeam.pipelines.plan import JobSpec, Plan, dead_dir_for, prepare_output
from kmsbeam.transforms import ReencryptFields, ReencryptRecords, RewrapDataKeys

import kmsbeam
from kmsbeam import ConfigurationError, parse_key_uri
from kmsbeam.envelope import parse
from kmsbeam.rotation import Rewrapper, record_paths, wrapped_key_version

__all__ = ["ROTATION_NAME", "run_rotate"]

ROTATION_NAME = "_kmsbeam_rotation.json"
_KINDS = {"local": 1, "kms-emulator": 2, "alibaba-kms": 2, "pkcs11": 3}
_TMP = "_rotation_keys"


def _manifest(src: Path) -> Manifest:
    manifest = Manifest.read(src) if src.is_dir() else None
    if manifest is None:
        raise ConfigurationError(f"{src} is not a directory written by kmsbeam encrypt (no "
                                 f"{MANIFEST_NAME}); rotate the output directory of an encrypt")  # fmt: skip
    return manifest


def _plan(args: argparse.Namespace, beam_args: list[str]) -> tuple[Plan, Manifest, str]:
    src = Path(args.input)
    manifest = _manifest(src)
    if args.output is None:
        raise ConfigurationError("name the OUTPUT directory (or --in-place for PME datasets "
                                 "with external key material)")  # fmt: skip
    if manifest.mode == "pme":
        raise ConfigurationError("a PME dataset is rotated with --in-place (external key "
                                 "material: the key files are rewritten, the data is not)")  # fmt: skip
    if manifest.mode not in ("fields", "record"):
        raise ConfigurationError(f"rotating --parquet-mode {manifest.mode} datasets is not "
                                 "supported yet; use --mode fields or record datasets")  # fmt: skip
    files = sorted(str(p) for p in src.glob("part-*"))
    if not files:
        raise ConfigurationError(f"{src} has no part-* data files")
    to_key = args.to_key or manifest.key
    parse_key_uri(to_key)
    old, new = _KINDS[parse_key_uri(manifest.key).scheme], _KINDS[parse_key_uri(to_key).scheme]
    if old != new and not args.reencrypt:
        raise ConfigurationError(f"{to_key} is another kind of key source than {manifest.key}: "
                                 "data keys cannot be rewrapped across kinds; use --reencrypt")  # fmt: skip
    spec = JobSpec("rotate", args.input, args.output, overwrite=args.overwrite, beam_args=beam_args)
    plan = Plan(spec, files, str(src / "part-*"), manifest, Path(args.output), Path())
    if manifest.format == "csv":
        plan.in_columns = formats.csv_header(files)
        plan.out_columns = list(plan.in_columns)
    elif manifest.format == "parquet":
        schema = manifest.schema()
        assert schema is not None
        plan.out_schema = (formats.encrypted_schema(schema, manifest.fields) if manifest.mode == "fields"
                           else formats.record_schema(schema, manifest.keep, manifest.payload_field))  # fmt: skip
    plan.dead_dir = dead_dir_for(spec, plan.out_dir)
    return plan, manifest, to_key


def _key_rows(record: Any, paths: Any, fmt: int) -> list[str]:
    """``{"k": K-hex, "v": version}`` lines for the values of one record (inventory)."""
    out = []
    for path in paths:
        try:
            value = path.get(record)
            if value is None:
                continue
            k, v = _head(value, fmt)
            out.append(json.dumps({"k": k, "v": v}, sort_keys=True))
        except kmsbeam.KmsBeamError:
            continue
    return out


def _head(value: Any, fmt: int) -> tuple[str, str]:
    parsed = parse(value, fmt)
    return parsed.commitment.hex(), wrapped_key_version(parsed.wrapped)


def _build(p: beam.Pipeline, plan: Plan, m: Manifest, to_key: str, args: argparse.Namespace) -> None:
    paths, fmt = record_paths(m.mode, m.fields, m.payload_field)
    records, parse_dead = formats.read_records(p, m.format, plan.pattern, plan.in_columns)
    nested = [f for f in m.fields + m.bind if "." in f] if m.mode == "fields" else []
    if m.format == "parquet" and nested:
        records = records | "FillNullStructs" >> beam.Map(_fns.fill_null_parents, nested)
    if args.reencrypt:
        step: Any = (ReencryptFields(m.fields, m.key, to_key, context=m.context, bind=m.bind,
                                     encoding=m.encoding) if m.mode == "fields" else
                     ReencryptRecords(m.key, to_key, keep=m.keep, payload_field=m.payload_field,
                                      context=m.context, encoding=m.encoding))  # fmt: skip
    else:
        step = RewrapDataKeys(m.fields, to_key, mode=m.mode, context=m.context,
                              payload_field=m.payload_field, only_versions=args.only_version,
                              check_target=False)  # fmt: skip
    good, dead = records | "Rotate" >> step.with_dead_letters()
    tmp = str((plan.out_dir / _TMP).absolute())
    for name, pcoll in (("in", records), ("out", good)):
        (pcoll | f"Keys_{name}" >> beam.FlatMap(_key_rows, paths, fmt)
         | f"Distinct_{name}" >> beam.Distinct()
         | f"WriteKeys_{name}" >> beam.io.WriteToText(f"{tmp}/{name}", file_name_suffix=".jsonl"))  # fmt: skip
    if m.format == "parquet" and nested:
        good = good | "RestoreNullStructs" >> beam.Map(_fns.restore_null_parents)
        dead = dead | "RestoreNullStructsDead" >> beam.Map(_fns.restore_null_parents)
    encrypted = list(m.fields) if m.mode == "fields" else [m.payload_field]
    format_dead = formats.write_records(good, m.format, str(plan.out_dir.absolute() / "part"),
                                        columns=plan.out_columns, schema=plan.out_schema,
                                        encrypted=encrypted)  # fmt: skip
    letters = [d for d in (parse_dead, dead, format_dead) if d is not None]
    formats.write_dead_letters(letters, str(plan.dead_dir.absolute() / "part"))


def _inventory(directory: Path, name: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    for shard in sorted(directory.glob(f"{name}-*")):
        for line in shard.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            keys[row["k"]] = row["v"]
    return keys


def _dry_run(plan: Plan, m: Manifest, to_key: str, version: str, args: argparse.Namespace) -> int:
    """Count values, data keys and the calls a rotation would make; write nothing."""
    paths, fmt = record_paths(m.mode, m.fields, m.payload_field)
    heads: dict[str, str] = {}
    values = 0
    for record in _local_records(plan, m):
        for line in _key_rows(record, paths, fmt):
            row = json.loads(line)
            heads[row["k"]] = row["v"]
            values += 1
    only = set(args.only_version) if args.only_version else None
    todo = [k for k, v in heads.items() if v != version and (only is None or v in only)]
    rows = [("values", f"{values:,}"), ("data keys", f"{len(heads):,}"),
            ("data keys to move", f"{len(todo):,}"),
            ("KMS calls: " + ("GenerateDataKey" if args.reencrypt else "ReEncrypt"),
             f"{len(todo):,}" if not args.reencrypt else "1 per bundle"),
            ("KMS calls: Decrypt", f"{len(todo):,}")]  # fmt: skip
    print(_table(f"kmsbeam rotate --dry-run: {plan.spec.input} -> key {to_key} (version {version})", rows))
    return 0


def _local_records(plan: Plan, m: Manifest) -> Any:
    import csv

    import pyarrow.parquet as pq

    for name in plan.files:
        if m.format == "parquet":
            yield from pq.read_table(name).to_pylist()
        elif m.format == "csv":
            with open(name, newline="", encoding="utf-8") as f:
                yield from csv.DictReader(f)
        else:
            with open(name, encoding="utf-8") as f:
                yield from (json.loads(line) for line in f if line.strip())


def _table(title: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(n) for n, _ in rows)
    return "\n".join([title] + [f"  {n:<{width}}  {v}" for n, v in rows])


def _verify(out_dir: Path, beam_args: list[str]) -> tuple[int, int]:
    """Decrypt all of OUTPUT into a scratch directory: (records decrypted, dead letters)."""
    from kmsbeam.pipelines.plan import plan_decrypt

    scratch = Path(tempfile.mkdtemp(prefix="kmsbeam-verify-"))
    try:
        spec = JobSpec("decrypt", str(out_dir), str(scratch / "plain"), beam_args=beam_args)
        result = jobs.run_plan(plan_decrypt(spec))
        return result.records_out, result.dead_letters
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def run_rotate(args: argparse.Namespace, beam_args: list[str]) -> int:
    """The ``rotate`` command; returns the exit code."""
    if args.in_place:
        if args.output is not None:
            raise ConfigurationError("--in-place rewrites INPUT; give no OUTPUT")
        if args.input.startswith("oss://"):
            from kmsbeam.pipelines.rotate_oss import rotate_export_in_place

            return rotate_export_in_place(args, _table)
        from kmsbeam.pipelines.rotate_pme import rotate_pme_in_place

        return rotate_pme_in_place(args, _manifest, _table)
    if args.input.startswith("oss://"):
        raise ConfigurationError("an OSS export is rotated with --in-place (object metadata only)")
    first = _manifest(Path(args.input))
    if first.mode == "cells":
        if args.output is None or args.reencrypt or args.verify:
            raise ConfigurationError("a --parquet-mode cells dataset is rotated into an OUTPUT "
                                     "directory by rewrap (no --reencrypt or --verify yet)")  # fmt: skip
        from kmsbeam.pipelines.rotate_cells import rotate_cells

        return rotate_cells(args, first, _table)
    plan, m, to_key = _plan(args, beam_args)
    jobs.pipeline_options(beam_args)
    target = kmsbeam.open_key_source(to_key, create=False)
    version = Rewrapper(target).check_target()  # a disabled or unknown key stops us here
    if args.dry_run:
        return _dry_run(plan, m, to_key, version, args)
    prepare_output(plan.out_dir, plan.dead_dir, args.overwrite, plan.files)
    for stale in (plan.out_dir / ROTATION_NAME, plan.out_dir / _TMP):
        if stale.is_dir():
            shutil.rmtree(stale)
        elif stale.exists():
            stale.unlink()
    options, runner = jobs.pipeline_options(beam_args)
    started = time.monotonic()
    p = beam.Pipeline(runner=runner, options=options)
    _build(p, plan, m, to_key, args)
    try:
        result = p.run()
        result.wait_until_finish()
    except kmsbeam.KmsBeamError:
        raise
    except Exception as exc:
        if os.environ.get("KMSBEAM_DEBUG"):
            raise
        print(f"kmsbeam: error: the pipeline failed ({type(exc).__name__}); rerun with "
              "KMSBEAM_DEBUG=1 to see the traceback", file=sys.stderr)  # fmt: skip
        return 1
    elapsed = time.monotonic() - started
    counters = jobs.counters_of(result)
    c = lambda name, ns="kmsbeam": counters.get(f"{ns}/{name}", 0)  # noqa: E731
    before, after = _inventory(plan.out_dir / _TMP, "in"), _inventory(plan.out_dir / _TMP, "out")
    shutil.rmtree(plan.out_dir / _TMP, ignore_errors=True)
    if plan.dead_dir.is_dir() and not any(plan.dead_dir.iterdir()):
        plan.dead_dir.rmdir()
    moved = [{"commitment": k, "from": v, "to": after[k]} for k, v in sorted(before.items())
             if k in after and after[k] != v]  # fmt: skip
    sources: dict[str, int] = {}
    for v in before.values():
        sources[v] = sources.get(v, 0) + 1
    counts = {"records": c("records_read", "kmsbeam.pipelines"),
              "records_written": c("records_written", "kmsbeam.pipelines"),
              "values_rewrapped": c("values_rewrapped"), "values_skipped": c("values_skipped"),
              "values_filtered": c("values_filtered"), "values_reencrypted": c("values_encrypted"),
              "dead_letters": c("dead_letters_written", "kmsbeam.pipelines"),
              "kms_calls_rewrap": c("kms_calls_rewrap"), "kms_calls_decrypt": c("kms_calls_decrypt"),
              "kms_calls_generate_data_key": c("kms_calls_generate_data_key")}  # fmt: skip
    new_manifest = Manifest(**{**m.__dict__, "key": to_key, "kmsbeam_version": kmsbeam.__version__})
    new_manifest.write(plan.out_dir)
    rotation = {"kmsbeam_rotation": 1, "method": "reencrypt" if args.reencrypt else "rewrap",
                "source_key": m.key, "target_key": to_key, "target_version": version,
                "source_versions": sources, "data_keys_moved": len(moved),
                "data_keys_new": len(set(after) - set(before)), "data_keys": moved,
                "counts": counts, "elapsed_seconds": round(elapsed, 3)}  # fmt: skip
    verified = None
    if args.verify:
        verified = _verify(plan.out_dir, beam_args)
        rotation["verify"] = {"records_decrypted": verified[0], "dead_letters": verified[1]}
    (plan.out_dir / ROTATION_NAME).write_text(json.dumps(rotation, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        rows = [("records", f"{counts['records']:,}"),
                ("values rewrapped", f"{counts['values_rewrapped']:,}"),
                ("values already rotated", f"{counts['values_skipped']:,}"),
                ("values re-encrypted", f"{counts['values_reencrypted']:,}"),
                ("data keys moved", f"{len(moved):,}"),
                ("KMS calls: ReEncrypt", f"{counts['kms_calls_rewrap']:,}"),
                ("KMS calls: Decrypt", f"{counts['kms_calls_decrypt']:,}"),
                ("KMS calls: GenerateDataKey", f"{counts['kms_calls_generate_data_key']:,}"),
                ("dead letters", f"{counts['dead_letters']:,}"),
                ("elapsed", f"{elapsed:.1f} s")]  # fmt: skip
        if verified is not None:
            rows.append(("verified (decrypted)", f"{verified[0]:,} records, {verified[1]:,} failed"))
        print(_table(f"kmsbeam rotate: {plan.spec.input} -> {plan.out_dir} (key {to_key}, "
                     f"version {version})", rows))  # fmt: skip
    if counts["dead_letters"]:
        print(f"kmsbeam: warning: {counts['dead_letters']:,} records went to the dead letters in "
              f"{plan.dead_dir} (each line has the reason)", file=sys.stderr)  # fmt: skip
    if verified is not None and verified[1]:
        return 1
    return 0
