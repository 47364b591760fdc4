"""The replay window: signature nonces seen in the last 15 minutes, kept across restarts.

Each accepted request's (access key, nonce) is remembered until its ``x-acs-date`` leaves the
signature window, in memory and, when the emulator has a data directory, in
``DATA/nonces.log`` (mode 0600): one line ``EXPIRES DIGEST`` per nonce, where DIGEST is the
first 128 bits of SHA-256 over ``access key id \\0 nonce`` (the nonce itself is not kept). The
line is written before the request is served, so a request captured on the wire and replayed
after a restart (or a crash of the process) is still ``SignatureNonceUsed``. Lines are not
fsynced: a power loss may forget the last ones. At start the file is read, expired lines are
dropped and it is rewritten; it is rewritten again whenever dead lines outnumber live ones.

Memory and the file are bounded by the request rate over the window; past ``max_entries``
live entries new requests are throttled (``Rejected.Throttling``), never a live nonce
forgotten.
"""

from __future__ import annotations

import hashlib
import heapq
import logging
import os
import stat
import threading
from pathlib import Path

from kmsbeam.emulator._errors import ApiError
from kmsbeam.errors import ConfigurationError

__all__ = ["NONCES_FILENAME", "NonceCache"]

NONCES_FILENAME = "nonces.log"
_log = logging.getLogger("kmsbeam.emulator")
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _digest(entry: str) -> str:
    return hashlib.sha256(entry.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class NonceCache:
    """Nonces seen per access key, each kept until its request's date leaves the window.

    Args:
        max_entries: live nonces remembered at most.
        path: the file that keeps them across restarts; ``None`` keeps them in memory only.
        now: the current time (seconds since the epoch), to drop expired lines at start.
    """

    def __init__(self, max_entries: int, path: Path | None = None, now: float = 0.0) -> None:
        self._max = max_entries
        self._expiry: dict[str, float] = {}
        self._heap: list[tuple[float, str]] = []
        self._lock = threading.Lock()
        self._path = path
        self._fd: int | None = None
        self._dead = 0  # lines in the file that are no longer live
        if path is not None:
            for expires, digest in self._load(path):
                if expires > now and digest not in self._expiry:
                    self._expiry[digest] = expires
                    self._heap.append((expires, digest))
            heapq.heapify(self._heap)
            self._rewrite()

    def __len__(self) -> int:
        return len(self._expiry)

    def add(self, entry: str, expires: float, now: float) -> bool:
        """Remember ``entry`` until ``expires``; ``False`` if it is already remembered."""
        digest = _digest(entry)
        with self._lock:
            heap, expiry = self._heap, self._expiry
            while heap and heap[0][0] <= now:
                _, old = heapq.heappop(heap)
                if expiry.get(old, now + 1) <= now:
                    del expiry[old]
                    self._dead += 1
            if digest in expiry:
                return False
            if len(expiry) >= self._max:
                raise ApiError(
                    "Rejected.Throttling",
                    "too many requests in the signature window; retry later",
                    retry_after_ms=1000,
                )
            if self._fd is not None:
                self._append(f"{int(expires) + 1} {digest}\n".encode("ascii"))
            expiry[digest] = expires
            heapq.heappush(heap, (expires, digest))
            if self._fd is not None and self._dead > max(1000, len(expiry)):
                try:
                    self._rewrite()
                except ConfigurationError as exc:  # keep appending to the old file
                    _log.error("%s", exc)
            return True

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    # -- the file -------------------------------------------------------------------------
    def _append(self, line: bytes) -> None:
        assert self._fd is not None
        try:
            if os.write(self._fd, line) != len(line):
                raise OSError("short write")
        except OSError as exc:
            _log.error("cannot record a signature nonce in %s: %s", self._path,
                       getattr(exc, "strerror", None) or exc)  # fmt: skip
            raise ApiError(
                "ServiceUnavailableTemporary", "the emulator cannot record the request; retry"
            ) from None

    @staticmethod
    def _load(path: Path) -> list[tuple[float, str]]:
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW)
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise ConfigurationError(f"cannot read the replay window {path}: "
                                     f"{exc.strerror}") from None  # fmt: skip
        with os.fdopen(fd, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                raise ConfigurationError(f"the replay window {path} is not a regular file")
            text = handle.read().decode("ascii", "replace")
        out = []
        for line in text.splitlines():
            expires, _, digest = line.partition(" ")
            if expires.isdecimal() and len(digest) == 32:
                out.append((float(expires), digest))
        return out

    def _rewrite(self) -> None:
        """Write the live entries to a new file and append to it from now on."""
        assert self._path is not None
        temp = self._path.with_name(self._path.name + ".tmp")
        try:
            temp.unlink(missing_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.writelines(
                    f"{int(e) + 1} {d}\n".encode("ascii") for d, e in self._expiry.items()
                )
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self._path)
            new = os.open(self._path, os.O_WRONLY | os.O_APPEND | _NOFOLLOW)
        except OSError as exc:
            raise ConfigurationError(f"cannot write the replay window {self._path}: "
                                     f"{exc.strerror}") from None  # fmt: skip
        if self._fd is not None:
            os.close(self._fd)
        self._fd, self._dead = new, 0
