"""Remembered key-source failures, and the fresh, detail-free errors raised from them.

A key source that refuses a call (access denied, key disabled, a wrapped key it does not know)
or cannot be reached refuses the next call for the same data key too. Without memory a worker
asks again for every record: 1,000 records under one data key made 1,002 billed Decrypt calls
and a flood of denials in the audit trail. ``FailureMemory`` remembers a failure per call key
(wrapped key and context on decrypt and rewrap; key URI and context on GenerateDataKey) for
``ttl_seconds`` (default ``DEFAULT_FAILURE_TTL``, or ``$KMSBEAM_FAILURE_TTL_SECONDS``), so a
worker process makes one failed call per data key in that window.

Only the failure's class, message and code are kept, never the exception object: every raise
from memory is a new exception with no ``__cause__``, no ``__context__`` and a traceback that
starts at the raise, so an error never accumulates frames (or the records in them) across
records, and setting ``field`` on one error never changes another.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from kmsbeam import process
from kmsbeam.errors import ConfigurationError, KeySourceError, KmsBeamError

__all__ = ["DEFAULT_FAILURE_TTL", "FAILURE_TTL_ENV", "FailureMemory", "fresh_error", "shared_failures"]

DEFAULT_FAILURE_TTL = 10.0
FAILURE_TTL_ENV = "KMSBEAM_FAILURE_TTL_SECONDS"

_Kept = tuple[float, type[KmsBeamError], str, "str | None"]


def fresh_error(cls: type[KmsBeamError], message: str, code: str | None = None) -> KmsBeamError:
    """A new ``cls`` error with ``message`` and ``code`` (no cause, no context, no traceback).

    Classes whose constructor takes other arguments fall back to ``KeySourceError``."""
    try:
        error = cls(message, code=code)
    except TypeError:
        error = KeySourceError(message, code=code)
    return error


def copy_error(exc: KmsBeamError) -> KmsBeamError:
    """A fresh copy of ``exc`` (same class, message and code; ``field`` not copied)."""
    return fresh_error(type(exc), str(exc), exc.code)


def failure_ttl(environ: dict[str, str] | None = None) -> float:
    """``$KMSBEAM_FAILURE_TTL_SECONDS`` when set, else ``DEFAULT_FAILURE_TTL``.

    Raises:
        ConfigurationError: a value that is not a finite number of at least 0 (0: no memory).
    """
    text = (os.environ if environ is None else environ).get(FAILURE_TTL_ENV, "").strip()
    if not text:
        return DEFAULT_FAILURE_TTL
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{FAILURE_TTL_ENV} is a number of seconds of at least 0")
    return value


class FailureMemory:
    """Failures by call key for ``ttl_seconds``; thread-safe; bounded (oldest first out).

    Args:
        ttl_seconds: how long a failure is remembered (0: never).
        max_entries: how many call keys to remember at most.
        clock: monotonic seconds, injectable for tests.
    """

    def __init__(
        self,
        ttl_seconds: float = DEFAULT_FAILURE_TTL,
        max_entries: int = 4096,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not (isinstance(ttl_seconds, (int, float)) and math.isfinite(ttl_seconds) and ttl_seconds >= 0):
            raise ValueError("ttl_seconds must be a finite number of at least 0")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl_seconds = float(ttl_seconds)
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()
        self._kept: OrderedDict[Hashable, _Kept] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._kept)

    def __repr__(self) -> str:
        return f"FailureMemory(ttl={self.ttl_seconds:g} s, entries={len(self)})"

    def recall(self, key: Hashable) -> KmsBeamError | None:
        """A fresh error for the failure remembered for ``key``, or ``None`` (none, or expired)."""
        with self._lock:
            kept = self._kept.get(key)
            if kept is None:
                return None
            if kept[0] <= self._clock():
                del self._kept[key]
                return None
        return fresh_error(kept[1], kept[2], kept[3])

    def remember(self, key: Hashable, exc: KmsBeamError) -> KmsBeamError:
        """Remember ``exc`` for ``key`` (its class, message and code only); returns a fresh copy
        to raise in its place."""
        if self.ttl_seconds > 0:
            kept = (self._clock() + self.ttl_seconds, type(exc), str(exc), exc.code)
            with self._lock:
                self._kept[key] = kept
                self._kept.move_to_end(key)
                while len(self._kept) > self._max:
                    self._kept.popitem(last=False)
        return copy_error(exc)

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._kept.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._kept.clear()


def shared_failures() -> FailureMemory:
    """The process-wide memory of GenerateDataKey failures (``kmsbeam.process``: a fresh one
    in a forked child), remembering for ``failure_ttl()`` seconds."""
    return process.shared("failures", None, lambda: FailureMemory(failure_ttl()))
