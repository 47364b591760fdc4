"""Smoke test of ``python -m benchmarks``: every row is measured, KMS calls are exact.

Counts only: timings are never asserted (they belong to the benchmark's own output).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# benchmarks/ is not an installed package: make the repo root importable under plain `pytest`
# too (`python -m pytest` from the root already has it on sys.path).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import foundation
from benchmarks._table import format_table

N = 2_000


def test_every_row_is_measured_and_the_encrypt_pipeline_makes_one_kms_call() -> None:
    rows = foundation.run_all(N, repeat=1)
    by_name = {r.measurement: r for r in rows}

    assert [r.measurement for r in rows] == list(foundation.ROWS)
    # One bundle under the default policy: exactly one GenerateDataKey, one data key.
    assert by_name["EncryptFields kms_calls_generate_data_key"].value == 1
    assert by_name["EncryptFields data_keys_generated"].value == 1
    assert all(r.value > 0 for r in rows)
    table = format_table(rows)
    assert all(name in table for name in foundation.ROWS)


def test_records_have_three_16_byte_fields() -> None:
    records = list(foundation.make_records(1, 10, 3))  # shard 1 of 3: ids 3, 4, 5
    assert [r["id"] for r in records] == [3, 4, 5]
    for r in records:
        assert [len(r[f].encode()) for f in foundation.FIELDS] == [16, 16, 16]


def test_rotation_benchmark_rewraps_once_per_data_key(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import rotation

    for name in ("KMSBEAM_HOME", "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        monkeypatch.setenv(name, "restored after the test")  # the benchmark sets them

    with open(os.devnull, "w") as quiet:
        rows = {r.measurement: r for r in rotation.run(3_000, per_key=1_000, log=quiet)}
    assert rows["data keys in the dataset"].value == 3
    assert rows["rewrap: bytes after every header unchanged"].value == 1
    assert "ReEncrypt 3, Decrypt 3" in rows["rewrap pipeline, JSONL in/out"].notes
    assert "ReEncrypt" not in rows["re-encrypt pipeline, JSONL in/out"].notes
