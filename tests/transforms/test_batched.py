"""``t.batched()``: lists of records in, one list of the good records out per list, dead letters
one per element, exact counters (fields and records mode, dicts and Beam Rows)."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam.transforms import DecryptFields, DecryptRecords, EncryptFields, EncryptRecords

from tests.transforms.test_transforms import Pipeline, counters, customers

KEY = "local:alias/pii"
FIELDS = ["ssn", "contact.email"]


def chunks(records: list[Any], size: int) -> list[list[Any]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


def test_fields_batched_round_trip_keeps_the_lists_and_counts_exactly() -> None:
    records = customers(700)
    bad = [{"id": 9000, "ssn": {1, 2}}]  # a set has no encoding: a dead letter, its list goes on
    p = Pipeline()
    lists = p | beam.Create(chunks(records[:300], 300) + [bad] + chunks(records[300:], 256))
    enc, dead = lists | EncryptFields(KEY, FIELDS, context={"ds": "c"}).batched().with_dead_letters()
    assert_that(enc | "Sizes" >> beam.Map(len), equal_to([300, 256, 144]), label="sizes")
    assert_that(dead | beam.Map(lambda d: d["record"]["id"]), equal_to([9000]), label="dead")
    back, dead_back = enc | DecryptFields(KEY, FIELDS, context={"ds": "c"}).batched().with_dead_letters()
    assert_that(back | beam.FlatMap(lambda b: b), equal_to(records), label="plaintext")
    assert_that(dead_back, equal_to([]), label="no dead")
    result = p.run()
    result.wait_until_finish()
    c = counters(result)
    assert c["records"] == 701 + 700
    assert c["values_encrypted"] == 1400 and c["values_decrypted"] == 1400
    assert c["data_keys_generated"] == 1 and c["kms_calls_decrypt"] == 1 and c["dead_letters"] == 1


def test_records_batched_round_trip_without_a_batch_call() -> None:
    records = customers(30)
    tampered = {"id": 99, "kmsbeam_record": "not a value"}
    p = Pipeline()
    enc = p | "In" >> beam.Create([records[:20], records[20:]]) | EncryptRecords(key=KEY, keep=["id"]).batched()
    assert_that(enc | "Sizes" >> beam.Map(len), equal_to([20, 10]), label="sizes")
    mixed = (enc, p | "Bad" >> beam.Create([[tampered]])) | beam.Flatten()
    back, dead = mixed | DecryptRecords(key=KEY, keep=["id"]).batched().with_dead_letters()
    assert_that(back | beam.FlatMap(lambda b: b), equal_to(records), label="rt")
    assert_that(dead | beam.Map(lambda d: d["record"]["id"]), equal_to([99]), label="dead")
    result = p.run()
    result.wait_until_finish()
    c = counters(result)
    assert c["records"] == 30 + 31 and c["dead_letters"] == 1
    assert c["values_encrypted"] == 30 and c["values_decrypted"] == 30


def test_batched_rows_stay_rows() -> None:
    rows = [beam.Row(id=i, ssn=f"{i:09d}", contact=beam.Row(email=f"u{i}@x.com")) for i in range(10)]
    with Pipeline() as p:
        enc = p | beam.Create([rows]) | EncryptFields(KEY, FIELDS, encoding="bytes").batched()
        assert_that(enc | "Types" >> beam.Map(lambda b: {(type(r), type(r.ssn)) for r in b}),
                    equal_to([{(beam.Row, bytes)}]), label="types")  # fmt: skip
        back = enc | DecryptFields(KEY, FIELDS).batched() | beam.FlatMap(lambda b: b)
        assert_that(back | "Ids" >> beam.Map(lambda r: (r.id, r.ssn, r.contact.email)),
                    equal_to([(i, f"{i:09d}", f"u{i}@x.com") for i in range(10)]), label="rt")  # fmt: skip


def test_batched_is_a_new_transform() -> None:
    t = EncryptFields(KEY, FIELDS)
    assert t.batched() is not t and not t._lists and t.batched()._lists
