"""Smoke test of ``python -m benchmarks.pkcs11`` (its own throwaway SoftHSM, in a subprocess).

Counts only: timings are never asserted.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_benchmark_runs_and_counts_one_call_each_way(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    cmd = [sys.executable, "-m", "benchmarks.pkcs11", "--records", "300", "--ops", "20", "--threads", "2",
           "--json", str(out)]  # fmt: skip
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["measurement"]: r for r in json.loads(out.read_text())["rows"]}
    assert rows["kms_calls_generate_data_key"]["value"] == 1
    assert rows["kms_calls_decrypt"]["value"] == 1
    assert rows["PKCS#11 operations per wrap"]["value"] == 5
    assert rows["PKCS#11 operations per unwrap"]["value"] == 4
    assert all(r["value"] > 0 for r in rows.values())
    assert "wraps/s (generate_data_key), 2 threads" in rows
