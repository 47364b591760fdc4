"""Coalescing, bounded memos of rewrapped value headers (old header -> new header, status).

A rotation makes one key-source call per distinct data key: values of one data key share a
header, so the first value's rewrap is remembered and concurrent values wait for it. Headers
hold wrapped keys and commitments only (no key material), so remembering them is safe.

A failed rewrap is remembered too, for ``failure_ttl_seconds`` (``kmsbeam.failures``; 10 s by
default): values of that header fail at once with a fresh copy of the error instead of one
ReEncrypt (and Decrypt) call each.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from kmsbeam import process
from kmsbeam.errors import KeySourceError, KmsBeamError
from kmsbeam.failures import FailureMemory, copy_error, failure_ttl

__all__ = ["RewrapMemo", "shared_memo"]


class _Flight:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: tuple[bytes, str] | None = None
        self.error: KmsBeamError | None = None  # a template: waiters raise copies of it


class RewrapMemo:
    """Value headers already handled (old header -> new header and status), LRU, thread-safe.

    Concurrent misses for one header coalesce: the first caller runs the rewrap, the others
    wait for its result (or a fresh copy of its error). A failure is remembered for
    ``failure_ttl_seconds`` (default ``$KMSBEAM_FAILURE_TTL_SECONDS``, else 10 s). Share one per
    target, context and filter in a process (``shared_memo``) so a worker makes one call per
    data key. Headers hold wrapped keys and commitments only: no key material.
    """

    def __init__(self, max_entries: int = 65536, *, failure_ttl_seconds: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self._max = max_entries
        ttl = failure_ttl() if failure_ttl_seconds is None else failure_ttl_seconds
        self.failures = FailureMemory(ttl, 4096, clock=clock)
        self._lock = threading.Lock()
        self._done: OrderedDict[bytes, tuple[bytes, str]] = OrderedDict()
        self._flights: dict[bytes, _Flight] = {}

    def __len__(self) -> int:
        return len(self._done)

    def get(self, header: bytes, run: Callable[[], tuple[bytes, str]]) -> tuple[bytes, str]:
        """The remembered result for ``header``, else ``run()``'s (once for all callers).

        Raises:
            what ``run()`` raised: a fresh copy for every caller, and again without running it
            while the failure is remembered.
        """
        remembered: KmsBeamError | None = None
        with self._lock:
            done = self._done.get(header)
            if done is not None:
                self._done.move_to_end(header)
                return done
            flight = self._flights.get(header)
            leader = flight is None
            if flight is None:
                remembered = self.failures.recall(header)
                if remembered is None:
                    flight = self._flights[header] = _Flight()
        if remembered is not None:
            raise remembered
        assert flight is not None
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise copy_error(flight.error)
            assert flight.result is not None
            return flight.result
        failed: KmsBeamError | None = None
        try:
            flight.result = result = run()
            with self._lock:
                self._done[header] = result
                while len(self._done) > self._max:
                    self._done.popitem(last=False)
        except KmsBeamError as exc:
            failed = flight.error = self.failures.remember(header, exc)
        except BaseException as exc:
            flight.error = KeySourceError(f"rewrapping a data key failed ({type(exc).__name__})")
            raise
        finally:
            with self._lock:
                self._flights.pop(header, None)
            flight.done.set()
        if failed is not None:  # raised outside the handler: no chain to the original error
            raise failed
        return result


def shared_memo(*key: Any) -> RewrapMemo:
    """The process-wide memo for ``key`` (e.g. target URI, context, filter);
    ``kmsbeam.process``: a fresh one in a forked child."""
    return process.shared("rotation.memo", key, RewrapMemo)
