"""RewrapDataKeys and the re-encrypt transforms on real pipelines and a real local keystore."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam import DataKeyCache, DataKeyPolicy, FieldDecryptor, FieldEncryptor, KmsBeamError, open_key_source
from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1, parse
from kmsbeam.kms import KeyStore, KmsEngine
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.formats.records import RecordDecryptor, RecordEncryptor
from kmsbeam.transforms import ReencryptFields, ReencryptRecords, RewrapDataKeys
from tests.transforms.test_transforms import Pipeline, counters

KEY = "local:alias/rot"
CTX = {"ds": "c"}


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "ssn": f"{i:09d}", "email": f"u{i}@x.io"} for i in range(n)]


def encrypted_fields(n: int, per_key: int) -> list[dict[str, Any]]:
    source = LocalKeySource(KEY, create=True)
    enc = FieldEncryptor(["ssn", "email"], source, context=CTX, bind="id",
                         policy=DataKeyPolicy(max_records=per_key))  # fmt: skip
    return [enc.encrypt(r) for r in records(n)]


def move_alias() -> None:
    source = LocalKeySource(KEY)
    engine = KmsEngine(KeyStore(source.home))
    engine.update_alias("alias/rot", engine.create_key("B").key_id)


_SINKS: dict[str, list[Any]] = {"good": [], "dead": []}


def _collect(element: Any, sink: str) -> None:
    _SINKS[sink].append(element)  # the in_memory FnApiRunner runs in this process


def run(transform: Any, inputs: list[dict[str, Any]]) -> tuple[list[Any], list[Any], dict[str, int]]:
    for sink in _SINKS.values():
        sink.clear()
    p = Pipeline()
    out, letters = p | beam.Create(inputs) | transform.with_dead_letters()
    out | "Good" >> beam.Map(_collect, "good")
    letters | "Dead" >> beam.Map(_collect, "dead")
    result = p.run()
    result.wait_until_finish()
    return list(_SINKS["good"]), list(_SINKS["dead"]), counters(result)


def test_rewrap_keeps_bodies_counts_calls_and_dead_letters() -> None:
    encrypted = encrypted_fields(300, per_key=40)  # 8 data keys
    move_alias()
    bad = {"id": 999, "ssn": "not an encrypted value", "email": None}
    good, dead, c = run(RewrapDataKeys(KEY, ["ssn", "email"], context=CTX), encrypted + [bad])
    assert len(good) == 300 and len(dead) == 1
    assert dead[0]["record"] == bad and "malformed value (field ssn)" in dead[0]["reason"]
    assert c["kms_calls_rewrap"] == 8 and c["values_rewrapped"] == 600 and c["dead_letters"] == 1
    assert c["records"] == 301
    by_id = {r["id"]: r for r in encrypted}
    for r in good:
        before, after = parse(by_id[r["id"]]["ssn"], FIELD_V1), parse(r["ssn"], FIELD_V1)
        assert before.body == after.body and before.wrapped != after.wrapped
    dec = FieldDecryptor(["ssn", "email"], LocalKeySource(KEY), context=CTX, bind="id",
                         cache=DataKeyCache())  # fmt: skip
    assert sorted((dec.decrypt(r) for r in good), key=lambda r: r["id"]) == records(300)
    # A second run over rotated data: nothing to do, no call.
    again, dead, c = run(RewrapDataKeys(KEY, ["ssn", "email"], context=CTX), good)
    assert sorted(again, key=lambda r: r["id"]) == sorted(good, key=lambda r: r["id"])
    assert c.get("kms_calls_rewrap", 0) == 0 and c["values_skipped"] == 600 and not dead


def test_rewrap_records_mode() -> None:
    source = LocalKeySource(KEY, create=True)
    enc = RecordEncryptor(source, keep=["id"], context=CTX)
    encrypted = [enc.encrypt(r) for r in records(20)]
    KmsEngine(KeyStore(source.home)).create_key_version("alias/rot")  # automatic rotation
    good, dead, c = run(RewrapDataKeys(KEY, mode="record", context=CTX), encrypted)
    assert not dead and c["kms_calls_rewrap"] == 1 and c["values_rewrapped"] == 20
    dec = RecordDecryptor(source, keep=["id"], context=CTX, cache=DataKeyCache())
    assert sorted((dec.decrypt(r) for r in good), key=lambda r: r["id"]) == records(20)
    assert {parse(r["kmsbeam_record"], RECORD_V1).body for r in good} == {
        parse(r["kmsbeam_record"], RECORD_V1).body for r in encrypted}  # fmt: skip


def test_a_disabled_target_fails_the_job_or_the_explicit_check_before_it() -> None:
    source = LocalKeySource(KEY, create=True)
    KmsEngine(KeyStore(source.home)).disable_key("alias/rot")
    with pytest.raises(KmsBeamError, match="not Enabled"):  # the explicit step, on the driver
        open_key_source(KEY).current_version()
    p = Pipeline()
    _ = p | beam.Create(records(1)) | RewrapDataKeys(KEY, ["ssn"])  # expand() calls no key source
    with pytest.raises(KmsBeamError, match="RewrapDataKeys: key disabled: .*not Enabled"):
        p.run().wait_until_finish()


def test_reencrypt_fields_new_data_keys_and_scrubbed_dead_letters() -> None:
    encrypted = encrypted_fields(50, per_key=100)
    LocalKeySource("local:alias/new", create=True)
    bad = {"id": 7, "ssn": encrypted[7]["ssn"], "email": encrypted[7]["email"]}  # moved: id 7 -> 70
    bad["id"] = 70
    good, dead, c = run(ReencryptFields(KEY, "local:alias/new", ["ssn", "email"], context=CTX,
                                        bind="id"), encrypted + [bad])  # fmt: skip
    assert len(good) == 50 and len(dead) == 1 and "authentication failed" in dead[0]["reason"]
    assert c["data_keys_generated"] == 1
    old_bodies = {parse(r["ssn"], FIELD_V1).body for r in encrypted}
    assert not old_bodies & {parse(r["ssn"], FIELD_V1).body for r in good}
    dec = FieldDecryptor(["ssn", "email"], LocalKeySource("local:alias/new"), context=CTX,
                         bind="id", cache=DataKeyCache())  # fmt: skip
    assert sorted((dec.decrypt(r) for r in good), key=lambda r: r["id"]) == records(50)


def test_reencrypt_records() -> None:
    source = LocalKeySource(KEY, create=True)
    encrypted = [RecordEncryptor(source, keep=["id"]).encrypt(r) for r in records(5)]
    LocalKeySource("local:alias/new", create=True)
    p = Pipeline()
    out = p | beam.Create(encrypted) | ReencryptRecords(KEY, "local:alias/new", keep=["id"])
    plain = out | beam.Map(lambda r: RecordDecryptor(LocalKeySource("local:alias/new"), keep=["id"],
                                                     cache=DataKeyCache()).decrypt(r))  # fmt: skip
    assert_that(plain, equal_to(records(5)))
    p.run().wait_until_finish()
