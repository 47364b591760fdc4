"""``kmsbeam rotate`` for ``--parquet-mode cells`` datasets: rewrap every cell's data key.

Each file is read with pyarrow, every non-null cell of the protected columns goes through one
``Rewrapper`` (header replaced, the bytes after it unchanged; one rewrap per distinct data
key), and the file is written again under the same name in OUTPUT with the same schema, the
``kmsbeam.cells`` metadata's ``key`` hint set to the target, and DELTA_BYTE_ARRAY for the
cell columns. This runs in the CLI process, file by file (a Parquet file is rewritten as a
whole; the data bytes inside each cell are what stays identical).

A cell whose data key cannot be rewrapped is left as it was, counted and listed (file, row,
column, reason) in the rotation manifest, and the command exits with 1.
"""

from __future__ import annotations

import argparse
import io
import json
import time
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from kmsbeam.pipelines.rotate import fs as rotate_fs
from kmsbeam.pipelines._parquet import leaf_paths
from kmsbeam.pipelines.manifest import Manifest
from kmsbeam.pipelines.rotate.state import (
    JOURNAL_NAME,
    ROTATION_NAME,
    finished_at,
    read_rotation,
    recorded_target,
)
from kmsbeam.pipelines.rotate.verify import verify_output

import kmsbeam
from kmsbeam import KmsBeamError, failure_reason
from kmsbeam.formats.envelope import FIELD_V1, parse
from kmsbeam.formats.parquet._arrow import column_at, replace_at  # kmsbeam.formats.parquet internals: cell columns by path
from kmsbeam.rotation.rewrap import ALREADY, FILTERED, RESUMED, REWRAPPED, Rewrapper, wrapped_key_version
from kmsbeam.rotation.journal import JournalWriter, read_journal
from kmsbeam.transforms._journal_fs import journal_store

__all__ = ["rotate_cells"]

_META = b"kmsbeam.cells"


def _rewrap_table(table: pa.Table, m: Manifest, rw: Rewrapper, to_key: str, name: str,
                  failures: list[dict[str, Any]], check: Any = None) -> pa.Table:  # fmt: skip
    for column in m.fields:
        values = column_at(table, column).to_pylist()
        out: list[Any] = []
        for row, value in enumerate(values):
            if value is None:
                out.append(None)
                continue
            try:
                if check is not None:  # strict: refused before the Rewrapper counts a call
                    check(value)
                out.append(rw.rewrap_value(value, FIELD_V1))
            except KmsBeamError as exc:
                exc.field = column
                failures.append({"file": name, "row": row, "column": column,
                                 "reason": failure_reason(exc)})  # fmt: skip
                out.append(value)
        new = pa.array(out, type=column_at(table, column).type)
        table = replace_at(table, column, new)
    meta = dict(table.schema.metadata or {})
    if _META in meta:
        cells = json.loads(meta[_META])
        cells["key"] = to_key
        meta[_META] = json.dumps(cells).encode("utf-8")
    return table.replace_schema_metadata(meta)


def rotate_cells(args: argparse.Namespace, m: Manifest, table: Any) -> int:
    """Rotate a cells dataset from ``args.input`` into ``args.output``; the exit code."""
    from kmsbeam.pipelines.rotate.lock import LOCK_NAME

    src, out = str(args.input), str(args.output)  # FileSystems paths (oss:// too)
    files = rotate_fs.list_files(src, "part-*.parquet")
    from kmsbeam.pipelines.rotate.job import trusted_sources

    trusted = trusted_sources(args)
    to_key = args.to_key or trusted.resolve(m.key)  # the manifest's key is a hint only
    target = kmsbeam.open_key_source(to_key)
    recorded = recorded_target(read_rotation(src), to_key) if args.trust_manifest else None
    version = recorded or Rewrapper(target).check_target()
    journal = rotate_fs.join(out, JOURNAL_NAME)
    store = journal_store(journal)
    resuming = rotate_fs.is_dir(journal) and not rotate_fs.exists(rotate_fs.join(out, ROTATION_NAME))
    if not resuming and not args.dry_run:
        rotate_fs.delete_tree(journal)
    from kmsbeam.pipelines.rotate.job import required_keys
    from kmsbeam.keys.strict import KeyRequirement, RequiredRewrapSource

    required = required_keys(args, to_key)
    check = None
    if required:  # strict: cells under other master keys are refused (listed), no call made
        requirement = KeyRequirement(required)
        target = RequiredRewrapSource(target, requirement)
        check = lambda v: requirement.check_value(v, FIELD_V1, also=version)  # noqa: E731
    rw = Rewrapper(target, context=m.context, only_versions=args.only_version, target_version=version,
                   known=read_journal(journal, version, store),
                   on_moved=JournalWriter(journal, store).moved)  # fmt: skip
    if args.dry_run:
        heads: dict[bytes, str] = {}
        for f in files:
            t = pq.read_table(io.BytesIO(rotate_fs.read_bytes(f)))
            for column in m.fields:
                for v in column_at(t, column).to_pylist():
                    if v is not None:
                        p = parse(v, FIELD_V1)
                        heads[p.commitment] = wrapped_key_version(p.wrapped)
        todo = sum(1 for v in heads.values() if v != version)
        print(table(f"kmsbeam rotate --dry-run: {src} -> key {to_key} (version {version})",
                    [("files", f"{len(files):,}"), ("data keys", f"{len(heads):,}"),
                     ("data keys to move", f"{todo:,}"), ("KMS calls: ReEncrypt", f"{todo:,}"),
                     ("KMS calls: Decrypt", f"{todo:,}")]))  # fmt: skip
        return 0
    rotate_fs.prepare_output(out, rotate_fs.join(out, "_dead_letters"), args.overwrite or resuming,
                             files, ignore=(LOCK_NAME,))  # fmt: skip
    rotate_fs.delete_tree(rotate_fs.join(out, ROTATION_NAME))
    started = time.monotonic()
    failures: list[dict[str, Any]] = []
    records = 0
    for f in files:
        name = f.rsplit("/", 1)[-1]
        t = _rewrap_table(pq.read_table(io.BytesIO(rotate_fs.read_bytes(f))), m, rw, to_key, name,
                          failures, check)  # fmt: skip
        records += t.num_rows
        encodings = {c: "DELTA_BYTE_ARRAY" for c in m.fields}
        plain = [c for c in leaf_paths(t.schema) if c not in encodings]
        sink = io.BytesIO()
        pq.write_table(t, sink, compression="snappy", use_dictionary=plain,
                       column_encoding=encodings)  # fmt: skip
        rotate_fs.write_bytes(rotate_fs.join(out, name), sink.getvalue())
    elapsed = time.monotonic() - started
    rotated = Manifest(**{**m.__dict__, "key": to_key, "kmsbeam_version": kmsbeam.__version__})
    rotate_fs.write_text(rotate_fs.join(out, "_kmsbeam.json"), rotated.to_json())
    counts = {"records": records, "values_rewrapped": rw.counts[REWRAPPED],
              "values_skipped": rw.counts[ALREADY], "values_filtered": rw.counts[FILTERED],
              "values_resumed": rw.counts[RESUMED], "failed": len(failures),
              "kms_calls_rewrap": rw.calls}  # fmt: skip
    rotation: dict[str, Any] = {
        "kmsbeam_rotation": 1, "method": "rewrap-cells", "source_key": m.key,
        "target_key": to_key, "target_version": version, "resumed": resuming, "counts": counts,
        "required_keys": list(required),
        "failures": failures, "elapsed_seconds": round(elapsed, 3)}  # fmt: skip
    if args.verify or args.verify_sample is not None:
        rotation["verify"] = verify_output(out, m, [], args.verify_sample,
                                           trusted=trusted.with_uris(to_key))  # fmt: skip
        counts["verify_failed"] = rotation["verify"]["dead_letters"]
    rotation["finished_at"] = finished_at()
    rotate_fs.write_text(rotate_fs.join(out, ROTATION_NAME), json.dumps(rotation, indent=2) + "\n")
    rotate_fs.delete_tree(journal)
    if not args.quiet:
        print(table(f"kmsbeam rotate: {src} -> {out} (cells, key {to_key}, version {version})",
                    [(k.replace("_", " "), f"{v:,}") for k, v in counts.items()]
                    + [("elapsed", f"{elapsed:.1f} s")]))  # fmt: skip
    return 1 if failures or counts.get("verify_failed") else 0
