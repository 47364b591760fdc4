"""Revocation in a stream whose data keys outlive their bundles: after DisableKey a worker keeps
sealing under the key it holds for at most ``data_key_max_age`` seconds, then the next
GenerateDataKey is refused and the job fails with one sentence. Real emulator over HTTP, real
BundleBasedDirectRunner with ``--streaming``, the audit log as the witness."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream

from kmsbeam.emulator import EmulatorServer
from kmsbeam.transforms import EncryptFields

_SERVERS: dict[int, EmulatorServer] = {}  # the DoFns below run in this process (in-process runner)
_SEALED: list[int] = []  # ids of the records encrypted


def sealed(record: dict[str, Any]) -> None:
    _SEALED.append(record["id"])


class DisableOnMarker(beam.DoFn):
    """Passes records on; on the marker record it disables the key, waits ``wait`` seconds and
    drops the marker."""

    def __init__(self, server: int, key_id: str, wait: float) -> None:
        self._server, self._key_id, self._wait = server, key_id, wait

    def process(self, record: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if record.get("marker"):
            _SERVERS[self._server].engine.disable_key(self._key_id)
            time.sleep(self._wait)
            return
        yield record


def run(server: EmulatorServer, wait: float, max_age: float) -> None:
    _SERVERS[id(server)] = server
    _SEALED.clear()
    key_id = server.engine.ensure_alias("alias/pii").key_id
    uri = f"kms-emulator://{server.endpoint}/alias/pii"
    stream = test_stream.TestStream()
    for i in range(5):  # 5 one-record bundles, the marker, 5 more
        stream = stream.add_elements([{"id": i, "ssn": f"s{i}"}]).advance_processing_time(1)
    stream = stream.add_elements([{"marker": True}]).advance_processing_time(1)
    for i in range(5, 10):
        stream = stream.add_elements([{"id": i, "ssn": f"s{i}"}]).advance_processing_time(1)
    stream = stream.advance_watermark_to_infinity()
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))
    _ = (p | stream | beam.ParDo(DisableOnMarker(id(server), key_id, wait))
         | EncryptFields(uri, ["ssn"], data_key_max_age=max_age) | beam.Map(sealed))  # fmt: skip
    p.run().wait_until_finish()


def generate_outcomes(server: EmulatorServer) -> list[str]:
    server.stop()
    lines = server.audit.path.read_text().splitlines()
    return [e["outcome"] for e in map(json.loads, lines) if e["eventName"] == "GenerateDataKey"]


def test_within_the_max_age_the_stream_goes_on_under_the_key_it_holds(stream_kms: EmulatorServer) -> None:
    run(stream_kms, wait=0.0, max_age=60.0)
    assert sorted(_SEALED) == list(range(10))
    assert generate_outcomes(stream_kms) == ["success"]  # one data key: no call after the disable


def test_after_the_max_age_a_disabled_key_stops_the_stream(stream_kms: EmulatorServer) -> None:
    with pytest.raises(Exception, match="disabled") as failed:
        run(stream_kms, wait=1.2, max_age=1.0)
    assert "Traceback" not in str(failed.value).split("\n")[0]
    assert sorted(_SEALED) == list(range(5))  # nothing sealed after the max age
    assert generate_outcomes(stream_kms) == ["success", "error"]  # noticed at the next data key
