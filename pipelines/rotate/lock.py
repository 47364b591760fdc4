"""One rotation at a time per output: a lock object created atomically next to (or in) OUTPUT.

::

    with RotationLock("out/enc-rotated", break_lock=args.break_lock):
        ...   # the rotation; the lock goes away on return, on an error and on Ctrl-C

========================  ===================================================================
target                    lock object
========================  ===================================================================
local ``DIR``             ``DIR.kmsbeam-rotation.lock`` beside it (``O_CREAT|O_EXCL``), so the
                          output directory itself stays exactly kmsbeam's output
``oss://bucket/prefix/``  ``oss://bucket/prefix/_kmsbeam_rotation.lock`` (PutObject with
                          ``x-oss-forbid-overwrite: true``: created only if absent)
other ``scheme://``       ``scheme://.../_kmsbeam_rotation.lock`` through Beam's FileSystems
                          (``s3://``, ``hdfs://``, ``gs://``): checked, then created; two
                          rotations starting in the same instant can both take it
========================  ===================================================================

The lock holds its owner as JSON: ``{"host", "pid", "since" (epoch seconds), "token"}``; the
random token tells our lock from a successor's. A second rotation of the same target fails at
once with one sentence naming the owner. A lock left by a rotation that died (``kill -9``, a
lost host) is broken only with ``break_lock=True`` (``--break-lock``), and only when it is
stale: its pid is dead on this host, or it is older than ``stale_after`` seconds (24 hours by
default, ``KMSBEAM_ROTATION_LOCK_STALE_HOURS``). A young lock of another host cannot be judged
from here: the message says to check that host and delete the lock by hand.

Caveats: two people breaking the same stale OSS lock at the same moment can both succeed (OSS
has no conditional delete); locally, breaking renames the lock away first and checks it took
the stale one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import secrets
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType

from kmsbeam import ConfigurationError
from kmsbeam.pipelines.rotate.lock_store import lock_store

__all__ = ["LOCK_NAME", "LockOwner", "RotationLock", "lock_location", "rotation_lock"]

LOCK_NAME = "_kmsbeam_rotation.lock"
_HOST = re.compile(r"[A-Za-z0-9_.-]{1,253}")
LOCAL_SUFFIX = ".kmsbeam-rotation.lock"
STALE_HOURS_ENV = "KMSBEAM_ROTATION_LOCK_STALE_HOURS"
DEFAULT_STALE_HOURS = 24.0


@dataclass(frozen=True)
class LockOwner:
    """Who holds a lock: host name, process id, since when (epoch seconds), random token."""

    host: str
    pid: int
    since: float
    token: str

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, data: bytes, fallback_since: float) -> LockOwner:
        """The owner in a lock object; an unreadable one (a crash mid-write) is nobody's."""
        try:
            doc = json.loads(data)
            owner = cls(str(doc["host"]), int(doc["pid"]), float(doc["since"]), str(doc["token"]))
            datetime.fromtimestamp(owner.since, timezone.utc)
        except (ValueError, KeyError, TypeError, OverflowError, OSError):
            return cls("an unknown host", 0, fallback_since, "")
        if not _HOST.fullmatch(owner.host):  # shown in messages: a host name, nothing else
            return cls("an unknown host", owner.pid, owner.since, owner.token)
        return owner

    def since_text(self) -> str:
        return datetime.fromtimestamp(self.since, timezone.utc).isoformat(timespec="seconds")


def lock_location(target: str) -> str:
    """Where the lock of a rotation writing ``target`` lives (see the module docstring)."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", target):  # never pathlib: oss:// -> oss:/
        return (target if target.endswith("/") else target + "/") + LOCK_NAME
    path = Path(target).absolute()
    if not path.name:  # the root directory: the lock goes inside
        return str(path / LOCK_NAME)
    return str(path.parent / (path.name + LOCAL_SUFFIX))


def rotation_lock(args: argparse.Namespace) -> contextlib.AbstractContextManager[object]:
    """The lock of a ``kmsbeam rotate`` run: on OUTPUT, or INPUT with ``--in-place``; none for
    ``--dry-run`` (it changes nothing). Breaking a stale lock is said on stderr."""
    target = args.output if args.output is not None else args.input
    if getattr(args, "dry_run", False) or not target:
        return contextlib.nullcontext()
    return RotationLock(target, break_lock=getattr(args, "break_lock", False),
                        notice=lambda line: print(line, file=sys.stderr))  # fmt: skip


def _stale_after() -> float:
    text = os.environ.get(STALE_HOURS_ENV)
    if not text:
        return DEFAULT_STALE_HOURS * 3600
    try:
        hours = float(text)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise ConfigurationError(f"{STALE_HOURS_ENV} must be a positive number of hours, e.g. 24")
    return hours * 3600


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's live process
    return True


class RotationLock:
    """The lock of one rotation target; a context manager (``acquire`` / ``release``).

    Args:
        target: the rotation's OUTPUT (or INPUT for ``--in-place``): a directory or ``oss://``.
        break_lock: take over a stale lock (see the module docstring).
        stale_after: seconds after which any lock is stale (default from the environment).
        clock: epoch seconds; for tests.
        notice: receives one line when a stale lock was broken.

    Raises (from ``acquire``):
        ConfigurationError: another rotation holds the lock, or it cannot be broken.
    """

    def __init__(
        self,
        target: str,
        *,
        break_lock: bool = False,
        stale_after: float | None = None,
        clock: Callable[[], float] = time.time,
        notice: Callable[[str], None] | None = None,
    ) -> None:
        self.target = target
        self.location = lock_location(target)
        self.break_lock = break_lock
        self.stale_after = _stale_after() if stale_after is None else stale_after
        self._clock = clock
        self._notice = notice
        self._store = lock_store(self.location)
        self.owner: LockOwner | None = None
        self.broke: LockOwner | None = None  # the stale lock this one replaced, if any

    def __enter__(self) -> RotationLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def _now(self) -> float:
        return float(self._clock())

    # -- the protocol ----------------------------------------------------------------------
    def acquire(self) -> LockOwner:
        """Take the lock or raise ``ConfigurationError`` saying who holds it."""
        mine = LockOwner(socket.gethostname(), os.getpid(), self._now(), secrets.token_hex(16))
        if self._create(mine):
            self.owner = mine
            return mine
        held = self._read()
        if held is None:  # released between our attempt and the read: try once more
            if self._create(mine):
                self.owner = mine
                return mine
            held = self._read() or LockOwner("an unknown host", 0, self._now(), "")
        if held.token == mine.token:  # our own put, answered as a conflict on its retry
            self.owner = mine
            return mine
        if not self.break_lock:
            raise self._held_error(held)
        self._check_breakable(held)
        self._remove(held)
        if not self._create(mine):
            raise self._held_error(self._read() or held)
        self.owner, self.broke = mine, held
        if self._notice is not None:
            self._notice(f"kmsbeam: broke the stale lock of {self.target} (pid {held.pid} on "
                         f"{held.host} since {held.since_text()})")  # fmt: skip
        return mine

    def release(self) -> None:
        """Remove the lock if it is still ours (not in a forked child; idempotent)."""
        owner, self.owner = self.owner, None
        if owner is None or owner.pid != os.getpid():
            return
        held = self._read()
        if held is not None and held.token == owner.token:
            self._delete()

    # -- judging a held lock ---------------------------------------------------------------
    def _local_host(self, owner: LockOwner) -> bool:
        return owner.host == socket.gethostname()

    def _held_error(self, held: LockOwner) -> ConfigurationError:
        where = f"pid {held.pid} on {held.host} since {held.since_text()}"
        if self._local_host(held) and not _pid_alive(held.pid):
            return ConfigurationError(
                f"a rotation of {self.target} ({where}) died without releasing its lock "
                f"{self.location}; pass --break-lock to take it over"
            )
        return ConfigurationError(
            f"another rotation of {self.target} is running ({where}); wait for it or pass "
            "--break-lock if it died"
        )

    def _check_breakable(self, held: LockOwner) -> None:
        age = self._now() - held.since
        if age > self.stale_after or not held.token:  # old, or never fully written (a crash)
            return
        if self._local_host(held):
            if not _pid_alive(held.pid):
                return
            raise ConfigurationError(
                f"the rotation of {self.target} holding the lock (pid {held.pid} on this host "
                f"since {held.since_text()}) is still running; stop it or wait for it rather "
                "than breaking its lock"
            )
        hours = self.stale_after / 3600
        raise ConfigurationError(
            f"the lock of {self.target} belongs to pid {held.pid} on another host, {held.host}, "
            f"since {held.since_text()} (less than {hours:g} hours), which kmsbeam cannot check "
            f"from here; make sure it is not running there, then delete {self.location}"
        )

    # -- the lock object (``lock_store``) -------------------------------------------------
    def _create(self, owner: LockOwner) -> bool:
        return self._store.create(owner.to_bytes())

    def _read(self) -> LockOwner | None:
        """The owner of the lock object, or None if there is none."""
        found = self._store.read()
        if found is None:
            return None
        data, modified = found
        return LockOwner.parse(data, self._now() if modified is None else modified)

    def _delete(self) -> None:
        self._store.delete()

    def _remove(self, stale: LockOwner) -> None:
        """Remove the stale lock judged above, and only it."""
        other = self._store.remove_stale(lambda data: LockOwner.parse(data, 0.0).token == stale.token)
        if other is not None:
            raise self._held_error(LockOwner.parse(other, 0.0))
