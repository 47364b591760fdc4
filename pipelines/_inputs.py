"""A job's input files in the pipeline: the files a glob matches, or a list of the files
themselves (a watch's window: ``JobSpec.files``), as Beam ``FileMetadata``.

Files of a list are looked up by name (``FileSystems.metadata``), never as globs, and one that
is gone fails the job: a file taken for a job is read, or the job fails (nothing skipped)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.io import fileio

from kmsbeam import FormatError

__all__ = ["match_input"]


def _metadata(path: str) -> Any:
    from apache_beam.io.filesystem import BeamIOError
    from apache_beam.io.filesystems import FileSystems

    try:
        return FileSystems.get_filesystem(path).metadata(path)
    except BeamIOError:
        pass
    raise FormatError(f"the input file {path} is gone (removed or moved after the job started)")


class _Match(beam.PTransform):
    def __init__(self, pattern: str | Sequence[str]) -> None:
        super().__init__()
        self._pattern = pattern

    def expand(self, p: Any) -> Any:
        if isinstance(self._pattern, str):
            return p | "Match" >> fileio.MatchFiles(self._pattern)
        return p | "Files" >> beam.Create(list(self._pattern)) | "Metadata" >> beam.Map(_metadata)


def match_input(pattern: str | Sequence[str]) -> beam.PTransform:
    """A transform (applied to the pipeline) giving the files of ``pattern``: a glob, or a list
    of files taken literally."""
    return _Match(pattern)
