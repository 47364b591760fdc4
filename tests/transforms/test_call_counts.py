"""kmsbeam's own counts (``kmsbeam.call_counts``) agree with the emulator's audit log on the
BundleBasedDirectRunner, whose Beam metrics keep only a bundle's counts."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream

from kmsbeam import DataKeyPolicy, call_counts, forget_data_keys
from kmsbeam.emulator import AccessKey, EmulatorServer
from kmsbeam.transforms import DecryptFields, EncryptFields


@pytest.fixture()
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    ak = ("counts", secrets.token_urlsafe(16))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", ak[0])
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ak[1])
    with EmulatorServer(tmp_path / "kms", [AccessKey(*ak)], rotation_check_seconds=None) as srv:
        srv.engine.ensure_alias("alias/pii")
        yield srv


@pytest.mark.parametrize("across", [False, True])
def test_call_counts_match_the_audit_log_where_beam_metrics_do_not(server: EmulatorServer, across: bool) -> None:
    forget_data_keys()
    uri = f"kms-emulator://{server.endpoint}/alias/pii"
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
    server.stop()  # every call written
    events = [json.loads(line)["eventName"] for line in server.audit.path.read_text().splitlines()]
    made = {name: after[name] - before[name] for name in after}
    assert made["kms_calls_generate_data_key"] == events.count("GenerateDataKey") == (1 if across else 30)
    assert made["data_keys_generated"] == made["kms_calls_generate_data_key"]
    assert made["kms_calls_decrypt"] == events.count("Decrypt") == (1 if across else 30)
    assert made["data_keys_reused"] == (29 if across else 0)
