"""Smoke test of ``python -m benchmarks.oss_io``: every row runs, records and bytes add up.

Counts only: timings are never asserted (they belong to the benchmark's output).
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


@pytest.mark.slow
def test_local_and_oss_rows_move_the_same_records(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import oss_io

    for name in ("KMSBEAM_HOME", "KMSBEAM_OSS_ENDPOINT", "KMSBEAM_OSS_REGION",
                 "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):  # fmt: skip
        monkeypatch.setenv(name, "restored after the test")  # the benchmark sets them
    rows = oss_io.run(500, 2, log=io.StringIO())
    assert [(r.job, r.where) for r in rows] == [("encrypt", "local"), ("decrypt", "local"),
                                                ("encrypt", "oss"), ("decrypt", "oss")]  # fmt: skip
    assert all(not r.error and r.records == 500 for r in rows), [r.error for r in rows]
    local_enc, local_dec, oss_enc, oss_dec = rows
    assert local_enc.written <= oss_enc.written <= local_enc.written + 4096  # the shards + the manifest
    assert oss_enc.read >= local_enc.read and oss_dec.read >= local_dec.read  # at least the input
    assert all(r.kms_calls >= 1 for r in rows) and oss_enc.requests > 0
    table = oss_io.format_rows(rows)
    assert table.count("\n") == 5 and "KMS calls" in table
