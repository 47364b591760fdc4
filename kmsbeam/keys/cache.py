"""The decrypt-side data-key cache: unwrapped data keys (as ciphers) by wrapped-key bytes.

LRU with a time-to-live, safe to share between threads, one per worker process and
time-to-live (``shared_cache(ttl)``). The time-to-live bounds the revocation latency on the
decrypt side: after DisableKey (or a policy change) a worker keeps decrypting values of a data key
it already unwrapped for at most that long. Default ``DEFAULT_KEY_CACHE_TTL`` = 60 s: one Decrypt
per data key per worker per minute is negligible next to a job's records, and a kill switch that
takes effect within a minute is what an incident needs (the common advice is to cache data keys
for seconds to minutes, never hours; it was 300 s). Concurrent misses for the same wrapped key
coalesce into one call to the key source: the first caller unwraps, the others wait for its
result (or its error).

Entries hold a ``KeyCipher`` (cipher and key commitment), never the DEK bytes; the cache never
pickles.

A failed unwrap is remembered too (``kmsbeam.failures``): for ``failure_ttl_seconds`` (10 s by
default) the same wrapped key and context fail at once with a fresh copy of the error, without a
call, so a denied or disabled key costs one call per data key per worker process, not one per
record. Waiters on a failed miss get fresh copies as well: no exception object is ever shared.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NoReturn


from kmsbeam import process
from kmsbeam.formats.envelope import KeyCipher
from kmsbeam.errors import KeySourceError, KmsBeamError
from kmsbeam.failures import FailureMemory, copy_error, failure_ttl
from kmsbeam.keys.calls import count_call
from kmsbeam.keys.source import KeySource, canonical_context

__all__ = ["DEFAULT_KEY_CACHE_TTL", "DataKeyCache", "shared_cache"]

DEFAULT_KEY_CACHE_TTL = 60.0

_Key = tuple[str, bytes, bytes]


class _Flight:
    __slots__ = ("cipher", "done", "error", "expires")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.cipher: KeyCipher | None = None
        self.error: KmsBeamError | None = None  # a template: waiters raise copies of it
        self.expires = 0.0


class DataKeyCache:
    """LRU + TTL cache of data-key ciphers.

    Args:
        max_entries: how many distinct data keys to keep (least recently used go first).
        ttl_seconds: how long an unwrapped data key may be reused before unwrapping again.
        clock: monotonic seconds, injectable for tests.
        failure_ttl_seconds: how long a failed unwrap is remembered (default
            ``$KMSBEAM_FAILURE_TTL_SECONDS``, else 10 s; 0: not remembered).
    """

    def __init__(
        self,
        max_entries: int = 1024,
        ttl_seconds: float = DEFAULT_KEY_CACHE_TTL,
        *,
        clock: Callable[[], float] = time.monotonic,
        failure_ttl_seconds: float | None = None,
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        check_ttl(ttl_seconds, "ttl_seconds")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[_Key, tuple[float, KeyCipher]] = OrderedDict()
        self._flights: dict[_Key, _Flight] = {}
        ttl = failure_ttl() if failure_ttl_seconds is None else failure_ttl_seconds
        self.failures = FailureMemory(ttl, max(max_entries, 16), clock=clock)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def __repr__(self) -> str:
        return f"DataKeyCache(entries={len(self)}, hits={self.hits}, misses={self.misses})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a DataKeyCache holds data keys and never pickles")

    def clear(self) -> None:
        """Forget every data key and every remembered failure."""
        with self._lock:
            self._entries.clear()
        self.failures.clear()

    def cipher(
        self,
        source: KeySource,
        wrapped: bytes,
        context: Mapping[str, str] | None = None,
        *,
        context_key: bytes | None = None,
        on_call: Callable[[], None] | None = None,
    ) -> KeyCipher:
        """The cipher for a wrapped key, unwrapping it through ``source`` on a miss (see
        ``entry``)."""
        return self.entry(source, wrapped, context, context_key=context_key, on_call=on_call)[0]

    def now(self) -> float:
        """The cache's clock (monotonic seconds), against which ``entry`` expiries count."""
        return self._clock()

    def entry(
        self,
        source: KeySource,
        wrapped: bytes,
        context: Mapping[str, str] | None = None,
        *,
        context_key: bytes | None = None,
        on_call: Callable[[], None] | None = None,
    ) -> tuple[KeyCipher, float]:
        """The cipher for a wrapped key, unwrapping it through ``source`` on a miss, and the
        time (``now()``) until which it may be reused.

        ``on_call`` runs once per call actually made to the key source (for metrics).
        ``context_key`` is ``canonical_context(context)`` precomputed by a hot caller.

        Raises:
            whatever ``source.decrypt_data_key`` raises (a fresh copy for every caller; the same
            failure again, without a call, while it is remembered).
        """
        ctx = canonical_context(context) if context_key is None else context_key
        key = (source.uri, wrapped, ctx)
        now = self._clock()
        remembered: KmsBeamError | None = None
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None and entry[0] > now:
                self._entries.move_to_end(key)
                self.hits += 1
                return entry[1], entry[0]
            flight = self._flights.get(key)
            leader = flight is None
            if flight is None:
                remembered = self.failures.recall(key)
                if remembered is None:
                    flight = self._flights[key] = _Flight()
                    self.misses += 1
        if remembered is not None:
            raise remembered
        assert flight is not None
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise copy_error(flight.error)
            assert flight.cipher is not None
            return flight.cipher, flight.expires
        failed: KmsBeamError | None = None
        try:
            count_call("kms_calls_decrypt")
            if on_call is not None:
                on_call()
            cipher = KeyCipher.from_dek(source.decrypt_data_key(wrapped, context))
            flight.cipher = cipher
            flight.expires = expires = self._clock() + self.ttl_seconds
            with self._lock:
                self._entries[key] = (expires, cipher)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
        except KmsBeamError as exc:
            failed = flight.error = self.failures.remember(key, exc)
        except BaseException as exc:
            flight.error = KeySourceError(f"unwrapping a data key failed ({type(exc).__name__})")
            raise
        finally:
            with self._lock:
                self._flights.pop(key, None)
            flight.done.set()
        if failed is not None:  # raised outside the handler: no chain to the original error
            raise failed
        return cipher, expires


def shared_cache(ttl_seconds: float | None = None) -> DataKeyCache:
    """The process-wide cache for a time-to-live (default ``DEFAULT_KEY_CACHE_TTL``);
    ``kmsbeam.process``: fresh ones in a forked child, which never sees its parent's keys.

    Raises:
        ValueError: a time-to-live that is not a positive finite number.
    """
    ttl = DEFAULT_KEY_CACHE_TTL if ttl_seconds is None else check_ttl(ttl_seconds)
    return process.shared("keys.cache", ttl, lambda: DataKeyCache(ttl_seconds=ttl))


def check_ttl(seconds: float, what: str = "the data-key cache time-to-live") -> float:
    """``seconds`` as a float when it is a positive finite number of seconds.

    Raises:
        ValueError: anything else (bool, NaN, infinity, 0 or less).
    """
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)):
        raise ValueError(f"{what} is a number of seconds")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{what} must be a positive, finite number of seconds")
    return float(seconds)
