"""Bounded retries with exponential backoff and full jitter for KMS calls.

A call is tried at most ``max_attempts`` times and never past ``deadline_seconds`` after its
first attempt. Before attempt ``n + 1`` the caller waits a random time in
``[0, min(max_backoff, backoff * 2**(n - 1))]`` ("full jitter"), or, when the service said how
long to wait (Alibaba's ``x-acs-retry-after`` header, in milliseconds), at least that long. A
wait that would end past the deadline is not started: the call gives up at once.

After a call has given up, its key source presumes the endpoint down for ``cooldown_seconds``:
calls in that window make one attempt each instead of a full series, so a pipeline whose KMS
is down fails (or fills its dead-letter output) in seconds rather than waiting out every
record. The first success ends the window.

Defaults can be changed per process with environment variables, read when a key source is
opened (they are tuning, never secrets, so they stay out of key URIs):

===================================  =======  =========================================
variable                             default  meaning
===================================  =======  =========================================
``KMSBEAM_KMS_MAX_ATTEMPTS``         20       attempts per call, the first one included
``KMSBEAM_KMS_DEADLINE_SECONDS``     30       time budget of one call, waits included
``KMSBEAM_KMS_BACKOFF_SECONDS``      0.1      first backoff ceiling (doubles per retry)
``KMSBEAM_KMS_MAX_BACKOFF_SECONDS``  5        largest backoff ceiling
===================================  =======  =========================================

Why 20 attempts within 30 s: a call that gives up now fails its bundle and then the job (it no
longer dead-letters records), so a give-up must be what an outage looks like, not bad luck. With
40% of attempts failing (30% throttled, 5% dropped, 5% 5xx) six attempts gave up once in ~250
calls (0.4**6); the 30 s deadline lets ~16 attempts through at the backoff ceiling (0.4**16:
about once in 2.3 million calls), and a KMS that stays down still fails the job in ~30 s.
"""

from __future__ import annotations

import logging
import math
import os
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import TypeVar

from kmsbeam.errors import ConfigurationError

__all__ = ["ENV_VARS", "GaveUp", "Retrier", "RetryPolicy", "Transient"]

T = TypeVar("T")
_log = logging.getLogger("kmsbeam.alikms")

ENV_VARS = {
    "KMSBEAM_KMS_MAX_ATTEMPTS": "max_attempts",
    "KMSBEAM_KMS_DEADLINE_SECONDS": "deadline_seconds",
    "KMSBEAM_KMS_BACKOFF_SECONDS": "backoff_seconds",
    "KMSBEAM_KMS_MAX_BACKOFF_SECONDS": "max_backoff_seconds",
}


@dataclass(frozen=True)
class RetryPolicy:
    """How hard a KMS call is retried (see the module docstring).

    Attributes:
        max_attempts: attempts per call, the first one included (1 to 100).
        deadline_seconds: the time budget of one call, waits included.
        backoff_seconds: the backoff ceiling before the first retry; it doubles per retry.
        max_backoff_seconds: the largest backoff ceiling.
        cooldown_seconds: after a call gave up, how long calls make a single attempt.

    Raises:
        ConfigurationError: a bound that is not a finite, non-negative number (attempts: a
            whole number; the deadline: positive).
    """

    max_attempts: int = 20
    deadline_seconds: float = 30.0
    backoff_seconds: float = 0.1
    max_backoff_seconds: float = 5.0
    cooldown_seconds: float = 10.0

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise ConfigurationError("max_attempts is a whole number of at least 1")
        if not 1 <= self.max_attempts <= 100:
            raise ConfigurationError("max_attempts is between 1 and 100")
        for name in ("deadline_seconds", "backoff_seconds", "max_backoff_seconds",
                     "cooldown_seconds"):  # fmt: skip
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigurationError(f"{name} is a number of seconds")
            if not math.isfinite(value) or value < 0 or (name == "deadline_seconds" and value == 0):
                raise ConfigurationError(f"{name} must be a finite, non-negative number")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RetryPolicy:
        """The defaults, overridden by the ``KMSBEAM_KMS_*`` variables that are set."""
        env = os.environ if environ is None else environ
        changes: dict[str, float | int] = {}
        for var, field_name in ENV_VARS.items():
            text = env.get(var, "").strip()
            if not text:
                continue
            try:
                changes[field_name] = int(text) if field_name == "max_attempts" else float(text)
            except ValueError:
                raise ConfigurationError(f"{var} must be a number, not {text!r}") from None
        try:
            return replace(cls(), **changes)  # type: ignore[arg-type]
        except ConfigurationError as exc:
            names = ", ".join(v for v, f in ENV_VARS.items() if f in changes)
            raise ConfigurationError(f"bad KMS retry setting in {names}: {exc}") from None


class Transient(Exception):
    """Raised (``from`` the underlying error) by an attempt that may succeed if tried again.

    Args:
        reason: one line for the final error message (no secrets, no key material).
        retry_after: seconds the service asked the caller to wait, if it did.
        code: the service's error code, if it answered.
        request_id: the service's request id, if it answered.
    """

    def __init__(
        self,
        reason: str,
        *,
        retry_after: float | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.code = code
        self.request_id = request_id


class GaveUp(Exception):
    """Every allowed attempt failed transiently; ``last`` is the final failure."""

    def __init__(self, last: Transient, attempts: int, elapsed: float, why: str) -> None:
        super().__init__(last.reason)
        self.last = last
        self.attempts = attempts
        self.elapsed = elapsed
        self.why = why


class Retrier:
    """Runs attempts under a ``RetryPolicy``; thread-safe; counts attempts and retries.

    Args:
        policy: the bounds.
        sleep, clock, random: ``time.sleep``, ``time.monotonic`` and ``random.random`` unless
            given (tests inject them so that no test really sleeps).
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random.random,
    ) -> None:
        self.policy = policy
        self._sleep = sleep
        self._clock = clock
        self._random = random
        self._lock = threading.Lock()
        self._down_until: float | None = None
        self.attempts = 0
        self.retries = 0
        self.gave_up = 0

    def backoff(self, retry: int, retry_after: float | None) -> float:
        """The wait before retry number ``retry`` (1 for the second attempt)."""
        p = self.policy
        ceiling = min(p.max_backoff_seconds, p.backoff_seconds * 2.0 ** min(retry - 1, 60))
        with self._lock:
            jitter = self._random()
        delay = jitter * ceiling
        return max(delay, retry_after) if retry_after is not None else delay

    @property
    def down(self) -> bool:
        """Whether a recent call gave up (calls make a single attempt until it passes)."""
        with self._lock:
            return self._down_until is not None and self._clock() < self._down_until

    def run(self, attempt: Callable[[], T]) -> T:
        """Call ``attempt`` until it returns, raises a non-``Transient`` error, or the bounds
        are reached (then ``GaveUp``, chained to the last ``Transient``)."""
        p = self.policy
        start = self._clock()
        was_down = self.down
        limit = 1 if was_down else p.max_attempts
        tried = 0
        while True:
            tried += 1
            with self._lock:
                self.attempts += 1
            try:
                result = attempt()
            except Transient as exc:
                why, wait = self._next(tried, limit, exc, start, was_down)
                if why:
                    with self._lock:
                        self.gave_up += 1
                        self._down_until = self._clock() + p.cooldown_seconds
                    raise GaveUp(exc, tried, self._clock() - start, why) from exc
                _log.debug("KMS call failed (%s); retry %d in %.3f s", exc.reason, tried, wait)
                self._sleep(wait)
                with self._lock:
                    self.retries += 1
                continue
            if self._down_until is not None:
                with self._lock:
                    self._down_until = None
            return result

    def _next(
        self, tried: int, limit: int, exc: Transient, start: float, was_down: bool
    ) -> tuple[str, float]:
        """Why to give up now (``""``: retry) and how long to wait before the retry."""
        plural = "s" if tried > 1 else ""
        if tried >= limit:
            if was_down and self.policy.max_attempts > 1:
                return "1 attempt: the endpoint failed recently, so no retries for now", 0.0
            return f"{tried} attempt{plural}", 0.0
        wait = self.backoff(tried, exc.retry_after)
        elapsed = self._clock() - start
        if elapsed + wait > self.policy.deadline_seconds:
            deadline = self.policy.deadline_seconds
            return f"{tried} attempt{plural} in {elapsed:.1f} s (deadline {deadline:g} s)", 0.0
        return "", wait
