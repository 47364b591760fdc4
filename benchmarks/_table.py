"""The result table: one ``Row`` per measurement, the row names in order, and the text form.

Every row carries the load average sampled while it was measured (``benchmarks._measure.Load``:
min/mean/max of the 1-minute load, every second); the table prints it next to the value.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["ROWS", "Row", "format_table", "rows_as_json"]


@dataclass(frozen=True)
class Row:
    """One line of the result table."""

    measurement: str
    value: float
    unit: str
    notes: str = ""
    load: str = "-"  # min/mean/max 1-minute load average during the measurement


# The table, in order. The smoke test pins this list.
ROWS = (
    "identity pipeline, JSONL in/out",
    "EncryptFields pipeline, JSONL in/out",
    "EncryptFields / identity, JSONL",
    "identity pipeline, in memory",
    "EncryptFields pipeline, in memory",
    "EncryptFields / identity, in memory",
    "EncryptFields kms_calls_generate_data_key",
    "EncryptFields data_keys_generated",
    "core encrypt_batch, bytes",
    "core encrypt_batch, text",
    "core encrypt (one record per call), text",
    "raw AESGCM.encrypt 16 B, no AAD",
    "raw AESGCM.encrypt 16 B, kmsbeam-size AAD",
    "core decrypt_batch, bytes",
    "core decrypt_batch, text",
    "core decrypt (one record per call), text",
    "parquet snappy, default (dictionary)",
    "parquet snappy, PLAIN",
    "parquet snappy, DELTA_BYTE_ARRAY",
    "parquet snappy, plaintext baseline",
    "encrypted value length, bytes",
    "encrypted value length, text",
    "JSON overhead per value",
)


def _value(v: float) -> str:
    if float(v).is_integer():
        return f"{int(v):,}"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.2f}"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table: measurement, value, unit, load during, notes."""
    cells = [("measurement", "value", "unit", "load during", "notes")]
    cells += [(r.measurement, _value(r.value), r.unit, r.load, r.notes) for r in rows]
    w = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [f"{a:<{w[0]}}  {b:>{w[1]}}  {c:<{w[2]}}  {d:>{w[3]}}  {e}".rstrip() for a, b, c, d, e in cells]
    lines.insert(1, "-" * max(len(line) for line in lines))
    return "\n".join(lines)


def rows_as_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [asdict(r) for r in rows]
