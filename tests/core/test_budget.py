"""The KMS call budget (kmsbeam.keys.budget): token-bucket rate and burst on an injected clock, the
process registry, fork safety, the remote key sources drawing from it (retries too), and
coalesced unwraps of one data key."""

from __future__ import annotations

import os
import pickle
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsbeam import ConfigurationError, FieldDecryptor, FieldEncryptor, KeySourceUnavailableError
from kmsbeam import DataKeyCache, DataKeyPolicy
import kmsbeam.keys.budget as budget
from kmsbeam.keys.budget import (
    KmsBudget,
    TokenBucket,
    acquire_kms_call,
    active_kms_budget,
    clear_kms_budgets,
    install_kms_budget,
    kms_budget,
    take_waits,
    uninstall_kms_budget,
)


@pytest.fixture(autouse=True)
def no_budget() -> Iterator[None]:
    clear_kms_budgets()
    yield
    clear_kms_budgets()


class Clock:
    """A fake monotonic clock; ``sleep`` advances it (nothing really sleeps)."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_burst_then_one_call_per_interval() -> None:
    clock = Clock()
    bucket = TokenBucket(10, burst=3, clock=clock, sleep=clock.sleep)
    assert [bucket.acquire() for _ in range(3)] == [0.0, 0.0, 0.0]  # the burst goes out at once
    waits = [bucket.acquire() for _ in range(10)]
    assert waits == pytest.approx([0.1] * 10)  # then one every 1/rate seconds
    assert clock.now - 100.0 == pytest.approx(1.0)  # 13 calls: (13 - burst) / rate seconds
    assert bucket.calls == 13 and bucket.waits == 10
    assert bucket.waited_seconds == pytest.approx(1.0)


def test_an_idle_bucket_refills_only_up_to_its_burst() -> None:
    clock = Clock()
    bucket = TokenBucket(4, burst=2, clock=clock, sleep=clock.sleep)
    bucket.acquire(), bucket.acquire()
    assert not bucket.try_acquire()
    clock.now += 3600  # an hour idle: still only 2 calls at once
    assert bucket.try_acquire() and bucket.try_acquire() and not bucket.try_acquire()
    clock.now += 0.25  # one token per 1/rate
    assert bucket.try_acquire() and not bucket.try_acquire()


def test_many_threads_reserve_tokens_in_order_without_losing_any() -> None:
    clock = Clock()  # frozen: every reservation is computed against the same instant
    bucket = TokenBucket(4, burst=2, clock=clock, sleep=lambda s: None)
    waits: list[float] = []
    lock = threading.Lock()

    def call() -> None:
        w = bucket.acquire()
        with lock:
            waits.append(w)

    threads = [threading.Thread(target=call) for _ in range(40)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert bucket.calls == 40
    assert sorted(waits) == pytest.approx([0.0, 0.0] + [k / 4 for k in range(1, 39)])


def test_bucket_arguments_are_checked() -> None:
    for rate, burst in ((0, 1), (-1, 1), (float("inf"), 1), (1, 0), (1, True)):
        with pytest.raises(ValueError):
            TokenBucket(rate, burst)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", [0, -2, float("nan"), float("inf"), "5", True])
def test_a_bad_limit_is_a_configuration_error(bad: Any) -> None:
    with pytest.raises(ConfigurationError):
        KmsBudget(bad)
    with pytest.raises(ConfigurationError):
        kms_budget(bad)


def test_the_setting_is_small_picklable_and_has_a_default_burst() -> None:
    assert kms_budget(None) is None
    limit = kms_budget(50)
    assert limit == KmsBudget(50.0, 5) and limit is not None and limit.burst == 5
    assert KmsBudget(0.5).burst == 1 and KmsBudget(3, burst=7).burst == 7
    assert pickle.loads(pickle.dumps(limit)) == limit
    assert kms_budget(limit) is limit


def test_one_bucket_per_limit_and_the_strictest_governs() -> None:
    assert active_kms_budget() is None and acquire_kms_call() == 0.0
    a = install_kms_budget(100)
    assert install_kms_budget(KmsBudget(100)) is a  # same limit, same shared bucket
    assert active_kms_budget() == KmsBudget(100)
    install_kms_budget(KmsBudget(20))
    assert active_kms_budget() == KmsBudget(20)  # one account quota: the strictest wins
    uninstall_kms_budget(20)
    assert active_kms_budget() == KmsBudget(100)
    uninstall_kms_budget(100)
    assert active_kms_budget() == KmsBudget(100)  # installed twice, uninstalled once
    KmsBudget(100).uninstall()
    assert active_kms_budget() is None
    uninstall_kms_budget(7)  # never installed: ignored


def test_waits_are_counted_once_per_process() -> None:
    bucket = KmsBudget(1000, burst=1).install()
    before = bucket.calls
    acquire_kms_call()
    acquire_kms_call()  # the second waits about 1 ms for its token
    assert bucket.calls == before + 2
    waits, seconds = take_waits()
    assert waits >= 1 and seconds > 0
    assert take_waits() == (0, 0.0)


def test_a_forked_child_starts_with_a_fresh_bucket_under_the_same_limit() -> None:
    limit = KmsBudget(0.001, burst=1)  # one call, then the next token is 1000 s away
    parent = limit.install()
    acquire_kms_call()
    assert not parent.try_acquire()
    read, write = os.pipe()
    with budget._here().lock:  # noqa: SLF001 - the parent holds its budget lock while forking
        pid = os.fork()
    if pid == 0:  # child: only os._exit, never return into pytest
        ok = False
        try:
            child = install_kms_budget(limit)  # would deadlock on the inherited lock
            ok = (active_kms_budget() == limit and child is not parent and child.try_acquire()
                  and take_waits() == (0, 0.0))  # fmt: skip
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)
    assert answer == b"1"
    assert not parent.try_acquire()  # the parent's bucket is untouched by the child


# -- the remote key sources draw from it ---------------------------------------------------------
@pytest.fixture()
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    from tests.emulator.emulator_key import emulator_key

    with emulator_key(tmp_path / "kms", monkeypatch, "alias/budget") as (server, uri):
        yield server, uri


def test_every_remote_call_and_retry_takes_a_token(emulator: tuple[Any, str]) -> None:
    from kmsbeam.alikms import AlibabaKmsKeySource, RetryPolicy
    from kmsbeam.emulator import Faults

    server, uri = emulator
    source = AlibabaKmsKeySource(uri, retry=RetryPolicy(max_attempts=3, backoff_seconds=0))
    key = source.generate_data_key({"t": "1"})  # unlimited: no bucket involved
    bucket = install_kms_budget(KmsBudget(10_000, burst=100))
    assert bucket.calls == 0
    source.generate_data_key({"t": "1"})  # GenerateDataKey
    assert source.decrypt_data_key(key.wrapped, {"t": "1"}) == key.plaintext  # Decrypt
    source.rewrap(key.wrapped, {"t": "1"})  # ReEncrypt
    source.describe_key()  # DescribeKey + ListAliasesByKeyId
    assert bucket.calls == 5 == source.stats()["attempts"] - 1
    server.faults = Faults(error_rate=1.0, seed=1)
    try:
        with pytest.raises(KeySourceUnavailableError):
            source.generate_data_key()
    finally:
        server.faults = None
    assert bucket.calls == 5 + 3  # each of the 3 attempts took a token


def test_local_keys_are_not_behind_the_budget(source: Any) -> None:
    bucket = install_kms_budget(KmsBudget(1000))
    key = source.generate_data_key()
    source.decrypt_data_key(key.wrapped)
    assert bucket.calls == 0


# -- concurrent unwraps of one data key coalesce ---------------------------------------------------
class SlowSource:
    """The real local source; unwraps wait at a gate so that every thread misses at once."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.uri, self.kind = inner, inner.uri, inner.kind
        self.gate, self.calls, self.entered = threading.Event(), 0, threading.Event()

    def generate_data_key(self, context: Any = None) -> Any:
        return self.inner.generate_data_key(context)

    def decrypt_data_key(self, wrapped: bytes, context: Any = None) -> bytes:
        self.calls += 1
        self.entered.set()
        assert self.gate.wait(10)
        return bytes(self.inner.decrypt_data_key(wrapped, context))


def test_threads_decrypting_values_of_one_data_key_make_one_unwrap_call(source: Any) -> None:
    slow = SlowSource(source)
    enc = FieldEncryptor(["ssn"], source, policy=DataKeyPolicy(max_records=1000))
    rows = [enc.encrypt({"ssn": f"{i:09d}"}) for i in range(16)]  # 16 values, one data key
    assert enc.values == 16
    cache = DataKeyCache()
    results: dict[int, Any] = {}
    unwraps: list[int] = []

    def decrypt(i: int) -> None:
        dec = FieldDecryptor(["ssn"], slow, cache=cache, on_call=lambda: unwraps.append(1))  # type: ignore[arg-type]
        results[i] = dec.decrypt(rows[i])

    threads = [threading.Thread(target=decrypt, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    assert slow.entered.wait(10)  # the leader is inside the (slow) unwrap
    (flight,) = cache._flights.values()  # noqa: SLF001
    waiters = flight.done._cond._waiters  # type: ignore[attr-defined]  # noqa: SLF001
    for _ in range(10_000):  # until the 15 others wait on the leader's call (at most ~10 s)
        if len(waiters) == 15:
            break
        threading.Event().wait(0.001)
    assert len(waiters) == 15
    slow.gate.set()
    for t in threads:
        t.join()
    assert slow.calls == 1 and len(unwraps) == 1
    assert cache.misses == 1 and cache.hits == 0  # nobody was served by the cache: coalesced
    assert [results[i]["ssn"] for i in range(16)] == [f"{i:09d}" for i in range(16)]
