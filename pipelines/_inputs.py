"""A job's input files in the pipeline: the files a glob matches, or a list of the files
themselves (a watch's window: ``JobSpec.files``), as Beam ``FileMetadata``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio

__all__ = ["match_input"]


def _literal(path: str) -> str:
    """``path`` as a glob that matches only itself (``*``, ``?`` and ``[`` bracketed)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in path)


class _Match(beam.PTransform):
    def __init__(self, pattern: str | Sequence[str]) -> None:
        super().__init__()
        self._pattern = pattern

    def expand(self, p: Any) -> Any:
        if isinstance(self._pattern, str):
            return p | "Match" >> fileio.MatchFiles(self._pattern)
        return p | "Files" >> beam.Create([_literal(f) for f in self._pattern]) | "Match" >> fileio.MatchAll()


def match_input(pattern: str | Sequence[str]) -> beam.PTransform:
    """A transform (applied to the pipeline) giving the files of ``pattern``: a glob, or a list
    of files taken literally."""
    return _Match(pattern)
