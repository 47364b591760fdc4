"""The same pipeline on multi_processing workers and on the PortableRunner (embed/LOOPBACK),
which goes through the runner-API serialization that Flink, Spark and Dataflow use."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam.pipelines.jobs import _fn_api_runner as fn_api_runner
from kmsbeam.transforms import DecryptFields, DecryptRecords, EncryptFields, EncryptRecords

KEY = "local:alias/runners"
RUNNERS = {
    "multi_processing": dict(direct_running_mode="multi_processing", direct_num_workers=2),
    "portable_loopback": dict(runner="PortableRunner", job_endpoint="embed", environment_type="LOOPBACK"),
}


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "ssn": f"{i:09d}", "contact": {"email": f"u{i}@example.com"}} for i in range(n)]


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_round_trip_on_runner(runner: str) -> None:
    data = records(2000)
    options = PipelineOptions(flags=[], **RUNNERS[runner])
    # The FnApiRunner named explicitly: "DirectRunner" would try Prism (a download) first.
    runner = fn_api_runner(options) if runner == "multi_processing" else None
    p = beam.Pipeline(runner=runner, options=options)
    src = p | beam.Create(data) | beam.Reshuffle()
    fields = src | "EncF" >> EncryptFields(KEY, ["ssn", "contact.email"], bind=["id"])
    back = fields | "DecF" >> DecryptFields(KEY, ["ssn", "contact.email"], bind=["id"])
    assert_that(back, equal_to(data), label="fields")
    recs = src | "EncR" >> EncryptRecords(key=KEY, keep=["id"]) | "DecR" >> DecryptRecords(key=KEY, keep=["id"])
    assert_that(recs, equal_to(data), label="records")
    result = p.run()
    result.wait_until_finish()
    counts: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == "kmsbeam":
            counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + c.committed
    assert counts["values_encrypted"] == 2 * 2000 + 2000
    assert counts["values_decrypted"] == 2 * 2000 + 2000
    assert counts["data_keys_generated"] >= 2
