"""Failed key-source calls are remembered for a while (one call per data key), and every raise
is a fresh, detail-free error: no chain, a short traceback, no other record's plaintext.

Real local keystore (disabled keys), injected clocks: nothing sleeps.
"""

from __future__ import annotations

import gc
import types
from typing import Any

import pytest

from kmsbeam import DataKeyCache, FieldDecryptor, FieldEncryptor, KeyDisabledError, KmsBeamError
from kmsbeam.formats.envelope import FIELD_V1
from kmsbeam.failures import FailureMemory, failure_ttl, shared_failures
from kmsbeam.kms import KeyStore, KmsEngine
from kmsbeam.keys.policy import DataKeys
from kmsbeam.rotation.memo import RewrapMemo


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Counting:
    """The real local source, counting the calls that reach it."""

    def __init__(self, source: Any) -> None:
        self._source = source
        self.uri, self.kind, self.home = source.uri, source.kind, source.home
        self.calls = 0

    def generate_data_key(self, context: Any = None) -> Any:
        self.calls += 1
        return self._source.generate_data_key(context)

    def decrypt_data_key(self, wrapped: bytes, context: Any = None) -> bytes:
        self.calls += 1
        return self._source.decrypt_data_key(wrapped, context)


def engine(source: Any) -> KmsEngine:
    return KmsEngine(KeyStore(source.home))


def test_the_memory_keeps_class_message_and_code_and_forgets_after_its_ttl() -> None:
    clock = Clock()
    memory = FailureMemory(5.0, clock=clock)
    original = KeyDisabledError("the key is disabled", code="Rejected.Disabled")
    original.field = "ssn"
    raised = memory.remember("k", original)
    again = [memory.recall("k") for _ in range(3)]
    assert all(isinstance(e, KeyDisabledError) and str(e) == "the key is disabled" for e in again)
    assert len({id(e) for e in [original, raised, *again]}) == 5  # every raise is a new object
    assert all(e is not None and e.code == "Rejected.Disabled" and e.field is None for e in again)
    clock.now = 4.9
    assert memory.recall("k") is not None
    clock.now = 5.0
    assert memory.recall("k") is None and len(memory) == 0
    assert FailureMemory(0).remember("k", original) is not original  # ttl 0: nothing kept
    assert failure_ttl({"KMSBEAM_FAILURE_TTL_SECONDS": "2.5"}) == 2.5 and failure_ttl({}) == 10.0


def test_a_disabled_key_costs_one_unwrap_per_data_key_until_the_failure_expires(source: Any) -> None:
    wrapped = source.generate_data_key({"ds": "a"}).wrapped
    counting, clock = Counting(source), Clock()
    cache = DataKeyCache(clock=clock, failure_ttl_seconds=10)
    engine(source).disable_key(source.key_id)
    errors = []
    for _ in range(1000):
        with pytest.raises(KeyDisabledError) as info:
            cache.cipher(counting, wrapped, {"ds": "a"})
        errors.append(info.value)
    assert counting.calls == 1 and len({id(e) for e in errors}) == 1000
    with pytest.raises(KmsBeamError):  # another context is another call
        cache.cipher(counting, wrapped, {"ds": "b"})
    assert counting.calls == 2
    engine(source).enable_key(source.key_id)
    clock.now = 9.9
    with pytest.raises(KeyDisabledError):
        cache.cipher(counting, wrapped, {"ds": "a"})
    assert counting.calls == 2
    clock.now = 10.0  # forgotten: the key was enabled meanwhile, so this call succeeds
    assert cache.cipher(counting, wrapped, {"ds": "a"}) is not None and counting.calls == 3


def test_a_failed_generate_data_key_is_remembered_per_key_and_context(source: Any) -> None:
    counting, clock = Counting(source), Clock()
    memory = FailureMemory(10, clock=clock)
    engine(source).disable_key(source.key_id)
    keys = DataKeys(counting, FIELD_V1, {"ds": "a"}, failures=memory)
    for _ in range(100):
        keys.reset()  # bundle boundaries do not forget it
        with pytest.raises(KeyDisabledError):
            keys.sealer()
    assert counting.calls == 1 and keys.calls == 1 and keys.failed_calls == 1
    other = DataKeys(counting, FIELD_V1, {"ds": "a"}, failures=memory)  # another DoFn, same process
    with pytest.raises(KeyDisabledError):
        other.sealer()
    assert counting.calls == 1 and other.calls == 0
    clock.now = 10.0
    with pytest.raises(KeyDisabledError):
        keys.sealer()
    assert counting.calls == 2 and keys.failed_calls == 2


def test_a_failed_rewrap_is_remembered_and_each_waiter_gets_its_own_error() -> None:
    clock, runs = Clock(), []
    memo = RewrapMemo(failure_ttl_seconds=3, clock=clock)

    def run() -> tuple[bytes, str]:
        runs.append(1)
        raise KeyDisabledError("old key disabled")

    errors = []
    for _ in range(50):
        with pytest.raises(KeyDisabledError) as info:
            memo.get(b"header", run)
        errors.append(info.value)
    assert len(runs) == 1 and len({id(e) for e in errors}) == 50
    clock.now = 3.0
    with pytest.raises(KeyDisabledError):
        memo.get(b"header", run)
    assert len(runs) == 2


def _reachable_text(exc: BaseException) -> str:
    """Every str and bytes reachable from an exception: its args, its cause and context chain,
    and the locals of every frame on its traceback (one level into containers)."""
    seen: set[int] = set()
    out: list[str] = []

    def add(value: Any, depth: int = 0) -> None:
        if id(value) in seen or depth > 3:
            return
        seen.add(id(value))
        if isinstance(value, (str, bytes)):
            out.append(value if isinstance(value, str) else value.decode("latin-1"))
        elif isinstance(value, dict):
            for k, v in value.items():
                add(k, depth + 1)
                add(v, depth + 1)
        elif isinstance(value, (list, tuple, set)):
            for v in value:
                add(v, depth + 1)

    stack: list[BaseException | None] = [exc]
    while stack:
        e = stack.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        add(e.args)
        add(vars(e))
        stack += [e.__cause__, e.__context__]
        tb: types.TracebackType | None = e.__traceback__
        while tb is not None:
            if not tb.tb_frame.f_code.co_name.startswith("test_"):  # not the test's own frame
                add(dict(tb.tb_frame.f_locals))
            tb = tb.tb_next
    return "\n".join(out)


def _depth(exc: BaseException) -> int:
    n, tb = 0, exc.__traceback__
    while tb is not None:
        n, tb = n + 1, tb.tb_next
    return n


@pytest.mark.parametrize("batch", [False, True], ids=["per-record", "batch"])
def test_many_failing_records_give_fresh_short_errors_with_no_other_plaintext(source: Any, batch: bool) -> None:
    shared_failures().clear()
    engine(source).disable_key(source.key_id)
    enc = FieldEncryptor(["ssn"], source)
    records = [{"id": i, "ssn": f"plain-{i:05d}"} for i in range(2000)]
    if batch:
        errors = enc.encrypt_batch(records)
    else:
        errors = []
        for r in records:
            try:
                enc.encrypt(r)
            except KmsBeamError as exc:
                errors.append(exc)
    gc.collect()
    assert len(errors) == 2000 and all(isinstance(e, KeyDisabledError) for e in errors)
    assert len({id(e) for e in errors}) == 2000  # no shared object
    last = errors[-1]
    assert _depth(last) <= 6 and last.__cause__ is None
    text = _reachable_text(last)
    assert "plain-00000" not in text and "plain-01000" not in text  # no other record's plaintext
    shared_failures().clear()


def test_the_field_is_set_on_each_fresh_error_only(source: Any) -> None:
    enc = FieldEncryptor(["ssn", "email"], source)
    values = [enc.encrypt({"ssn": f"{i}", "email": f"{i}@x"}) for i in range(2)]
    engine(source).disable_key(source.key_id)
    dec = FieldDecryptor(["ssn", "email"], source, cache=DataKeyCache())
    errors = []
    for v in values:
        try:
            dec.decrypt(v)
        except KmsBeamError as exc:
            errors.append(exc)
    assert [e.field for e in errors] == ["ssn", "ssn"] and errors[0] is not errors[1]
    assert all(e.__cause__ is None and e.__context__ is None for e in errors)
