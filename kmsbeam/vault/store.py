"""Where a key vault's entries live: ``VaultStore``, create-once files under one prefix.

A store needs three operations, which every filesystem has: create a file that does not exist
yet (durably, before it returns), read a file, and list the names under a prefix. kmsbeam's
core has ``LocalStore`` (a local directory); ``kmsbeam.transforms`` registers a store over
Beam's ``FileSystems`` for every other scheme (``oss://``, ``s3://``, ``gs://``...) with
``register_store_opener``. Entries are never rewritten: a rotation creates new names.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from kmsbeam.errors import ConfigurationError, KeySourceUnavailableError

__all__ = ["LocalStore", "VaultStore", "open_store", "register_store_opener"]


class VaultStore(Protocol):
    """Create-once files under one prefix (names are ``/``-separated, relative)."""

    @property
    def uri(self) -> str:
        """The vault's prefix as the user wrote it (no secret: key URIs and paths only)."""
        ...

    def create(self, name: str, data: bytes, *, durable: bool = True) -> bool:
        """Create ``name`` holding ``data``, whole or not at all: True; False (nothing
        written) if ``name`` exists already. ``durable``: on stable storage before returning
        (else by the next ``sync``; object stores are durable when a write returns).

        Raises:
            KeySourceUnavailableError: the store could not be written.
        """
        ...

    def sync(self) -> None:
        """Make every ``create(..., durable=False)`` so far durable."""
        ...

    def read(self, name: str) -> bytes | None:
        """The bytes of ``name``, None if it does not exist.

        Raises:
            KeySourceUnavailableError: the store could not be read.
        """
        ...

    def list(self, prefix: str = "") -> list[str]:
        """The names starting with ``prefix`` (relative to the vault), in any order.

        Raises:
            KeySourceUnavailableError: the store could not be listed.
        """
        ...

    def delete(self, name: str) -> None:
        """Delete ``name`` (``kmsbeam vault gc --yes`` only); absent is not an error.

        Raises:
            KeySourceUnavailableError: the store could not be written.
        """
        ...


class LocalStore:
    """A vault in a local directory (created on first write, mode 0700).

    ``create`` writes a temporary file in the target directory, fsyncs it, and links it to its
    name (``os.link`` fails if the name exists: create-once without a lock), then fsyncs the
    directory: a crash leaves either no entry or a whole one, never a torn one.
    """

    def __init__(self, path: str) -> None:
        self._path = Path(path[len("file://"):] if path.startswith("file://") else path)
        self._uri = path

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"LocalStore({self._uri!r})"

    def _file(self, name: str) -> Path:
        parts = name.split("/")
        if not name or any(p in ("", ".", "..") for p in parts):
            raise ValueError("a vault name is a relative path without . or .. parts")
        return self._path.joinpath(*parts)

    def create(self, name: str, data: bytes, *, durable: bool = True) -> bool:
        target = self._file(name)
        try:
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    if durable:
                        os.fsync(f.fileno())
                try:
                    os.link(tmp, target)
                except FileExistsError:
                    return False
            finally:
                os.unlink(tmp)
            if durable:
                _fsync_dir(target.parent)
            return True
        except OSError as exc:
            raise KeySourceUnavailableError(f"the key vault {self._uri} could not be written: "
                                            f"{exc.strerror or type(exc).__name__}") from exc  # fmt: skip

    def read(self, name: str) -> bytes | None:
        try:
            return self._file(name).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise KeySourceUnavailableError(f"the key vault {self._uri} could not be read: "
                                            f"{exc.strerror or type(exc).__name__}") from exc  # fmt: skip

    def list(self, prefix: str = "") -> list[str]:
        head, _, _ = prefix.rpartition("/")
        top = self._file(head) if head else self._path
        out: list[str] = []
        try:
            for root, dirs, files in os.walk(top):
                rel = Path(root).relative_to(self._path).as_posix()
                base = "" if rel == "." else rel + "/"
                out.extend(base + f for f in files if not f.startswith(".tmp-"))
        except OSError as exc:  # pragma: no cover - os.walk swallows most errors
            raise KeySourceUnavailableError(f"the key vault {self._uri} could not be listed") from exc
        return [n for n in out if n.startswith(prefix)]


    def sync(self) -> None:
        """One ``sync()`` of the system for many non-durable creates (a rotation's entries):
        an entry lost to a crash before it is not a loss, the older generation stays."""
        os.sync()

    def delete(self, name: str) -> None:
        target = self._file(name)
        try:
            target.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                target.parent.rmdir()  # the key id's directory, once empty
        except OSError as exc:
            raise KeySourceUnavailableError(f"the key vault {self._uri} could not be written: "
                                            f"{exc.strerror or type(exc).__name__}") from exc  # fmt: skip


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


_OPENER: list[Callable[[str], VaultStore]] = []
_LOCK = threading.Lock()


def register_store_opener(opener: Callable[[str], VaultStore]) -> None:
    """Open vaults whose URI has a scheme (``oss://...``) with ``opener`` (one per process:
    ``kmsbeam.transforms`` registers Beam's FileSystems on import)."""
    with _LOCK:
        _OPENER[:] = [opener]


def is_local(uri: str) -> bool:
    return "://" not in uri or uri.startswith("file://")


def open_store(uri: str) -> VaultStore:
    """The store of the vault at ``uri``: a local path (or ``file://``) or, once a store
    opener is registered, any URI it takes.

    Raises:
        ConfigurationError: an empty URI, or a scheme no registered opener takes.
    """
    if not uri or not uri.strip():
        raise ConfigurationError("a key vault is a path or URI prefix, such as oss://bucket/_keys/")
    if is_local(uri):
        return LocalStore(uri)
    with _LOCK:
        opener = _OPENER[0] if _OPENER else None
    if opener is None:
        raise ConfigurationError(
            f"a key vault at {uri.split('://', 1)[0]}:// needs kmsbeam.transforms (Beam's "
            "filesystems) imported"
        )
    return opener(uri)
