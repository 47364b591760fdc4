"""``kmsbeam.rotation.rewrap.Rewrapper`` on real local keystores: rewrap headers, keep bodies."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kmsbeam import DataKeyCache, DataKeyPolicy, FieldDecryptor, FieldEncryptor
from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1, parse
from kmsbeam.formats.base import outcomes
from kmsbeam.formats.values import rewrap_paths, rewrap_value
from kmsbeam.errors import (
    AuthenticationError,
    ConfigurationError,
    KeyDisabledError,
    KeyNotFoundError,
    MalformedValueError,
)
from kmsbeam.kms import KeyStore, KmsEngine
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.formats.records import RecordDecryptor, RecordEncryptor
from kmsbeam.rotation.rewrap import (
    ALREADY,
    FILTERED,
    RESUMED,
    REWRAPPED,
    Rewrapper,
    record_paths,
)

CTX = {"dataset": "crm"}
RECORDS = [{"id": i, "ssn": f"123-45-{i:04d}", "email": None if i == 4 else f"u{i}@x.io"}
           for i in range(10)]  # fmt: skip


@pytest.fixture()
def old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalKeySource:
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path / "home"))
    return LocalKeySource("local:alias/pii", create=True)


def _engine(source: LocalKeySource) -> KmsEngine:
    return KmsEngine(KeyStore(source.home))


def _encrypt(source: LocalKeySource, encoding: str = "text") -> list[dict[str, Any]]:
    enc = FieldEncryptor(["ssn", "email"], source, context=CTX, bind="id", encoding=encoding,
                         policy=DataKeyPolicy(max_records=4))  # fmt: skip
    return [enc.encrypt(r) for r in RECORDS]  # 3 data keys: records 0-3, 4-7, 8-9


def _move_alias(source: LocalKeySource) -> LocalKeySource:
    engine = _engine(source)
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    return LocalKeySource("local:alias/pii")


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_rewrap_replaces_headers_only_one_call_per_data_key(old: LocalKeySource, encoding: str) -> None:
    encrypted = _encrypt(old, encoding)
    old_version = old.describe_key().primary_version
    new = _move_alias(old)
    calls: list[int] = []
    rw = Rewrapper(new, context=CTX, on_call=lambda: calls.append(1), cache=DataKeyCache())
    paths, fmt = record_paths("fields", "ssn,email", "")
    rotated = [rewrap_paths(r, paths, fmt, rw) for r in encrypted]
    assert len(calls) == rw.calls == 3  # distinct data keys, not values
    assert rw.counts == {REWRAPPED: 19, ALREADY: 0, FILTERED: 0, RESUMED: 0}
    for before, after in zip(encrypted, rotated):
        for name in ("ssn", "email"):
            if before[name] is None:
                assert after[name] is None
                continue
            a, b = parse(before[name], FIELD_V1), parse(after[name], FIELD_V1)
            assert a.body == b.body and a.commitment == b.commitment and a.wrapped != b.wrapped
            assert new.wrapped_key_version(a.wrapped) == old_version
            assert new.wrapped_key_version(b.wrapped) == new.current_version()
            assert type(after[name]) is type(before[name])
    _engine(old).disable_key(_key_id_of(old, old_version))  # CMK-A
    dec = FieldDecryptor(["ssn", "email"], new, context=CTX, bind="id", cache=DataKeyCache())
    assert [dec.decrypt(r) for r in rotated] == RECORDS
    with pytest.raises(KeyDisabledError):  # the old values now need the disabled key
        FieldDecryptor(["ssn"], new, context=CTX, bind="id", cache=DataKeyCache()).decrypt(encrypted[0])
    again = Rewrapper(new, context=CTX, cache=DataKeyCache())
    assert [rewrap_paths(r, paths, fmt, again) for r in rotated] == rotated
    assert again.calls == 0 and again.counts[ALREADY] == 19


def _key_id_of(source: LocalKeySource, version: str) -> str:
    engine = _engine(source)
    for meta in engine.list_keys():
        if meta.primary_key_version == version:
            return meta.key_id
    raise AssertionError("no key with that version")


def test_records_and_automatic_rotation(old: LocalKeySource) -> None:
    enc = RecordEncryptor(old, keep=["id"], context=CTX)
    encrypted = [enc.encrypt(r) for r in RECORDS]
    _engine(old).create_key_version("alias/pii")  # automatic rotation: a new primary version
    rw = Rewrapper(old, context=CTX, cache=DataKeyCache())
    paths, fmt = record_paths("record", (), "kmsbeam_record")
    assert fmt == RECORD_V1
    rotated = [rewrap_paths(r, paths, fmt, rw) for r in encrypted]
    assert rw.calls == 1 and rw.counts[REWRAPPED] == 10
    assert all(parse(a["kmsbeam_record"], RECORD_V1).body == parse(b["kmsbeam_record"], RECORD_V1).body
               for a, b in zip(encrypted, rotated))  # fmt: skip
    dec = RecordDecryptor(old, keep=["id"], context=CTX, cache=DataKeyCache())
    assert [dec.decrypt(r) for r in rotated] == RECORDS


def test_filters_leave_other_versions_alone(old: LocalKeySource) -> None:
    encrypted = _encrypt(old)
    new = _move_alias(old)
    rw = Rewrapper(new, context=CTX, only_versions={"not-this-one"}, cache=DataKeyCache())
    paths, fmt = record_paths("fields", "ssn,email", "")
    assert [rewrap_paths(r, paths, fmt, rw) for r in encrypted] == encrypted
    assert rw.calls == 0 and rw.counts[FILTERED] == 19


def test_bad_values_raise_kmsbeam_errors_naming_the_field(old: LocalKeySource) -> None:
    encrypted = _encrypt(old)
    new = _move_alias(old)
    paths, fmt = record_paths("fields", "ssn,email", "")
    rw = Rewrapper(new, context=CTX, cache=DataKeyCache())
    with pytest.raises(MalformedValueError) as info:
        rewrap_paths({**encrypted[0], "email": "not a value"}, paths, fmt, rw)
    assert info.value.field == "email"
    value = bytearray(parse(encrypted[0]["ssn"], FIELD_V1).header)
    value[-2] ^= 1  # inside K: the rewrapped key's commitment does not match
    with pytest.raises(AuthenticationError):
        rewrap_value(bytes(value) + bytes(30), FIELD_V1, rw)
    wrong = Rewrapper(new, context={"dataset": "other"}, cache=DataKeyCache())
    with pytest.raises(AuthenticationError):  # the wrong context cannot unwrap the old key
        rewrap_paths(encrypted[0], paths, fmt, wrong)
    results = outcomes(lambda r: rewrap_paths(r, paths, fmt, rw), [encrypted[1], {"id": 1}])
    assert isinstance(results[0], dict) and isinstance(results[1], Exception)


def test_a_disabled_or_unknown_target_fails_up_front(old: LocalKeySource) -> None:
    _engine(old).disable_key("alias/pii")
    with pytest.raises(KeyDisabledError):
        Rewrapper(old, context=CTX).check_target()
    with pytest.raises(KeyNotFoundError):
        LocalKeySource("local:alias/nope")


def test_another_kind_of_source_is_refused_clearly(old: LocalKeySource) -> None:
    encrypted = _encrypt(old)
    header = bytearray(parse(encrypted[0]["ssn"], FIELD_V1).header)
    header[3] = 0x02  # a data key of the Alibaba kind (same blob layout)
    rw = Rewrapper(old, context=CTX, cache=DataKeyCache())
    with pytest.raises(ConfigurationError, match="re-encrypt"):
        rewrap_value(bytes(header) + bytes(30), FIELD_V1, rw)


def test_no_key_material_in_repr(old: LocalKeySource) -> None:
    rw = Rewrapper(old, context=CTX)
    assert "pii" in repr(rw) and "crm" not in repr(rw)


def test_concurrent_values_of_one_data_key_coalesce_into_one_call(old: LocalKeySource) -> None:
    import threading

    from kmsbeam.rotation.rewrap import RewrapMemo

    encrypted = _encrypt(old)
    new = _move_alias(old)
    memo, calls = RewrapMemo(), []
    start = threading.Barrier(8)
    paths, fmt = record_paths("fields", "ssn,email", "")

    def worker() -> None:  # one Rewrapper per thread, one memo for the process
        rw = Rewrapper(new, context=CTX, memo=memo, on_call=lambda: calls.append(1))
        start.wait()
        for r in encrypted:
            rewrap_paths(r, paths, fmt, rw)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 3 == len(memo)
