"""mypy --strict over an installed copy of kmsbeam (see .ci/mypy for why a copy)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent


@pytest.mark.skipif(shutil.which("mypy") is None, reason="mypy is not installed (pip install -e '.[test]')")
def test_mypy_strict_passes() -> None:
    out = subprocess.run(["bash", str(ROOT / ".ci" / "mypy")], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
