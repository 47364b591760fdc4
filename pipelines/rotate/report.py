"""What ``kmsbeam rotate`` reads from a fields or record dataset without changing it: the data
keys of its values (by commitment K and master key version) and the ``--dry-run`` count.
Nothing here touches key material: K and versions are public parts of each value's header."""

from __future__ import annotations

import argparse
import csv
import io
import json
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from kmsbeam.keys.strict import KeyRequirement
from kmsbeam.pipelines import paths
from kmsbeam.pipelines.manifest import Manifest
from kmsbeam.pipelines.spec import Plan
from kmsbeam.rotation.inventory import merge_rows, record_rows
from kmsbeam.rotation.paths import rewrap_path
from kmsbeam.rotation.rewrap import record_paths

__all__ = ["dry_run_rows", "inventory"]


def inventory(directory: str) -> tuple[dict[str, str], dict[str, str]]:
    """``({K-hex: version before}, {K-hex: version after})`` from the key rows the rotation
    wrote under ``directory`` (any filesystem; ``kmsbeam.rotation.inventory``)."""
    lines: list[str] = []
    for shard in paths.list_files(directory, "*.jsonl"):
        lines.extend(paths.read_text(shard).splitlines())
    return merge_rows(lines)


def dry_run_rows(plan: Plan, version: str, args: argparse.Namespace) -> list[tuple[str, str]]:
    """Count values, data keys and the calls the rotation ``plan`` would make; write nothing."""
    m = plan.manifest
    record_at, fmt = record_paths(m.mode, m.fields, m.payload_field)
    lines: list[str] = []
    for record in _local_records(plan.files, m):
        lines.extend(record_rows(record, record_at, fmt))
    heads, values = merge_rows(lines)[0], len(lines)
    only = set(args.only_version) if args.only_version else None
    refused: set[str] = set()
    if plan.require_keys:  # strict: data keys under other master keys are not moved
        allowed = KeyRequirement(plan.require_keys).allowed() | {version}
        refused = {k for k, v in heads.items() if v not in allowed}
    todo = [k for k, v in heads.items() if v != version and (only is None or v in only)
            and k not in refused]  # fmt: skip
    path = rewrap_path(args.to_key or m.key)
    rows = [("values", f"{values:,}"), ("data keys", f"{len(heads):,}"),
            *([("data keys not allowed (--require-key)", f"{len(refused):,}")] if plan.require_keys else []),
            ("data keys to move", f"{len(todo):,}"),
            *([("KMS calls: GenerateDataKey", "1 per bundle")] if args.reencrypt else
              [("rewrap path", path.summary()), (f"KMS calls: {path.calls}", f"{len(todo) * path.per_key:,}")]),
            ("KMS calls: Decrypt (unwrap)", f"{len(todo):,}")]  # fmt: skip
    return rows


def _local_records(files: list[str], m: Manifest) -> Iterator[Any]:
    """The records of the dataset, read in this process through Beam's FileSystems."""
    for name in files:
        data = paths.read_bytes(name)
        if m.format == "parquet":
            yield from pq.read_table(io.BytesIO(data)).to_pylist()
        elif m.format == "csv":
            yield from csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        else:
            yield from (json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip())

