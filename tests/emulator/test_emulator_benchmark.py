"""Smoke test of ``python -m benchmarks.emulator``: every row is measured with no failed call.

Counts only: timings are never asserted (they belong to the benchmark's own output).
"""

from __future__ import annotations

import sys
from pathlib import Path

# benchmarks/ is not an installed package: make the repo root importable under plain `pytest`
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchmarks import emulator, emulator_pipeline  # noqa: E402
from benchmarks._table import format_table  # noqa: E402


def test_every_row_is_measured() -> None:
    rows = emulator.measure(seconds=0.3, processes=1, threads=2)
    names = [r.measurement for r in rows]
    assert names == [f"emulator {op}{suffix}" for op in emulator.OPERATIONS
                     for suffix in ("", " p50", " p99")] + ["emulator server CPU per call"]  # fmt: skip
    assert all(r.value > 0 for r in rows[:-1])
    assert "req/s" in format_table(rows)


def test_the_pipeline_makes_one_call_of_each_kind_per_bundle() -> None:
    rows = {r.measurement: r for r in emulator_pipeline.pipeline_calls(3_000)}
    assert rows["pipeline GenerateDataKey calls"].value == 1
    assert rows["pipeline Decrypt calls"].value == 1
    assert "audit log: 1" in rows["pipeline GenerateDataKey calls"].notes
    assert "audit log: 1" in rows["pipeline Decrypt calls"].notes
