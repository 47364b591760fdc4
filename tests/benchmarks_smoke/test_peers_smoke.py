"""Smoke tests of ``python -m benchmarks.peers`` and ``python -m benchmarks.plot_kms_calls``.

Counts and files only: timings are never asserted (they belong to the benchmarks' output).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package: make the repo root importable under plain `pytest`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def test_peers_quick_measures_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("aws_encryption_sdk")
    pytest.importorskip("tink")
    from benchmarks import peers
    from benchmarks._peers_table import PEER_ROWS

    home = os.environ.get("KMSBEAM_HOME")
    out = tmp_path / "peers.json"
    assert peers.main(["--quick", "--json", str(out)]) == 0
    assert os.environ.get("KMSBEAM_HOME") == home  # the throwaway keystore is not left behind

    table = capsys.readouterr().out
    assert all(name in table for name in PEER_ROWS)
    rows = {r["name"]: r for r in json.loads(out.read_text())["table"]}
    assert list(rows) == list(PEER_ROWS)
    assert all(r["values_per_s"] > 0 and r["values"] > 0 for r in rows.values())
    quick = peers.QUICK
    values = quick["records"] * 3
    # KMS calls are counted: one data key for the whole run on kmsbeam's paths ...
    for name in PEER_ROWS[:5]:
        assert rows[name]["kms_calls"] == 1 and rows[name]["values"] == values
    assert rows["kmsbeam encrypt_batch, bytes"]["ratio"] == 1.0
    # ... one per cached data key for the ESDK, none for Tink, one per record for the naive job
    assert rows["AWS ESDK, caching CMM, unsigned suite"]["kms_calls"] == 1
    assert rows["Tink AEAD AES256_GCM, local keyset"]["kms_calls"] == 0
    naive = rows["naive: GenerateDataKey per record"]
    assert naive["kms_calls"] == quick["naive_records"] and naive["values"] == quick["naive_records"] * 3
    assert f"audit log {quick['naive_records']}" in naive["notes"]
    assert rows["Parquet kmsbeam cells + write"]["kms_calls"] == 1
    assert rows["Parquet PME write (pyarrow)"]["kms_calls"] >= 1
    assert rows["kmsbeam encrypt_batch, bytes"]["overhead"] > rows["Tink AEAD AES256_GCM, local keyset"]["overhead"]


def test_plot_writes_a_small_png_from_measured_points(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from benchmarks import plot_kms_calls

    png, points = tmp_path / "kms-calls.png", tmp_path / "points.json"
    args = ["--out", str(png), "--max-measured", "1000", "--bundle-size", "500", "--json", str(points)]
    assert plot_kms_calls.main(args) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 150_000
    measured = {p["policy"]: p for p in json.loads(points.read_text())}
    assert measured["per record"]["kms_calls"] == 1000
    assert measured["per bundle"]["kms_calls"] == measured["per bundle"]["bundles"] == 2
