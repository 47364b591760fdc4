"""The data-key policy (when new keys are generated) and the decrypt-side cache."""

from __future__ import annotations

import pickle
import threading
from typing import Any

import pytest

from kmsbeam import DataKeyCache, DataKeyPolicy, FieldEncryptor, KeySourceError
from kmsbeam.formats.envelope import FIELD_V1
from kmsbeam.keys.policy import DataKeys


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_one_key_until_a_cap_is_reached(source: Any) -> None:
    keys = DataKeys(source, FIELD_V1, policy=DataKeyPolicy(max_records=10))
    sealers = [keys.sealer() for _ in range(35)]
    assert keys.generated == 4 and len({id(s) for s in sealers}) == 4


def test_byte_and_age_caps(source: Any) -> None:
    clock = Clock()
    keys = DataKeys(source, FIELD_V1, policy=DataKeyPolicy(max_bytes=100, max_age_seconds=60), clock=clock)
    first = keys.sealer()
    keys.bytes += 99
    assert keys.sealer() is first
    keys.bytes += 1
    second = keys.sealer()
    assert second is not first
    clock.now = 59.9
    assert keys.sealer() is second
    clock.now = 60
    assert keys.sealer() is not second and keys.generated == 3


def test_reset_starts_a_new_key_and_counts_exactly(source: Any) -> None:
    calls = []
    enc = FieldEncryptor(["a"], source, on_generate=lambda: calls.append(1),
                         policy=DataKeyPolicy(max_records=10_000))  # fmt: skip
    for _ in range(100_000):
        enc.encrypt({"a": "x"})
    assert len(calls) == 10
    enc.reset()
    enc.encrypt({"a": "x"})
    assert len(calls) == 11


@pytest.mark.parametrize("bad", [{"max_records": 0}, {"max_records": 2**32 + 1}, {"max_bytes": 0},
                                 {"max_bytes": 2**41}, {"max_age_seconds": 0}])  # fmt: skip
def test_policy_limits(bad: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        DataKeyPolicy(**bad)


class CountingSource:
    """The real local source, counting unwrap calls and optionally slowing them down."""

    def __init__(self, inner: Any, gate: threading.Event | None = None) -> None:
        self.inner, self.gate, self.calls = inner, gate, 0
        self.uri, self.kind = inner.uri, inner.kind

    def decrypt_data_key(self, wrapped: bytes, context: Any = None) -> bytes:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait(10)
        return bytes(self.inner.decrypt_data_key(wrapped, context))


def test_cache_hits_ttl_and_lru(source: Any) -> None:
    wrapped = [source.generate_data_key().wrapped for _ in range(3)]
    counting, clock = CountingSource(source), Clock()
    cache = DataKeyCache(max_entries=2, ttl_seconds=10, clock=clock)
    a = cache.cipher(counting, wrapped[0])
    assert cache.cipher(counting, wrapped[0]) is a and counting.calls == 1
    cache.cipher(counting, wrapped[1])
    cache.cipher(counting, wrapped[2])  # evicts wrapped[0]
    assert len(cache) == 2 and counting.calls == 3
    cache.cipher(counting, wrapped[0])
    assert counting.calls == 4
    clock.now = 11
    cache.cipher(counting, wrapped[0])
    assert counting.calls == 5
    with pytest.raises(TypeError):
        pickle.dumps(cache)


def test_concurrent_misses_coalesce_into_one_call(source: Any) -> None:
    wrapped = source.generate_data_key().wrapped
    gate = threading.Event()
    counting = CountingSource(source, gate)
    cache = DataKeyCache()
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(cache.cipher(counting, wrapped))) for _ in range(8)]
    for t in threads:
        t.start()
    while not cache._flights:  # noqa: SLF001 - wait until the leader is inside the call
        threading.Event().wait(0.001)
    gate.set()
    for t in threads:
        t.join()
    assert counting.calls == 1 and len(results) == 8 and len({id(r) for r in results}) == 1


def test_a_failing_key_source_is_not_called_once_per_record(source: Any) -> None:
    from kmsbeam.keys.local import shared_engine

    shared_engine(source.home).disable_key(source.key_id)
    calls = []
    orig = source.generate_data_key

    class Spy:
        uri, kind = source.uri, source.kind

        def generate_data_key(self, context: Any = None) -> Any:
            calls.append(1)
            return orig(context)

    enc = FieldEncryptor(["a"], Spy())  # type: ignore[arg-type]
    for _ in range(50):
        with pytest.raises(KeySourceError):
            enc.encrypt({"a": "x"})
    assert len(calls) == 1
    enc.reset()  # a new bundle: the failure is still remembered (per process, for a while)
    with pytest.raises(KeySourceError):
        enc.encrypt({"a": "x"})
    assert len(calls) == 1
    from kmsbeam.failures import shared_failures

    shared_failures().clear()  # what the failure's time-to-live does
    with pytest.raises(KeySourceError):
        enc.encrypt({"a": "x"})
    assert len(calls) == 2
