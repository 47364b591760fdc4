"""mypy --strict over an installed copy of kmsbeam (what .ci/mypy does, and why a copy).

mypy runs as a module of the interpreter running the tests (``sys.executable -m mypy``), never
whatever ``mypy`` is on PATH, and this check never skips: CI depends on it, so a missing mypy
is a failure that says how to install it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent
INSTALL_HINT = f"install the test extra: {sys.executable} -m pip install -e '.[test]'"


def test_mypy_is_importable() -> None:
    assert importlib.util.find_spec("mypy") is not None, (
        f"mypy is not installed for {sys.executable}, so the type check cannot run; {INSTALL_HINT}"
    )


def test_mypy_strict_passes(tmp_path: Path) -> None:
    test_mypy_is_importable()
    target = tmp_path / "site"
    # Static tools do not follow pyproject's package-dir mapping in an editable install.
    pip = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
           "--target", str(target), str(ROOT)]  # fmt: skip
    out = subprocess.run(pip, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout + out.stderr
    mypy = [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "kmsbeam"]
    out = subprocess.run(mypy, capture_output=True, text=True, timeout=600, cwd=target,
                         env={**os.environ, "MYPYPATH": str(target)})  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr

