"""Beam pipelines against a faulty KMS: the kmsbeam emulator injects throttling and latency (the
pipeline completes with exact output), or stays down (the pipeline fails cleanly, with a clear
reason and no partial output). Retry delays are shortened through the documented
``KMSBEAM_KMS_*`` variables, which the in-memory FnApiRunner's workers share."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam import DataKeyPolicy
from kmsbeam.alikms import clear_clients
from kmsbeam.emulator import EmulatorServer, Faults
from kmsbeam.pipelines.jobs import _fn_api_runner as fn_api_runner
from kmsbeam.keys.registry import clear_key_source_cache
from kmsbeam.transforms import DecryptFields, EncryptFields

AK, SECRET = "pipeline", "pipeline-secret-4c4c"
FIELDS = ["ssn", "contact.email"]
CONTEXT = {"dataset": "customers"}


def Pipeline() -> beam.Pipeline:  # noqa: N802 - reads like beam.Pipeline
    """The FnApiRunner, named explicitly: 'DirectRunner' would try Prism (a download) first."""
    options = PipelineOptions(flags=[], direct_running_mode="in_memory", direct_num_workers=1)
    return beam.Pipeline(runner=fn_api_runner(options), options=options)


def customers(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "ssn": f"{i:03d}-45-6789", "contact": {"email": f"u{i}@example.com"}}
            for i in range(n)]  # fmt: skip


def counters(result: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == "kmsbeam":
            out[c.key.metric.name] = out.get(c.key.metric.name, 0) + c.committed
    return out


@pytest.fixture(autouse=True)
def environment(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", AK)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
    monkeypatch.setenv("KMSBEAM_KMS_BACKOFF_SECONDS", "0.005")
    monkeypatch.setenv("KMSBEAM_KMS_MAX_BACKOFF_SECONDS", "0.02")
    clear_clients()
    clear_key_source_cache()
    yield
    clear_clients()
    clear_key_source_cache()


def test_pipeline_completes_exactly_under_throttling_and_latency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KMSBEAM_KMS_MAX_ATTEMPTS", "15")
    faults = Faults(latency_ms=20, throttle_rate=0.3, seed=5, retry_after_ms=10)
    with EmulatorServer(tmp_path / "kms", {AK: SECRET}, faults=faults,
                        rotation_check_seconds=None) as server:  # fmt: skip
        server.engine.ensure_alias("alias/pii")
        key = f"kms-emulator://{server.endpoint}/alias/pii"
        records = customers(300)
        p = Pipeline()
        policy = DataKeyPolicy(max_records=50)
        encrypt = EncryptFields(key, FIELDS, context=CONTEXT, policy=policy)
        enc = p | beam.Create(records) | encrypt
        assert_that(enc | "Sealed" >> beam.Map(lambda r: r["ssn"].endswith("6789")),
                    equal_to([False] * 300), label="ciphertext")  # fmt: skip
        back = enc | DecryptFields(key, FIELDS, context=CONTEXT)
        assert_that(back, equal_to(records), label="round-trip")
        result = p.run()
        result.wait_until_finish()
        server.stop()
        events = [json.loads(line) for line in server.audit.path.read_text().splitlines()]
    c = counters(result)
    assert c["values_encrypted"] == 600 and c["values_decrypted"] == 600
    assert c["data_keys_generated"] == 6 and c["kms_calls_generate_data_key"] == 6
    assert c["kms_calls_decrypt"] == 6 and c.get("dead_letters", 0) == 0
    # the KMS did throttle, and every data key was generated exactly once
    assert any(e.get("errorCode") == "Rejected.Throttling" for e in events)
    generated = [e for e in events if e["eventName"] == "GenerateDataKey"]
    assert sum(e["outcome"] == "success" for e in generated) == 6


@pytest.mark.parametrize("down", ["stopped", "503"])
def test_pipeline_fails_cleanly_when_the_kms_stays_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, down: str
) -> None:
    monkeypatch.setenv("KMSBEAM_KMS_MAX_ATTEMPTS", "3")
    out = tmp_path / "out"
    out.mkdir()
    emulator = EmulatorServer(tmp_path / "kms", {AK: SECRET}, rotation_check_seconds=None)
    with socket.socket() as held, emulator as server:
        server.engine.ensure_alias("alias/pii")
        if down == "stopped":  # a bound port that never listens: every connection is refused
            held.bind(("127.0.0.1", 0))
            endpoint = f"127.0.0.1:{held.getsockname()[1]}"
        else:
            server.faults = Faults(error_rate=1.0, seed=1)
            endpoint = server.endpoint
        key = f"kms-emulator://{endpoint}/alias/pii"
        p = Pipeline()
        sink = beam.io.WriteToText(str(out / "part"), file_name_suffix=".jsonl")
        _ = (p | beam.Create(customers(40)) | EncryptFields(key, FIELDS, context=CONTEXT)
             | beam.Map(json.dumps) | sink)  # fmt: skip
        with pytest.raises(Exception) as info:
            p.run().wait_until_finish()
    message = str(info.value)
    assert "key source unavailable" in message and f"kms-emulator at {endpoint}" in message
    assert "GenerateDataKey on alias/pii gave up after" in message
    assert ("Connection refused" if down == "stopped" else "(HTTP 5") in message
    assert not list(out.glob("part*")), "no partial output"
