"""The Beam transforms on real pipelines: round trips, exact KMS-call counts, dead letters."""

from __future__ import annotations

import pickle
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam import DataKeyPolicy, KmsBeamError
from kmsbeam.pipelines.jobs import _fn_api_runner as fn_api_runner
from kmsbeam.transforms import DecryptFields, DecryptRecords, EncryptFields, EncryptRecords

KEY = "local:alias/pii"
FIELDS = ["ssn", "contact.email"]


def in_memory() -> PipelineOptions:
    return PipelineOptions(flags=[], direct_running_mode="in_memory", direct_num_workers=1)


def Pipeline() -> beam.Pipeline:  # noqa: N802 - reads like beam.Pipeline
    """The FnApiRunner, named explicitly: 'DirectRunner' would try Prism (a download) first."""
    options = in_memory()
    return beam.Pipeline(runner=fn_api_runner(options), options=options)


def customers(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": i, "ssn": f"{i:03d}-45-6789", "contact": {"email": f"u{i}@example.com", "tz": "UTC"}}
        for i in range(start, start + n)
    ]


def make(n: int) -> Iterator[dict[str, Any]]:
    for i in range(n):
        yield {"id": i, "ssn": f"{i:09d}"}


def flip(text: str, i: int) -> str:
    """Change one base64 character (a full 6-bit one, so the text stays canonical)."""
    return text[:i] + ("B" if text[i] != "B" else "C") + text[i + 1 :]


def counters(result: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == "kmsbeam":
            out[c.key.metric.name] = out.get(c.key.metric.name, 0) + c.committed
    return out


def test_fields_round_trip_with_metrics() -> None:
    records = customers(500)
    p = Pipeline()
    enc = p | beam.Create(records) | EncryptFields(KEY, FIELDS, context={"ds": "c"}, bind=["id"])
    assert_that(enc | beam.Map(lambda r: r["ssn"].endswith("6789") or r["contact"]["email"].endswith("example.com")),
                equal_to([False] * 500), label="ciphertext")  # fmt: skip
    back = enc | DecryptFields(KEY, FIELDS, context={"ds": "c"}, bind=["id"])
    assert_that(back, equal_to(records), label="plaintext")
    result = p.run()
    result.wait_until_finish()
    c = counters(result)
    assert c["values_encrypted"] == 1000 and c["values_decrypted"] == 1000
    assert c["data_keys_generated"] == 1 and c["kms_calls_generate_data_key"] == 1
    assert c["kms_calls_decrypt"] == 1 and c.get("dead_letters", 0) == 0


@pytest.mark.parametrize(("cap", "keys"), [(None, 1), (10_000, 10)])
def test_exact_kms_calls_for_100k_records(cap: int | None, keys: int) -> None:
    policy = DataKeyPolicy(max_records=cap) if cap else None
    p = Pipeline()
    enc = (p | beam.Create([100_000]) | beam.FlatMap(make)
           | EncryptFields(KEY, ["ssn"], policy=policy))  # fmt: skip
    assert_that(enc | beam.combiners.Count.Globally(), equal_to([100_000]))
    result = p.run()
    result.wait_until_finish()
    c = counters(result)
    assert c["kms_calls_generate_data_key"] == keys and c["data_keys_generated"] == keys


def test_records_round_trip_keeps_cleartext_fields() -> None:
    records = customers(50)
    with Pipeline() as p:
        enc = p | beam.Create(records) | EncryptRecords(key=KEY, keep=["id"])
        assert_that(enc | beam.Map(lambda r: sorted(r)), equal_to([["id", "kmsbeam_record"]] * 50), label="shape")
        assert_that(enc | DecryptRecords(key=KEY, keep=["id"]), equal_to(records), label="rt")


def test_beam_rows_with_nested_rows() -> None:
    rows = [beam.Row(id=i, ssn=f"{i:09d}", contact=beam.Row(email=f"u{i}@x.com")) for i in range(20)]
    with Pipeline() as p:
        enc = p | beam.Create(rows) | EncryptFields(KEY, FIELDS, encoding="bytes")
        assert_that(enc | beam.Map(lambda r: (type(r.ssn), type(r.contact.email))),
                    equal_to([(bytes, bytes)] * 20), label="types")  # fmt: skip
        back = enc | DecryptFields(KEY, FIELDS)
        assert_that(back | beam.Map(lambda r: (r.id, r.ssn, r.contact.email)),
                    equal_to([(r.id, r.ssn, r.contact.email) for r in rows]), label="rt")  # fmt: skip


def test_dead_letters_account_for_every_bad_element() -> None:
    good = customers(10)
    bad_in = [{"id": 100}, {"id": 101, "ssn": {1, 2}, "contact": {"email": "x"}}, "not a record"]
    with Pipeline() as p:
        out, dead = p | "In" >> beam.Create(good + bad_in) | EncryptFields(KEY, FIELDS).with_dead_letters()
        assert_that(out | "CountGood" >> beam.combiners.Count.Globally(), equal_to([10]), label="good")
        assert_that(dead | beam.Map(lambda d: d["reason"].split(":")[0]),
                    equal_to(["missing field", "wrong type", "wrong type"]), label="enc-dead")  # fmt: skip

        tampered = out | beam.Map(lambda r: dict(r, ssn=flip(r["ssn"], -10)))
        malformed = p | "Malformed" >> beam.Create([{"id": 1, "ssn": "plain", "contact": {"email": "y"}}])
        both = (tampered, malformed) | beam.Flatten()
        back, dead2 = both | DecryptFields(KEY, FIELDS).with_dead_letters()
        assert_that(back, equal_to([]), label="nothing-back")
        assert_that(dead2 | beam.Map(lambda d: d["reason"].split(" (")[0]),
                    equal_to(["authentication failed"] * 10 + ["malformed value"]), label="dec-dead")  # fmt: skip


def test_wrong_context_dead_letters_with_the_authentication_reason() -> None:
    with Pipeline() as p:
        enc = p | beam.Create(customers(5)) | EncryptFields(KEY, ["ssn"], context={"ds": "a"})
        back, dead = enc | DecryptFields(KEY, ["ssn"], context={"ds": "b"}).with_dead_letters()
        assert_that(back, equal_to([]), label="none")
        assert_that(dead | beam.Map(lambda d: d["reason"]),
                    equal_to(["authentication failed (field ssn): tampered, moved, or wrong key or context"] * 5),
                    label="reasons")  # fmt: skip


def test_without_dead_letters_a_bad_element_fails_the_pipeline() -> None:
    with pytest.raises(Exception, match="missing field: ssn"):
        with Pipeline() as p:
            _ = p | beam.Create([{"id": 1}]) | EncryptFields(KEY, ["ssn"])


def test_configuration_errors_fail_at_construction() -> None:
    with pytest.raises(KmsBeamError):
        EncryptFields(KEY, ["a", "a.b"])
    with pytest.raises(KmsBeamError):
        EncryptFields("s3://nope", ["a"])
    with pytest.raises(KmsBeamError):
        DecryptFields("alibaba-kms://ak:sk@cn-hangzhou/alias/x", ["a"])
    with pytest.raises(TypeError):
        EncryptFields(KEY, ["a"], context={"n": 1})  # type: ignore[dict-item]


def test_display_data_and_pickles_carry_no_secrets() -> None:
    t = EncryptFields(KEY, FIELDS, context={"tenant": "s3cr3t-tenant"}, bind=["id"])
    shown = t.display_data()
    assert shown["key"] == KEY and shown["fields"] == "ssn,contact.email" and shown["context_keys"] == "tenant"
    assert "s3cr3t-tenant" not in repr(shown)
    blob = pickle.dumps(t)
    assert b"s3cr3t" in blob  # the context travels (it is not secret, it must match on decrypt) ...
    from kmsbeam import open_key_source

    key = open_key_source(KEY, create=True).generate_data_key()
    with pytest.raises(TypeError):
        pickle.dumps(key)  # ... but a data key never pickles
    assert key.plaintext.hex() not in repr(key)


def test_bad_records_spread_over_several_batches_are_each_dead_lettered() -> None:
    records = customers(1500)
    for i in range(0, 1500, 100):  # 15 bad records, in every batch of EncryptFields
        del records[i]["ssn"]
    with Pipeline() as p:
        out, dead = p | beam.Create(records) | EncryptFields(KEY, FIELDS).with_dead_letters()
        assert_that(dead | beam.Map(lambda d: d["record"]["id"]),
                    equal_to([r["id"] for r in records if "ssn" not in r]), label="dead")  # fmt: skip
        back = out | DecryptFields(KEY, FIELDS)
        assert_that(back, equal_to([r for r in records if "ssn" in r]), label="back")
