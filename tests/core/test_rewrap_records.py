"""The batch loops of rotation give exactly what their record-by-record forms give, on mixed
batches: ``rewrap_records`` as ``rewrap_paths`` (results, dead records and their errors, counts,
the headers it names), ``batch_rows`` as the distinct ``record_rows``."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from kmsbeam import DataKeyCache, DataKeyPolicy, FieldEncryptor
from kmsbeam.errors import KmsBeamError
from kmsbeam.formats.base import outcomes
from kmsbeam.formats.envelope import parse
from kmsbeam.formats.records import RecordEncryptor
from kmsbeam.formats.values import rewrap_paths, rewrap_records
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.kms import KeyStore, KmsEngine
from kmsbeam.rotation.inventory import batch_rows, record_rows
from kmsbeam.rotation.rewrap import Rewrapper, record_paths

CTX = {"dataset": "crm"}


@pytest.fixture()
def old(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalKeySource:
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path / "home"))
    return LocalKeySource("local:alias/pii", create=True)


def _move_alias(source: LocalKeySource) -> LocalKeySource:
    engine = KmsEngine(KeyStore(source.home))
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    return LocalKeySource("local:alias/pii")


def _shape(results: list[Any]) -> list[Any]:
    return [(type(r).__name__, str(r), getattr(r, "field", None)) if isinstance(r, KmsBeamError) else r
            for r in results]  # fmt: skip


def _norm(results: list[Any], source: LocalKeySource, fmt: int) -> list[Any]:
    """Each value as (body, K, master key version): new wrapped keys differ from call to call."""
    def value(v: Any) -> Any:
        try:
            parsed = parse(v, fmt)
        except (KmsBeamError, TypeError):
            return v
        return parsed.body, parsed.commitment, source.wrapped_key_version(parsed.wrapped)

    def record(r: Any) -> Any:
        return {k: value(v) if not isinstance(v, dict) else record(v) for k, v in r.items()}

    return [r if isinstance(r, tuple) else record(r) for r in _shape(results)]


def _both(records: list[Any], source: LocalKeySource, paths: Any, fmt: int, **kw: Any) -> None:
    """The batch function and the per-record one: the same in every way."""
    one, batch = (Rewrapper(source, context=CTX, cache=DataKeyCache(), **kw) for _ in range(2))
    heads_one: dict[Any, Any] = {}
    heads_batch: dict[Any, Any] = {}
    expected = outcomes(lambda r: rewrap_paths(r, paths, fmt, one, heads_one), records)
    got = rewrap_records(records, paths, fmt, batch, heads_batch)
    # Fresh rewrappers: the same values (new wrapped keys differ), counts, calls and headers named.
    assert _norm(got, source, fmt) == _norm(expected, source, fmt)
    assert batch.counts == one.counts and batch.calls == one.calls
    assert len(heads_batch) == len(heads_one)
    assert all(g is not r for g, r in zip(got, records))  # copies, never the input records
    # One rewrapper (its memo knows every header now): byte for byte, and the same tallies.
    before = dict(one.counts)
    heads_again: dict[Any, Any] = {}
    assert _shape(rewrap_records(records, paths, fmt, one, heads_again)) == _shape(expected)
    assert {k: one.counts[k] - before[k] for k in before} == before and heads_again == heads_one


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_a_mixed_batch_matches_record_by_record(old: LocalKeySource, encoding: str) -> None:
    enc = FieldEncryptor(["ssn", "email"], old, context=CTX, encoding=encoding,
                         policy=DataKeyPolicy(max_records=7))  # fmt: skip
    good = [enc.encrypt({"id": i, "ssn": f"123-45-{i:04d}", "email": f"u{i}@x.io"}) for i in range(40)]
    new = _move_alias(old)
    already = rewrap_paths(good[3], *record_paths("fields", "ssn,email", ""), Rewrapper(new, context=CTX))
    records: list[Any] = list(good)
    records[5] = {**good[5], "email": None}  # None is kept
    records[9] = {"id": 9, "ssn": good[9]["ssn"]}  # a missing field: dead
    records[12] = {**good[12], "email": "not a value"}  # malformed: dead, naming the field
    records[13] = {**good[13], "email": good[13]["email"][:-40] if encoding == "text" else b"x"}  # too short
    records[20] = already  # under the target already, in the middle of another key's run
    records[21] = {**good[21], "ssn": good[30]["ssn"]}  # two data keys in one record
    records[25] = {**good[25], "ssn": 17}  # not a value
    paths, fmt = record_paths("fields", "ssn,email", "")
    _both(records, new, paths, fmt)
    shuffled = records[:]
    random.Random(7).shuffle(shuffled)
    _both(shuffled, new, paths, fmt)
    _both(records, new, paths, fmt, only_versions={"not-this-one"})  # filtered: unchanged copies


def test_records_and_nested_paths(old: LocalKeySource) -> None:
    enc = RecordEncryptor(old, keep=["id"], context=CTX, policy=DataKeyPolicy(max_records=5))
    records: list[Any] = [enc.encrypt({"id": i, "x": i}) for i in range(12)]
    records[4] = {"id": 4}
    new = _move_alias(old)
    _both(records, new, *record_paths("record", (), "kmsbeam_record"))
    nested = FieldEncryptor(["a.b"], old, context=CTX)
    rows = [nested.encrypt({"a": {"b": f"v{i}"}}) for i in range(5)] + [{"a": {}}]
    _both(rows, new, *record_paths("fields", "a.b", ""))  # nested paths: record by record


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_batch_rows_are_the_distinct_record_rows(old: LocalKeySource, encoding: str) -> None:
    enc = FieldEncryptor(["ssn", "email"], old, context=CTX, encoding=encoding,
                         policy=DataKeyPolicy(max_records=6))  # fmt: skip
    records: list[Any] = [enc.encrypt({"id": i, "ssn": f"s{i}", "email": f"e{i}"}) for i in range(30)]
    records[2] = {**records[2], "email": None}
    records[3] = {"id": 3}  # no values: no rows
    records[7] = {**records[7], "ssn": records[7]["ssn"][:-30]}  # too short: left out, as record_rows does
    records[8] = {**records[8], "email": "not a value"}
    records[11] = {**records[11], "ssn": records[25]["ssn"]}  # another data key mid-run
    paths, fmt = record_paths("fields", "ssn,email", "")
    for side in ("in", "out"):
        expected = list(dict.fromkeys(row for r in records for row in record_rows(r, paths, fmt, side)))
        assert batch_rows(records, paths, fmt, side) == expected
    assert len(batch_rows(records, paths, fmt)) == 5  # 30 records / 6 per data key
