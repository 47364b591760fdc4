"""A benchmark's throwaway environment: a temp work directory whose ``home`` is ``KMSBEAM_HOME``,
and ``environ(updates)``: environment variables set for a ``with`` block, then restored.

``throwaway(prefix)`` makes the directory, points ``KMSBEAM_HOME`` at ``WORK/home`` (mode 0700)
for the ``with`` block, so every key the benchmark creates lives there and the caller's own
keystore is never touched, then restores the previous ``KMSBEAM_HOME`` and removes the directory.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["environ", "throwaway"]


@contextmanager
def throwaway(prefix: str) -> Iterator[Path]:
    """A fresh work directory, with ``KMSBEAM_HOME`` = ``WORK/home`` while the block runs."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    (work / "home").mkdir(mode=0o700)
    saved = os.environ.get("KMSBEAM_HOME")
    os.environ["KMSBEAM_HOME"] = str(work / "home")
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if saved is None:
            os.environ.pop("KMSBEAM_HOME", None)
        else:
            os.environ["KMSBEAM_HOME"] = saved


@contextmanager
def environ(updates: dict[str, str]) -> Iterator[None]:
    """``updates`` in ``os.environ`` while the block runs; the previous values (or their
    absence) afterwards."""
    saved = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
