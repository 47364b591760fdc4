"""Smoke test of ``python -m benchmarks.parquet``: every row is measured, KMS calls are exact.

Counts and sizes only: timings are never asserted.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import parquet as bench  # noqa: E402
from benchmarks._table import format_table  # noqa: E402


def test_every_row_is_measured(kms_home: Path) -> None:
    rows = bench.run(3000, repeat=2)
    by = {r.measurement: r.value for r in rows}
    assert by["PME key-source GenerateDataKey calls"] == 3  # two files, three master keys
    assert by["PME key-source Decrypt calls"] == 3
    assert by["encrypted cell length in memory"] == 166
    assert by["PME file size / plain file size"] < 1.1
    assert all(r.value > 0 for r in rows)
    assert "cells / per-record encrypt" in format_table(rows)
