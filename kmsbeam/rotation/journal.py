"""The rotation journal: the data keys a rotation has moved, written as it goes, so a run that
stops half-way (a crash, a killed worker) resumes without asking the key source again.

One JSON line per data key moved, appended and synced to disk as soon as the key source has
answered (before any value carries the new header)::

    {"from": old version, "k": K-hex, "kmsbeam_journal": 1, "to": new version,
     "wrapped": base64url(new wrapped key)}

(keys sorted; ``docs/FORMAT.md``, "Rotation journal v1"; lines of another version are skipped).

Each writer (one per worker process) appends to its own file ``DIR/journal-<host>-<pid>-<rand>.jsonl``,
so workers never share a file; a line torn by a crash is skipped when the journal is read.

The journal can live on any filesystem: pass a ``JournalStore`` (``pipelines`` and
``transforms`` give one over Beam's FileSystems, so ``oss://`` and every registered scheme
work). Object stores cannot append, so with a store each entry is its own small object
``DIR/journal-<host>-<pid>-<rand>-<n>.jsonl``, complete once ``create`` returns. Without a
store the directory is a local one (appended and fsynced as above). This module never
imports Beam.
Nothing in it is secret: commitments and wrapped keys are in every value's header anyway.

A journal entry is used only for a value with the same commitment K and only while its
``to`` version is still the target's current version. It is not checked again against the key
source: a forged entry cannot give wrong plaintext, because readers check every value's K
against the data key they unwrap (the value then fails to decrypt, and ``--verify`` says so).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from kmsbeam import process

__all__ = [
    "JOURNAL_VERSION",
    "JournalStore",
    "JournalWriter",
    "journal_line",
    "journal_writer",
    "parse_journal_line",
    "read_journal",
]

JOURNAL_VERSION = 1
#: longer lines are skipped unread: a real line is a few hundred bytes (a wrapped key is at
#: most 65535 bytes, 87,384 characters of base64)
MAX_LINE = 1 << 17

_PATTERN = "journal-*.jsonl"


class JournalStore(Protocol):
    """Where a journal lives when it is not a local directory (e.g. Beam's FileSystems).

    Paths are the store's own strings (``oss://b/out/_kmsbeam_rotation.journal/x.jsonl``):
    the journal joins them with ``/`` and never interprets them.
    """

    def shards(self, directory: str) -> Sequence[str]:
        """The paths of the ``journal-*.jsonl`` objects under ``directory`` (none if absent)."""

    def read(self, path: str) -> bytes:
        """The whole content of one shard."""

    def create(self, path: str, data: bytes) -> None:
        """Write a new object; it must be durable and complete when this returns."""


def read_journal(directory: str | os.PathLike[str], target_version: str,
                 store: JournalStore | None = None) -> dict[bytes, bytes]:  # fmt: skip
    """``{K: new wrapped key}`` for every journaled data key moved to ``target_version``.

    A missing directory is an empty journal. Lines that do not parse (a torn last line) or that
    name another target version are skipped.
    """
    moved: dict[bytes, bytes] = {}
    if store is not None:
        texts = [store.read(shard).decode("utf-8", errors="replace")
                 for shard in sorted(store.shards(str(directory)))]  # fmt: skip
    else:
        root = Path(directory)
        if not root.is_dir():
            return moved
        texts = [shard.read_text(encoding="utf-8", errors="replace")
                 for shard in sorted(root.glob(_PATTERN))]  # fmt: skip
    for text in texts:
        for line in text.splitlines():
            entry = parse_journal_line(line, target_version)
            if entry is not None:
                moved[entry[0]] = entry[1]
    return moved


def parse_journal_line(line: str, target_version: str) -> tuple[bytes, bytes] | None:
    """``(K, new wrapped key)`` of one journal line moved to ``target_version``, else None.

    Never raises: a line that does not parse (torn, hostile, nested past any limit), of
    another version or target, or whose K is not 16 bytes is None, as the format says.
    """
    if len(line) > MAX_LINE:
        return None
    try:
        row = json.loads(line)
        if row["kmsbeam_journal"] != JOURNAL_VERSION or row["to"] != target_version:
            return None
        k = bytes.fromhex(row["k"])
        wrapped = base64.urlsafe_b64decode(row["wrapped"])
    except (ValueError, KeyError, TypeError, binascii.Error, RecursionError):
        return None  # RecursionError: JSON nested deeper than the interpreter's stack
    if len(k) != 16 or not wrapped:
        return None
    return k, wrapped


def journal_line(commitment: bytes, old_version: str, new_version: str, wrapped: bytes) -> str:
    """The journal line recording that data key ``commitment`` is now wrapped as ``wrapped``."""
    return json.dumps({"kmsbeam_journal": JOURNAL_VERSION, "k": commitment.hex(),
                       "from": old_version, "to": new_version,
                       "wrapped": base64.urlsafe_b64encode(wrapped).decode("ascii")},
                      sort_keys=True) + "\n"  # fmt: skip


class JournalWriter:
    """Appends journal lines to this process's own file in ``directory`` (thread-safe); with a
    ``store``, writes each line as its own new object there instead."""

    def __init__(self, directory: str | os.PathLike[str], store: JournalStore | None = None) -> None:
        self._dir = Path(directory)
        self._remote = str(directory).rstrip("/")
        self._store = store
        self._lock = threading.Lock()
        self._path: Path | None = None
        self._stem = ""
        self.lines = 0

    def __repr__(self) -> str:
        return f"JournalWriter({str(self._dir)!r}, lines={self.lines})"

    def moved(self, commitment: bytes, old_version: str, new_version: str, wrapped: bytes) -> None:
        """Record that the data key ``commitment`` now has the wrapped form ``wrapped``."""
        line = journal_line(commitment, old_version, new_version, wrapped)
        if self._store is not None:
            with self._lock:
                if not self._stem:
                    self._stem = f"journal-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
                name = f"{self._remote}/{self._stem}-{self.lines:06d}.jsonl"
                self._store.create(name, line.encode("utf-8"))
                self.lines += 1
            return
        with self._lock:
            if self._path is None:
                self._dir.mkdir(parents=True, exist_ok=True)
                name = f"journal-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
                self._path = self._dir / name
            fd = os.open(self._path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            try:
                os.write(fd, line.encode("utf-8"))
                os.fsync(fd)
            finally:
                os.close(fd)
            self.lines += 1


def journal_writer(directory: str | os.PathLike[str], store: JournalStore | None = None) -> JournalWriter:
    """The process-wide writer for ``directory`` (``kmsbeam.process``: a new file in a forked
    child). A local directory is made absolute; a store's path (``oss://...``) is kept as it is."""
    key = str(directory) if store is not None else os.path.abspath(directory)
    return process.shared("rotation.journal", key, lambda: JournalWriter(key, store))

