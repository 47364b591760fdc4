"""Bounded retries: backoff with full jitter, x-acs-retry-after, deadline, the cooldown after
giving up; against injected throttling, 5xx and dropped connections (seeded, so the fault
sequence is the same every run) with exact results. No test really sleeps between retries."""

from __future__ import annotations

import random
import socket
from collections.abc import Iterator

import pytest

from kmsbeam import ConfigurationError, KeySourceUnavailableError
from kmsbeam.alikms import AlibabaKmsKeySource, RetryPolicy
from kmsbeam.alikms._retry import GaveUp, Retrier, Transient
from kmsbeam.emulator import EmulatorServer, Faults
from tests.alikms.conftest import FakeTime, audit_events, make_source


def test_policy_defaults_env_and_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RetryPolicy.from_env({}) == RetryPolicy()
    env = {
        "KMSBEAM_KMS_MAX_ATTEMPTS": "3",
        "KMSBEAM_KMS_DEADLINE_SECONDS": "2.5",
        "KMSBEAM_KMS_BACKOFF_SECONDS": "0.01",
        "KMSBEAM_KMS_MAX_BACKOFF_SECONDS": "0.05",
    }
    assert RetryPolicy.from_env(env) == RetryPolicy(3, 2.5, 0.01, 0.05)
    monkeypatch.setenv("KMSBEAM_KMS_MAX_ATTEMPTS", "4")
    assert AlibabaKmsKeySource("alibaba-kms://cn-hangzhou/alias/x").retry_policy.max_attempts == 4
    for bad in ({"KMSBEAM_KMS_MAX_ATTEMPTS": "many"}, {"KMSBEAM_KMS_MAX_ATTEMPTS": "0"},
                {"KMSBEAM_KMS_DEADLINE_SECONDS": "0"}, {"KMSBEAM_KMS_BACKOFF_SECONDS": "-1"},
                {"KMSBEAM_KMS_MAX_BACKOFF_SECONDS": "nan"}):  # fmt: skip
        with pytest.raises(ConfigurationError, match="KMSBEAM_KMS_"):
            RetryPolicy.from_env(bad)
    with pytest.raises(ConfigurationError):
        RetryPolicy(max_attempts=1.5)  # type: ignore[arg-type]


def failing(n: int) -> Iterator[int]:
    """An attempt function's outcomes: ``n`` transient failures, then success."""
    for i in range(n):
        yield i
    yield -1


def run(retrier: Retrier, failures: int, retry_after: float | None = None) -> str:
    outcomes = failing(failures)

    def attempt() -> str:
        if next(outcomes) >= 0:
            raise Transient("busy", retry_after=retry_after, code="X", request_id="R")
        return "ok"

    return retrier.run(attempt)


def test_full_jitter_backoff_doubles_up_to_the_cap() -> None:
    fake = FakeTime()
    top = Retrier(RetryPolicy(max_attempts=8, backoff_seconds=0.1, max_backoff_seconds=1.0),
                  sleep=fake.sleep, clock=fake.clock, random=lambda: 1.0)  # fmt: skip
    assert run(top, 7) == "ok"
    assert fake.sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0])
    fake = FakeTime()
    jitter = random.Random(3)
    seeded = Retrier(RetryPolicy(max_attempts=8, backoff_seconds=0.1, max_backoff_seconds=1.0),
                     sleep=fake.sleep, clock=fake.clock, random=jitter.random)  # fmt: skip
    run(seeded, 7)
    expected = random.Random(3)
    ceilings = [0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0]
    assert fake.sleeps == pytest.approx([expected.random() * c for c in ceilings])
    assert (top.attempts, top.retries, top.gave_up) == (8, 7, 0)


def test_retry_after_is_a_floor() -> None:
    fake = FakeTime()
    retrier = Retrier(RetryPolicy(backoff_seconds=0.1), sleep=fake.sleep, clock=fake.clock,
                      random=lambda: 0.5)  # fmt: skip
    assert run(retrier, 3, retry_after=0.75) == "ok"
    assert fake.sleeps == [0.75, 0.75, 0.75]


def test_attempts_deadline_and_cooldown() -> None:
    fake = FakeTime()
    policy = RetryPolicy(
        max_attempts=4, deadline_seconds=10, backoff_seconds=1, cooldown_seconds=60
    )
    retrier = Retrier(policy, sleep=fake.sleep, clock=fake.clock, random=lambda: 1.0)
    with pytest.raises(GaveUp) as info:
        run(retrier, 100)
    assert info.value.attempts == 4 and info.value.why == "4 attempts" and len(fake.sleeps) == 3
    assert retrier.down
    with pytest.raises(GaveUp) as info:  # within the cooldown: a single attempt
        run(retrier, 100)
    assert info.value.attempts == 1 and "failed recently" in info.value.why
    assert run(retrier, 0) == "ok" and not retrier.down  # a success ends the cooldown
    fake.now += 61
    deadline = Retrier(RetryPolicy(max_attempts=50, deadline_seconds=1.0),
                       sleep=fake.sleep, clock=fake.clock, random=lambda: 0.0)  # fmt: skip
    with pytest.raises(GaveUp) as info:
        run(deadline, 100, retry_after=0.4)
    assert info.value.attempts == 3 and "deadline 1 s" in info.value.why


def test_throttling_5xx_and_drops_are_retried_to_exact_results(server: EmulatorServer) -> None:
    server.faults = Faults(throttle_rate=0.3, error_rate=0.15, drop_rate=0.1, seed=11,
                           retry_after_ms=250)  # fmt: skip
    fake = FakeTime()
    source = make_source(server, fake=fake, max_attempts=20, backoff_seconds=0.01,
                         max_backoff_seconds=0.05)  # fmt: skip
    keys = [source.generate_data_key({"n": str(i)}) for i in range(30)]
    server.faults = None
    for i, key in enumerate(keys):
        assert source.decrypt_data_key(key.wrapped, {"n": str(i)}) == key.plaintext
    assert len({k.plaintext for k in keys}) == 30
    stats = source.stats()
    assert stats["gave_up"] == 0 and stats["retries"] > 0
    assert stats["attempts"] == 30 + stats["retries"] + 30  # + the 30 decrypts
    events = audit_events(server, "GenerateDataKey")
    outcomes = [e["outcome"] for e in events]
    # every attempt reached the server; exactly one success per data key
    assert len(events) == 30 + stats["retries"] and outcomes.count("success") == 30
    throttled = sum(e.get("errorCode") == "Rejected.Throttling" for e in events)
    dropped = outcomes.count("dropped")
    server_errors = sum(e.get("errorCode") in ("ServiceUnavailableTemporary", "InternalFailure")
                        for e in events)  # fmt: skip
    assert throttled and dropped and server_errors
    assert throttled + dropped + server_errors == stats["retries"]
    # each throttled call was followed by a wait of at least x-acs-retry-after, others not
    assert sum(s >= 0.25 for s in fake.sleeps) == throttled


def test_gives_up_after_the_bound_with_a_clear_message(server: EmulatorServer) -> None:
    server.faults = Faults(error_rate=1.0, seed=3)
    fake = FakeTime()
    source = make_source(server, fake=fake, max_attempts=4, cooldown_seconds=30)
    with pytest.raises(KeySourceUnavailableError) as info:
        source.generate_data_key()
    error = info.value
    text = str(error)
    assert error.retryable and error.code in ("ServiceUnavailableTemporary", "InternalFailure")
    assert f"the kms-emulator at {server.endpoint} is unavailable" in text
    assert "GenerateDataKey on alias/pii gave up after 4 attempts" in text and error.code in text
    assert getattr(error, "request_id") and getattr(error, "request_id") in text
    assert "KMSBEAM_KMS_MAX_ATTEMPTS" in text
    assert len(fake.sleeps) == 3
    # the endpoint is presumed down: the next call tries once
    recently = "after 1 attempt: the endpoint failed recently"
    with pytest.raises(KeySourceUnavailableError, match=recently):
        source.generate_data_key()
    server.faults = None
    assert len(source.generate_data_key().plaintext) == 32
    assert source.stats() == {"attempts": 6, "retries": 3, "gave_up": 2}
    assert len(audit_events(server, "GenerateDataKey")) == 6


def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as held:  # bound, never listening: connections are refused
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        fake = FakeTime()
        source = AlibabaKmsKeySource(f"kms-emulator://127.0.0.1:{port}/alias/pii",
                                     retry=RetryPolicy(max_attempts=3), sleep=fake.sleep,
                                     clock=fake.clock)  # fmt: skip
        with pytest.raises(KeySourceUnavailableError) as info:
            source.decrypt_data_key(b"\x02" + bytes(108))
    assert "Connection refused" in str(info.value) and "after 3 attempts" in str(info.value)
    assert info.value.code is None and len(fake.sleeps) == 2
