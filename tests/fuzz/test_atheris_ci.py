"""CI runs every atheris harness (``.ci/fuzz``): a bounded, seeded run per parser, from a
corpus of valid encodings. Any crash fails this test with the harness's traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_every_harness_runs_without_a_crash(tmp_path: Path) -> None:
    env = {**os.environ, "KMSBEAM_FUZZ_OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    result = subprocess.run(["bash", str(ROOT / ".ci" / "fuzz")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=900)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    harnesses = sorted(p.stem.removeprefix("fuzz_") for p in (ROOT / "tests" / "fuzz").glob("fuzz_*.py"))
    table = result.stdout.splitlines()[1:]
    assert sorted(line.split()[0] for line in table) == harnesses
    for line in table:  # every harness ran (inputs counted) and finished "ok"
        name, inputs, _, verdict = line.split()[:4]
        assert inputs.isdigit() and int(inputs) > 0 and verdict == "ok", line
