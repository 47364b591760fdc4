"""The KMS call budget: a per-process token bucket that caps remote KMS calls per second.

Alibaba Cloud KMS enforces a fixed per-account quota of API calls per second. A pipeline stays
under it when every worker process caps its own calls::

    fleet calls/s  <=  worker processes x qps  <=  the account's quota

A ``KmsBudget`` is the picklable setting (``qps`` and a small ``burst``) that transforms carry
to the workers; ``install_kms_budget`` puts it in force in a process (DoFns call it in
``setup()``), and every remote KMS call of the ``alibaba-kms://`` and ``kms-emulator://`` key
sources, each retry included, takes one token through ``acquire_kms_call`` first. The
``local:`` and ``pkcs11:`` sources are not behind the budget: they are not a KMS quota.

The bucket::

    tokens  = min(burst, tokens + (now - last) x qps)     refilled continuously
    acquire = take one token; when none is left, reserve the next one and sleep until it is due

Reservations are made under a lock and the sleep happens outside it, so waiting threads are
served in arrival order and never spin. One bucket per limit per process (a registry): every
key source of a worker process draws from the same bucket. When several limits are installed
in one process (two transforms with different ``kms_qps``), the strictest is in force for
all calls, since they all count against the same account quota.

Fork safety (``kmsbeam.process``): a forked child keeps the installed limits but starts with
fresh buckets (full burst, new locks), as a new worker; it never shares token state with its
parent.

Waits are counted per process (``take_waits``) so the Beam layer can report them as metrics.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from kmsbeam import process
from kmsbeam.errors import ConfigurationError

__all__ = [
    "KmsBudget",
    "TokenBucket",
    "acquire_kms_call",
    "active_kms_budget",
    "clear_kms_budgets",
    "default_burst",
    "install_kms_budget",
    "kms_budget",
    "take_waits",
    "uninstall_kms_budget",
]


def default_burst(qps: float) -> int:
    """The default burst: a tenth of a second of calls, at least 1 (``qps=50`` -> 5)."""
    return max(1, math.ceil(qps / 10))


@dataclass(frozen=True)
class KmsBudget:
    """A KMS call limit for one worker process: picklable, no secrets.

    Args:
        qps: remote KMS calls per second this process may make (> 0, finite).
        burst: calls that may go out at once after an idle spell (default
            ``default_burst(qps)``; at least 1).

    Raises:
        ConfigurationError: a ``qps`` or ``burst`` that is not a positive finite number.
    """

    qps: float
    burst: int = 0  # 0: default_burst(qps), filled in by __post_init__

    def __post_init__(self) -> None:
        qps = self.qps
        if isinstance(qps, bool) or not isinstance(qps, (int, float)) or not math.isfinite(qps):
            raise ConfigurationError("the KMS call budget (kms_qps) is a positive number of calls/s")
        if qps <= 0:
            raise ConfigurationError("the KMS call budget (kms_qps) must be greater than 0")
        burst = self.burst
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 0:
            raise ConfigurationError("the KMS call burst is a whole number of at least 1")
        object.__setattr__(self, "qps", float(qps))
        if burst == 0:
            object.__setattr__(self, "burst", default_burst(float(qps)))

    def install(self) -> TokenBucket:
        """``install_kms_budget(self)``."""
        return install_kms_budget(self)

    def uninstall(self) -> None:
        """``uninstall_kms_budget(self)``."""
        uninstall_kms_budget(self)


def kms_budget(qps: float | KmsBudget | None) -> KmsBudget | None:
    """A ``KmsBudget`` from a ``kms_qps`` argument (``None``: no limit); validates it."""
    if qps is None or isinstance(qps, KmsBudget):
        return qps
    return KmsBudget(qps)


class TokenBucket:
    """A thread-safe token bucket of ``rate`` tokens per second holding at most ``burst``.

    Args:
        rate: tokens added per second.
        burst: the most tokens held (the bucket starts full).
        clock, sleep: ``time.monotonic`` and ``time.sleep`` unless given (tests inject them).

    Attributes (read under no lock; counts of this bucket since it was built):
        calls: tokens handed out.
        waits: acquisitions that had to wait.
        waited_seconds: time reserved for those waits.
    """

    def __init__(
        self,
        rate: float,
        burst: int = 1,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not (isinstance(rate, (int, float)) and math.isfinite(rate) and rate > 0):
            raise ValueError("rate must be a positive finite number")
        if isinstance(burst, bool) or not isinstance(burst, int) or burst < 1:
            raise ValueError("burst must be a whole number of at least 1")
        self.rate = float(rate)
        self.burst = burst
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._tokens = float(burst)
        self._last = clock()
        self.calls = 0
        self.waits = 0
        self.waited_seconds = 0.0

    def __repr__(self) -> str:
        return f"TokenBucket(rate={self.rate:g}/s, burst={self.burst})"

    def _take(self) -> float:
        """Take one token (possibly on credit); the seconds until it is due. Under the lock."""
        now = self._clock()
        elapsed = now - self._last
        if elapsed > 0:
            self._tokens = min(float(self.burst), self._tokens + elapsed * self.rate)
            self._last = now
        self._tokens -= 1.0
        self.calls += 1
        if self._tokens >= 0:
            return 0.0
        wait = -self._tokens / self.rate
        self.waits += 1
        self.waited_seconds += wait
        return wait

    def acquire(self) -> float:
        """Take one token, blocking until it is due; returns the seconds waited (0.0: none)."""
        with self._lock:
            wait = self._take()
        if wait > 0:
            self._sleep(wait)
        return wait

    def try_acquire(self) -> bool:
        """Take one token if one is free now, without waiting."""
        with self._lock:
            now = self._clock()
            tokens = min(float(self.burst), self._tokens + max(0.0, now - self._last) * self.rate)
            if tokens < 1.0:
                return False
            self._take()
            return True


# -- the installed limits and this process's buckets ------------------------------------------
class _Buckets:
    """This process's buckets, wait counts and lock (``kmsbeam.process``: a forked child makes
    its own, with full buckets, and never shares token state with its parent)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[KmsBudget, TokenBucket] = {}
        self.waits = 0
        self.seconds = 0.0

    def bucket(self, budget: KmsBudget) -> TokenBucket:
        bucket = self.buckets.get(budget)
        if bucket is None:  # setdefault is atomic: racing threads all get the one that stays
            bucket = self.buckets.setdefault(budget, TokenBucket(budget.qps, budget.burst))
        return bucket


def _here() -> _Buckets:
    return process.shared("keys.budget", None, _Buckets)


_installed: dict[KmsBudget, int] = {}  # limit -> how many installers hold it; a child keeps them
_active: KmsBudget | None = None  # the strictest installed limit


def _refresh() -> None:
    """Put the strictest installed limit in force (under ``_here().lock``)."""
    global _active
    _active = min(_installed, key=lambda b: (b.qps, b.burst)) if _installed else None


def install_kms_budget(budget: KmsBudget | float) -> TokenBucket:
    """Put a KMS call limit in force in this process; returns the shared bucket of that limit.

    Installs are counted: each one is undone by one ``uninstall_kms_budget`` (a DoFn installs
    in ``setup()`` and uninstalls in ``teardown()``). Installing the same limit again reuses
    its bucket. With several limits installed, the strictest governs every call.

    Raises:
        ConfigurationError: a ``qps`` that is not a positive finite number.
    """
    limit = budget if isinstance(budget, KmsBudget) else KmsBudget(budget)
    here = _here()
    with here.lock:
        _installed[limit] = _installed.get(limit, 0) + 1
        _refresh()
    return here.bucket(limit)


def uninstall_kms_budget(budget: KmsBudget | float) -> None:
    """Undo one ``install_kms_budget`` of this limit (a limit not installed is ignored)."""
    limit = budget if isinstance(budget, KmsBudget) else KmsBudget(budget)
    with _here().lock:
        held = _installed.get(limit, 0)
        if held <= 1:
            _installed.pop(limit, None)
        else:
            _installed[limit] = held - 1
        _refresh()


def clear_kms_budgets() -> None:
    """Remove every limit and bucket of this process, and forget pending wait counts (tests)."""
    with _here().lock:
        _installed.clear()
        _refresh()
    process.discard("keys.budget")


def active_kms_budget() -> KmsBudget | None:
    """The limit in force in this process, or ``None`` when KMS calls are not limited."""
    return _active


def acquire_kms_call() -> float:
    """Take a token for one remote KMS call (blocking while the budget is spent).

    Returns the seconds waited; ``0.0`` at once when no limit is installed. Key sources call
    this before every attempt of every remote call, retries included.
    """
    limit = _active
    if limit is None:
        return 0.0
    here = _here()
    waited = here.bucket(limit).acquire()
    if waited > 0:
        with here.lock:
            here.waits += 1
            here.seconds += waited
    return waited


def take_waits() -> tuple[int, float]:
    """``(waits, seconds)`` spent waiting on the budget in this process since the last call
    (then reset): the Beam layer adds them to its counters, so every wait is counted once."""
    here = _here()
    if not here.waits:  # the common case, without the lock
        return 0, 0.0
    with here.lock:
        waits, seconds = here.waits, here.seconds
        here.waits, here.seconds = 0, 0.0
    return waits, seconds
