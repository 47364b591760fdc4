"""The benchmarks measure honestly: load sampled during each row, equal interleaved repeats, and
every child process stopped by PID with SIGTERM (SIGKILL after a timeout) and waited for.

Timings are never asserted; only the shape of the output and the fate of the children.
"""

from __future__ import annotations

import contextlib
import io
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is not installed

from benchmarks import _children  # noqa: E402
from benchmarks._measure import Load, interleaved  # noqa: E402

LOAD = re.compile(r"\d+\.\d\d/\d+\.\d\d/\d+\.\d\d")  # min/mean/max
IGNORES_SIGINT = ("import signal, sys, time\n"
                  "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
                  "print('ready', flush=True)\n"
                  "while True: time.sleep(60)\n")  # fmt: skip


def _gone(pid: int) -> bool:
    return not Path(f"/proc/{pid}").exists()


def test_a_child_that_ignores_sigint_is_stopped_by_sigterm_and_reaped() -> None:
    with _children.child([sys.executable, "-c", IGNORES_SIGINT], stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        pid = proc.pid
    assert proc.returncode == -signal.SIGTERM
    assert _gone(pid) and pid in _children.STARTED


def test_a_child_that_ignores_sigterm_too_is_killed_after_the_timeout() -> None:
    code = IGNORES_SIGINT.replace("signal.SIGINT", "signal.SIGTERM")
    proc = _children.start([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    assert _children.stop(proc, timeout=1.0) == -signal.SIGKILL
    assert _gone(proc.pid)


def test_both_sides_run_equally_often_and_interleaved() -> None:
    order: list[str] = []
    timings = interleaved(3, {"a": lambda: order.append("a"), "b": lambda: order.append("b")})
    assert order == ["a", "b"] * 3
    assert [t.runs for t in timings.values()] == [3, 3]
    assert all(len(t.load.samples) >= 6 for t in timings.values())  # entry + exit of each run
    assert all(LOAD.fullmatch(t.load.text()) for t in timings.values())


def test_the_sampler_samples_while_the_block_runs() -> None:
    with Load(every=0.01) as load:
        deadline = time.monotonic() + 30  # liveness bound, not a timing
        while len(load.samples) < 4 and time.monotonic() < deadline:
            threading.Event().wait(0.01)
    assert len(load.samples) >= 5  # >= 3 by the thread while the block ran, + the exit sample


def test_a_smoke_run_prints_the_load_of_each_row_and_leaves_no_child(monkeypatch: pytest.MonkeyPatch) -> None:
    from benchmarks import objects

    for name in ("KMSBEAM_OSS_ENDPOINT", "KMSBEAM_OSS_REGION", "ALIBABA_CLOUD_ACCESS_KEY_ID",
                 "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):  # fmt: skip
        monkeypatch.setenv(name, "restored after the test")  # the benchmark sets them
    started = len(_children.STARTED)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert objects.main(["--mib", "2", "--export-mib", "1"]) == 0
    lines = out.getvalue().splitlines()
    head = next(i for i, line in enumerate(lines) if line.startswith("measurement"))
    assert "load during" in lines[head]
    rows = lines[head + 2 :]
    assert len(rows) == 9 and all(LOAD.search(row) for row in rows)
    new = _children.STARTED[started:]
    assert len(new) == 1 and all(_gone(pid) for pid in new)  # the loopback OSS server
