"""Smoke test of ``python -m benchmarks.jobs``: every job runs as a child, every ratio is printed.

Counts and shape only: timings are never asserted (they belong to the benchmark's output).
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is not installed

from benchmarks import _children, jobs  # noqa: E402

LOAD = re.compile(r"\d+\.\d\d/\d+\.\d\d/\d+\.\d\d")  # min/mean/max


@pytest.mark.slow
def test_every_job_and_ratio_with_a_baseline_and_no_child_left(tmp_path: Path) -> None:
    # The baseline is today's kmsbeam reached through PYTHONPATH (a link to the package): the
    # way an older copy installed with ``pip install --target DIR`` is run.
    (tmp_path / "before").mkdir()
    (tmp_path / "before" / "kmsbeam").symlink_to(Path(__file__).resolve().parents[2] / "kmsbeam")
    started = len(_children.STARTED)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = jobs.main(["--records", "2000", "--repeat", "1", "--baseline", str(tmp_path / "before")])
    assert code == 0
    lines = out.getvalue().splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("job ")) :]
    rows = {line.split("  ")[0]: line for line in table if LOAD.search(line)}
    assert list(rows)[:9] == ["start-up", "identity", "encrypt", "encrypt (before)", "identity (encrypted)",
                              "decrypt", "decrypt (before)", "rotate", "rotate (before)"]  # fmt: skip
    assert [name for name, *_ in jobs.RATIOS] == list(rows)[9:]
    assert "<= 1.1" in rows["encrypt / identity"] and "<= 0.5" in rows["rotate / encrypt"]
    assert "<= 0.5" in rows["encrypt: after / before"]
    new = _children.STARTED[started:]
    assert len(new) == 9 and all(not Path(f"/proc/{pid}").exists() for pid in new)
