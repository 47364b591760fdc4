"""Fault injection: latency, throttling, server errors and dropped connections.

Faults are decided after a request is authenticated and before anything else happens, so a
faulted call changes no key, alias or tag (it is still audited). Each request draws one
number from a ``random.Random(seed)``: below ``drop_rate`` the connection is closed without
an answer; then ``throttle_rate`` answers 429 ``Rejected.Throttling`` with
``x-acs-retry-after`` (ms, so the SDK raises ``ThrottlingException``); then ``error_rate``
answers 503 ``ServiceUnavailableTemporary`` or 500 ``InternalFailure`` (a second draw picks
which). With a seed and one client at a time, the sequence of faults is reproducible.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from kmsbeam.emulator._errors import ApiError
from kmsbeam.errors import ConfigurationError

__all__ = ["DROP", "FaultInjector", "Faults"]

DROP = "drop"


@dataclass(frozen=True)
class Faults:
    """What to inject into every call.

    Args:
        latency_ms: added to every call before it is processed.
        throttle_rate: fraction of calls answered 429 ``Rejected.Throttling``.
        error_rate: fraction of calls answered 503 or 500.
        drop_rate: fraction of calls whose connection is closed without an answer.
        seed: makes the sequence of faults reproducible.
        retry_after_ms: the ``x-acs-retry-after`` of a throttled call.
        sleep: how latency is waited (``time.sleep``); injectable for tests.
    """

    latency_ms: float = 0.0
    throttle_rate: float = 0.0
    error_rate: float = 0.0
    drop_rate: float = 0.0
    seed: int | None = None
    retry_after_ms: int = 1000
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False, compare=False)

    def __post_init__(self) -> None:
        rates = (self.throttle_rate, self.error_rate, self.drop_rate)
        if not all(isinstance(r, (int, float)) and 0.0 <= r <= 1.0 for r in rates):
            raise ConfigurationError("fault rates are fractions between 0 and 1")
        if sum(rates) > 1.0 + 1e-9:
            raise ConfigurationError("throttle, error and drop rates add up to more than 1")
        if not isinstance(self.latency_ms, (int, float)) or not 0 <= self.latency_ms <= 600_000:
            raise ConfigurationError("latency is 0 to 600000 ms")
        if not isinstance(self.retry_after_ms, int) or self.retry_after_ms < 1:
            raise ConfigurationError("retry_after_ms is a positive whole number")

    @property
    def active(self) -> bool:
        return bool(self.latency_ms or self.throttle_rate or self.error_rate or self.drop_rate)


class FaultInjector:
    """Draws the fault of each call from one seeded generator (thread-safe)."""

    def __init__(self, faults: Faults) -> None:
        self.faults = faults
        self._random = random.Random(faults.seed)
        self._lock = threading.Lock()

    def inject(self) -> str | None:
        """Wait the latency, then raise the call's fault; ``DROP`` means close the connection."""
        f = self.faults
        if f.latency_ms:
            f.sleep(f.latency_ms / 1000)
        if not (f.drop_rate or f.throttle_rate or f.error_rate):
            return None
        with self._lock:
            draw, kind = self._random.random(), self._random.random()
        if draw < f.drop_rate:
            return DROP
        if draw < f.drop_rate + f.throttle_rate:
            raise ApiError(
                "Rejected.Throttling",
                "the request was throttled (injected fault); retry after x-acs-retry-after ms",
                retry_after_ms=f.retry_after_ms,
            )
        if draw < f.drop_rate + f.throttle_rate + f.error_rate:
            if kind < 0.5:
                raise ApiError(
                    "ServiceUnavailableTemporary", "the service is unavailable (injected fault)"
                )
            raise ApiError("InternalFailure", "an internal failure occurred (injected fault)")
        return None
