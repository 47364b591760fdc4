"""A retried bundle never reuses a nonce: the BundleBasedDirectRunner retries a failed bundle
(up to 4 attempts); values sealed by the failed attempt reserved their counters, and the retry
seals under later counters of the same data key (or a new key). Real emulator, real runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream

from kmsbeam.emulator import EmulatorServer
from kmsbeam.formats.envelope import FIELD_V1, parse
from kmsbeam.transforms import EncryptFields

_FAILED_ONCE: set[int] = set()  # the flaky records that have failed (this process)
_OUT: list[dict[str, Any]] = []


class Flaky(dict):  # type: ignore[type-arg]
    """A record whose ``ssn`` cannot be read the first time (a worker fault mid-bundle)."""

    def __iter__(self) -> Iterator[Any]:  # so that dict(record) reads through __getitem__
        return dict.__iter__(self)

    def __getitem__(self, key: Any) -> Any:
        record_id = dict.__getitem__(self, "id")
        if key == "ssn" and record_id not in _FAILED_ONCE:
            _FAILED_ONCE.add(record_id)
            raise RuntimeError("a worker fault mid-bundle")
        return dict.__getitem__(self, key)


def keep(batch: list[dict[str, Any]]) -> None:
    _OUT.extend(batch)


def test_a_retried_bundle_seals_under_fresh_counters(stream_kms: EmulatorServer) -> None:
    _FAILED_ONCE.clear()
    _OUT.clear()
    uri = f"kms-emulator://{stream_kms.endpoint}/alias/pii"
    first = [{"id": i, "ssn": f"s{i}"} for i in range(20)]
    second = [{"id": i, "ssn": f"s{i}"} for i in range(20, 39)] + [Flaky(id=39, ssn="s39")]
    stream = (test_stream.TestStream().add_elements([first, second])  # one bundle, two lists
              .advance_processing_time(1).add_elements([[{"id": 40, "ssn": "s40"}]])
              .advance_watermark_to_infinity())  # fmt: skip
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))
    _ = p | stream | EncryptFields(uri, ["ssn"]).batched() | beam.Map(keep)
    p.run().wait_until_finish()
    assert _FAILED_ONCE == {39}  # the bundle failed once and was retried
    assert sorted(r["id"] for r in _OUT) == list(range(41))  # every record once, none twice
    nonces = {r["id"]: (v.commitment, int.from_bytes(v.body[:4], "big"))
              for r, v in ((r, parse(r["ssn"], FIELD_V1)) for r in _OUT)}  # fmt: skip
    assert len(set(nonces.values())) == 41
    stream_kms.stop()
    events = [json.loads(line)["eventName"] for line in stream_kms.audit.path.read_text().splitlines()]
    generated = events.count("GenerateDataKey")
    # the failed attempt sealed records 0-19 under counters 0-19 of a fresh data key; the retry
    # sealed them again under later counters of that key (its lease went back at the next
    # start_bundle), or under a new data key (a new DoFn instance): never the same pair twice
    first = [nonces[i] for i in range(20)]
    if generated == 1:
        assert min(n for _, n in first) >= 20
    else:
        assert generated == 2 and len({c for c, _ in nonces.values()}) == 1
