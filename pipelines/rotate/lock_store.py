"""Where a rotation lock object is kept, created only if absent (``lock`` is the protocol).

- ``LocalLockFile``: written to a draft, then ``link``ed into place (atomic, never over an existing
  lock, never seen half-written); a stale lock is renamed aside before it is removed, so a
  successor's fresh lock is never deleted by mistake.
- ``OssLockObject``: PutObject with ``x-oss-forbid-overwrite: true``.
- ``BeamLockObject``: any other Beam filesystem (``s3://``, ``hdfs://``, ``gs://``): checked,
  then created; two rotations starting in the same instant can both take it.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from typing import Protocol

from kmsbeam import ConfigurationError

__all__ = ["BeamLockObject", "LocalLockFile", "LockStore", "OssLockObject", "lock_store"]

MAX_LOCK_BYTES = 4096


class LockStore(Protocol):
    location: str

    def create(self, data: bytes) -> bool:
        """Create the lock object holding ``data`` if absent; False if it exists."""

    def read(self) -> tuple[bytes, float | None] | None:
        """The lock's bytes and its modification time (None: unknown), or None if absent."""

    def delete(self) -> None:
        """Delete the lock object (absent is fine)."""

    def remove_stale(self, is_stale: Callable[[bytes], bool]) -> bytes | None:
        """Remove the lock judged stale; the bytes of another lock found instead (kept)."""


def lock_store(location: str) -> LockStore:
    if location.startswith("oss://"):
        return OssLockObject(location)
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", location):
        return BeamLockObject(location)
    return LocalLockFile(location)


class LocalLockFile:
    def __init__(self, location: str) -> None:
        self.location = location

    def create(self, data: bytes) -> bool:
        """Write ``data`` to a file of its own, then link it into place (``link`` fails when the
        lock exists): the lock appears with its whole content, so a racing reader never reads
        an empty owner."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        parent = os.path.dirname(self.location)
        draft = f"{self.location}.new-{secrets.token_hex(6)}"
        try:
            if not os.path.isdir(parent):
                os.makedirs(parent)
            fd = os.open(draft, flags, 0o644)
        except OSError as exc:
            if isinstance(exc, FileExistsError) or not os.path.isdir(parent):
                raise self._cannot(parent, "a file is in the way") from None
            raise self._cannot(parent, exc.strerror or type(exc).__name__) from None
        try:
            try:
                os.write(fd, data)
                os.fsync(fd)
            finally:
                os.close(fd)
            os.link(draft, self.location)
        except FileExistsError:
            return False
        finally:
            os.unlink(draft)
        return True

    def _cannot(self, parent: str, why: str) -> ConfigurationError:
        return ConfigurationError(f"cannot create the rotation lock {self.location} ({why}); "
                                  f"make {parent} a writable directory or choose another OUTPUT")  # fmt: skip

    def read(self) -> tuple[bytes, float | None] | None:
        try:
            fd = os.open(self.location, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            return os.read(fd, MAX_LOCK_BYTES), os.fstat(fd).st_mtime
        finally:
            os.close(fd)

    def delete(self) -> None:
        try:
            os.unlink(self.location)
        except FileNotFoundError:
            pass

    def remove_stale(self, is_stale: Callable[[bytes], bool]) -> bytes | None:
        aside = f"{self.location}.broken-{secrets.token_hex(6)}"
        try:
            os.rename(self.location, aside)
        except FileNotFoundError:
            return None  # gone already: the create that follows decides
        with open(aside, "rb") as f:
            taken = f.read(MAX_LOCK_BYTES)
        if not is_stale(taken):  # a new owner locked it meanwhile: give it back
            try:
                os.link(aside, self.location)
            finally:
                os.unlink(aside)
            return taken
        os.unlink(aside)
        return None


class OssLockObject:
    def __init__(self, location: str) -> None:
        self.location = location

    def create(self, data: bytes) -> bool:
        from kmsbeam.oss import oss_client

        try:
            oss_client().put(self.location, data, overwrite=False)
        except FileExistsError:
            return False
        return True

    def read(self) -> tuple[bytes, float | None] | None:
        from kmsbeam.oss import oss_client

        client = oss_client()
        try:
            info = client.head(self.location)
            return client.get(self.location), info.last_modified
        except FileNotFoundError:
            return None

    def delete(self) -> None:
        from kmsbeam.oss import oss_client

        oss_client().delete(self.location)

    def remove_stale(self, is_stale: Callable[[bytes], bool]) -> bytes | None:
        self.delete()  # OSS has no conditional delete (see the lock module's caveats)
        return None


class BeamLockObject:
    def __init__(self, location: str) -> None:
        self.location = location

    def create(self, data: bytes) -> bool:
        from kmsbeam.pipelines import paths

        if paths.exists(self.location):
            return False
        paths.write_bytes(self.location, data)
        return True

    def read(self) -> tuple[bytes, float | None] | None:
        from kmsbeam.pipelines import paths

        if not paths.exists(self.location):
            return None
        return paths.read_bytes(self.location)[:MAX_LOCK_BYTES], None

    def delete(self) -> None:
        from kmsbeam.pipelines import paths

        paths.delete_tree(self.location)

    def remove_stale(self, is_stale: Callable[[bytes], bool]) -> bytes | None:
        self.delete()
        return None
