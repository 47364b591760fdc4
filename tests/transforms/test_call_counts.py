"""kmsbeam's own counts (``kmsbeam.call_counts``) agree with the emulator's audit log on the
BundleBasedDirectRunner, whose Beam metrics keep only a bundle's counts."""

from __future__ import annotations

import json
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream

from kmsbeam import DataKeyPolicy, call_counts
from kmsbeam.emulator import EmulatorServer
from kmsbeam.transforms import DecryptFields, EncryptFields


@pytest.mark.parametrize("across", [False, True])
def test_call_counts_match_the_audit_log_where_beam_metrics_do_not(stream_kms: EmulatorServer, across: bool) -> None:
    uri = f"kms-emulator://{stream_kms.endpoint}/alias/pii"
    stream = test_stream.TestStream()
    for i in range(0, 60, 2):  # 30 bundles of 2 records
        stream = stream.add_elements([{"id": i, "ssn": f"s{i}"}, {"id": i + 1, "ssn": f"s{i + 1}"}])
        stream = stream.advance_processing_time(1)
    stream = stream.advance_watermark_to_infinity()
    before = call_counts()
    p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))
    _ = (p | stream | EncryptFields(uri, ["ssn"], policy=DataKeyPolicy(across_bundles=across))
         | DecryptFields(uri, ["ssn"]))  # fmt: skip
    p.run().wait_until_finish()
    after = call_counts()
    stream_kms.stop()  # every call written
    events = [json.loads(line)["eventName"] for line in stream_kms.audit.path.read_text().splitlines()]
    made = {name: after[name] - before[name] for name in after}
    assert made["kms_calls_generate_data_key"] == events.count("GenerateDataKey") == (1 if across else 30)
    assert made["data_keys_generated"] == made["kms_calls_generate_data_key"]
    assert made["kms_calls_decrypt"] == events.count("Decrypt") == (1 if across else 30)
    assert made["data_keys_reused"] == (29 if across else 0)
