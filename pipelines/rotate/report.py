"""What ``kmsbeam rotate`` reads from a dataset without changing it: the data keys of its values
(by commitment K and master key version), the ``--dry-run`` count, and the summary table.
Nothing here touches key material: K and versions are public parts of each value's header."""

from __future__ import annotations

import argparse
import io
import json
from typing import Any

from kmsbeam.pipelines.rotate import fs as rotate_fs
from kmsbeam.pipelines.manifest import Manifest
from kmsbeam.pipelines.rotate.state import RotationPlan

import kmsbeam
from kmsbeam.formats.envelope import parse
from kmsbeam.rotation.rewrap import record_paths, wrapped_key_version

__all__ = ["dry_run", "inventory", "key_rows", "table"]


def key_rows(record: Any, paths: Any, fmt: int) -> list[str]:
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


def inventory(directory: str, name: str) -> dict[str, str]:
    """``{K-hex: version}`` from the ``name-*`` shards in ``directory`` (any filesystem)."""
    keys: dict[str, str] = {}
    for shard in rotate_fs.list_files(directory, f"{name}-*"):
        for line in rotate_fs.read_text(shard).splitlines():
            row = json.loads(line)
            keys[row["k"]] = row["v"]
    return keys


def dry_run(plan: RotationPlan, m: Manifest, to_key: str, version: str, args: argparse.Namespace) -> int:
    """Count values, data keys and the calls a rotation would make; write nothing."""
    paths, fmt = record_paths(m.mode, m.fields, m.payload_field)
    heads: dict[str, str] = {}
    values = 0
    for record in _local_records(plan, m):
        for line in key_rows(record, paths, fmt):
            row = json.loads(line)
            heads[row["k"]] = row["v"]
            values += 1
    only = set(args.only_version) if args.only_version else None
    refused: set[str] = set()
    if plan.require_keys:  # strict: data keys under other master keys are not moved
        from kmsbeam.keys.strict import KeyRequirement

        allowed = KeyRequirement(plan.require_keys).allowed() | {version}
        refused = {k for k, v in heads.items() if v not in allowed}
    todo = [k for k, v in heads.items() if v != version and (only is None or v in only)
            and k not in refused]  # fmt: skip
    rows = [("values", f"{values:,}"), ("data keys", f"{len(heads):,}"),
            *([("data keys not allowed (--require-key)", f"{len(refused):,}")] if plan.require_keys else []),
            ("data keys to move", f"{len(todo):,}"),
            ("KMS calls: " + ("GenerateDataKey" if args.reencrypt else "ReEncrypt"),
             f"{len(todo):,}" if not args.reencrypt else "1 per bundle"),
            ("KMS calls: Decrypt", f"{len(todo):,}")]  # fmt: skip
    print(table(f"kmsbeam rotate --dry-run: {plan.spec.input} -> key {to_key} (version {version})", rows))
    return 0


def _local_records(plan: RotationPlan, m: Manifest) -> Any:
    """The records of the dataset, read in this process through Beam's FileSystems."""
    import csv

    import pyarrow.parquet as pq

    for name in plan.files:
        data = rotate_fs.read_bytes(name)
        if m.format == "parquet":
            yield from pq.read_table(io.BytesIO(data)).to_pylist()
        elif m.format == "csv":
            yield from csv.DictReader(io.StringIO(data.decode("utf-8"), newline=""))
        else:
            yield from (json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip())


def table(title: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(n) for n, _ in rows)
    return "\n".join([title] + [f"  {n:<{width}}  {v}" for n, v in rows])
