"""Smoke test of ``python -m benchmarks.scale --quick``: every run measured, counts exact.

Counts only: timings are never asserted (they belong to the benchmark's own output).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is not installed

from benchmarks import scale


# four child processes, two of them start two Beam workers each: ~15 s here (not slow-marked)
def test_quick_run_measures_every_size_and_worker_count(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "scale.json"
    assert scale.main(["--quick", "--json", str(out)]) == 0
    runs = [scale.Run(**r) for r in json.loads(out.read_text())["runs"]]
    assert [(r.records, r.workers) for r in runs] == [(n, w) for n in scale.QUICK_SIZES for w in (1, 2)]
    for r in runs:
        assert r.records_out == r.records  # also enforced by the benchmark itself
        assert r.kms_calls >= 1 and r.data_keys >= 1
        assert r.kms_calls <= r.workers  # one bundle per worker: one GenerateDataKey at most each
        assert 50 * 2**20 < r.worker_peak_rss < 2**32  # a Beam worker's VmHWM, in bytes
    printed = capsys.readouterr().out
    assert "records  workers  seconds  us/record  peak RSS MiB  KMS calls  data keys" in printed
    assert printed.count("worker(s), 1,000 -> 3,000 records") == 2


def test_check_lines_flag_growth() -> None:
    def run(n: int, seconds: float, rss: int, calls: int) -> scale.Run:
        return scale.Run(n, 1, seconds, rss, rss, calls, calls, n)

    good = scale.check_lines([run(10**4, 1.5, 100, 1), run(10**5, 6.0, 100, 1), run(10**6, 51.0, 110, 1)])
    assert "time linear" in good[0] and "memory flat" in good[0] and "KMS calls flat" in good[0]
    bad = scale.check_lines([run(10**4, 1.5, 100, 1), run(10**5, 6.0, 200, 1), run(10**6, 200.0, 400, 90)])
    assert "NOT linear" in bad[0] and "memory NOT flat" in bad[0] and "KMS calls NOT flat" in bad[0]
