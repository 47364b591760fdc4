"""The rotation journal (``kmsbeam.rotation.journal``) on Beam's FileSystems: a
``JournalStore`` for any registered scheme (``oss://`` and the rest). Local directories keep
the journal's own append-and-fsync files (``journal_store`` gives None for them)."""

from __future__ import annotations

import re

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

__all__ = ["BeamJournalStore", "journal_store"]

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


class BeamJournalStore:
    """Each journal entry is a new object under the journal's prefix (no appends)."""

    def shards(self, directory: str) -> list[str]:
        try:
            found = FileSystems.match([directory.rstrip("/") + "/journal-*.jsonl"])[0].metadata_list
        except BeamIOError:
            return []
        return sorted(m.path for m in found)

    def read(self, path: str) -> bytes:
        with FileSystems.open(path, compression_type="uncompressed") as f:
            data: bytes = f.read()
        return data

    def create(self, path: str, data: bytes) -> None:
        with FileSystems.create(path, compression_type="uncompressed") as f:
            f.write(data)


def journal_store(directory: str) -> BeamJournalStore | None:
    """The store for a journal in ``directory``: None (local files) unless it is remote."""
    return BeamJournalStore() if _SCHEME.match(directory) else None
