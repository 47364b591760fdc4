"""What a job may find in OUTPUT and replace there: kmsbeam's own output, never anyone else's.

``prepare_output`` checks OUTPUT and the dead-letter directory (a directory or a prefix on any
Beam filesystem) before a job runs: empty, or holding only kmsbeam's output with ``--overwrite``.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

from kmsbeam import ConfigurationError
from kmsbeam.pipelines import paths
from kmsbeam.pipelines.manifest import MANIFEST_NAME

__all__ = ["DEAD_LETTER_DIR", "prepare_output"]

DEAD_LETTER_DIR = "_dead_letters"

_OURS = ("part-*", "_KEY_MATERIAL_FOR_part-*", MANIFEST_NAME, DEAD_LETTER_DIR + "/*", "beam-temp-*")


def _same(a: str, b: str) -> bool:
    return a.rstrip("/") == b.rstrip("/")


def prepare_output(out_dir: str | Path, dead_dir: str | Path, overwrite: bool, inputs: list[str],
                   keep_old: bool = False) -> None:  # fmt: skip
    """Check that OUTPUT (a directory or a prefix on any filesystem) and the dead-letter
    directory are empty, or hold only kmsbeam's output and ``overwrite`` is set (that output is
    then deleted, unless ``keep_old``: ``jobs.run_plan`` replaces it only once the new output is
    complete, ``cleanup``); make a local OUTPUT. Objects that are not kmsbeam's are never deleted."""
    out, dead = paths.normalize(out_dir, "the output"), paths.normalize(dead_dir, "the dead letters")
    if paths.exists(out.rstrip("/")):
        raise ConfigurationError(f"the output {out} is a file; give a directory path")
    if any(_same(paths.parent(paths.normalize(f)), out) for f in inputs):
        raise ConfigurationError("the output directory holds the input; choose another output")
    for directory in dict.fromkeys((out, dead)):
        found = paths.list_dir(directory)
        if not found:
            continue
        if not overwrite:
            raise ConfigurationError(
                f"the output directory {directory} already contains files; pass "
                "--overwrite to replace kmsbeam's output in it, or choose an empty directory"
            )
        if keep_old:
            continue
        base = directory.rstrip("/") + "/"
        ours = [f for f in found if any(fnmatch.fnmatchcase(f[len(base):], p) for p in _OURS)
                or (_same(directory, dead) and fnmatch.fnmatchcase(f[len(base):], "part-*"))]  # fmt: skip
        paths.delete(ours)
        if not paths.is_remote(directory):
            _remove_empty_dirs(paths.join(directory, DEAD_LETTER_DIR))
    if not paths.is_remote(out):
        os.makedirs(out, exist_ok=True)


def _remove_empty_dirs(directory: str) -> None:
    for root, _dirs, _files in os.walk(directory, topdown=False):
        try:
            os.rmdir(root)
        except OSError:  # not empty: something that is not kmsbeam's is in it
            pass
