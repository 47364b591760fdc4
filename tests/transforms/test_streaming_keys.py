"""Data keys across bundles (issue 19): a streaming pipeline of tiny bundles on the real
BundleBasedDirectRunner (``--streaming``, TestStream) against the KMS emulator over HTTP, and the
same transforms in batch on the FnApiRunner.

KMS calls are counted in the emulator's audit log (by master key: every branch of the one
streaming pipeline has its own), never in Beam metrics: that runner reports only the last
bundle's counters. The streaming pipeline runs once (100 steps; the issue's 500 steps are the benchmark's, at
~5 ms per transform and step on this runner) and each branch has its own test.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing import test_stream

from kmsbeam import DataKeyPolicy, forget_data_keys
from kmsbeam.alikms import clear_clients
from kmsbeam.emulator import EmulatorServer
from kmsbeam.keys.registry import clear_key_source_cache
from kmsbeam.pipelines.jobs import _fn_api_runner as fn_api_runner
from kmsbeam.transforms import DecryptFields, DecryptRecords, EncryptFields, EncryptRecords

AK, SECRET = "streaming", "streaming-secret-7e7e"
CONTEXT = {"dataset": "stream"}
TTL = 3600.0  # the decrypt cache outlives the run: one Decrypt per data key, however slow the machine
# alias: (policy, data keys expected for R records in S steps); "records" is EncryptRecords, the
# rest EncryptFields; "capped" is across bundles with max_records=R/10 (records per key a multiple of 2)
BRANCHES: dict[str, tuple[Callable[[int], DataKeyPolicy], Callable[[int, int], int]]] = {
    "per-bundle": (lambda r: DataKeyPolicy(across_bundles=False), lambda r, s: s),
    "decided": (lambda r: DataKeyPolicy(), lambda r, s: 1),  # across_bundles=None: streaming, so across bundles
    "capped": (lambda r: DataKeyPolicy(across_bundles=True, max_records=r // 10), lambda r, s: 10),
    "records": (lambda r: DataKeyPolicy(), lambda r, s: 1),
}
# (records, steps): 2 records a step, one 2-record bundle per step and transform. The issue's
# 1,000 records in 500 steps (~60 s on this runner, ~5 ms per transform and step) are measured
# by ``python -m benchmarks.streaming`` instead.
SIZES = [pytest.param((200, 100), id="100-steps")]
_OUT: dict[str, list[Any]] = {}  # what each branch decrypted (the runner runs in this process)


def customers(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "ssn": f"{i:03d}-45-6789", "contact": {"email": f"u{i}@example.com"}}
            for i in range(start, start + n)]  # fmt: skip


def _keep(record: Any, branch: str) -> None:
    """Keep what ``branch`` decrypted (a module function: pickled by reference, so the runner's
    copy appends to this module's ``_OUT``)."""
    _OUT[branch].append(record)


def _audit(server: EmulatorServer) -> dict[str, Counter[str]]:
    """Calls by API name of each master key id; stops the server first (every call written)."""
    server.stop()
    calls: dict[str, Counter[str]] = {}
    for event in map(json.loads, server.audit.path.read_text(encoding="utf-8").splitlines()):
        if event.get("outcome") == "success" and event.get("keyId"):
            calls.setdefault(event["keyId"], Counter())[event["eventName"]] += 1
    return calls


@pytest.fixture(scope="module")
def credentials() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", AK)
        mp.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", SECRET)
        mp.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
        clear_clients()
        clear_key_source_cache()
        yield
    clear_clients()
    clear_key_source_cache()


@pytest.fixture(scope="module", params=SIZES)
def stream(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           credentials: None) -> tuple[int, int, dict[str, Counter[str]]]:  # fmt: skip
    """One streaming run of every branch: (records, steps, the audit counts of each branch's key)."""
    records_n, steps = request.param
    forget_data_keys()  # no data key of an earlier run on this process's shelf
    clear_key_source_cache()
    data = tmp_path_factory.mktemp("kms")
    with EmulatorServer(data, {AK: SECRET}, rotation_check_seconds=None) as server:
        ids = {name: server.engine.ensure_alias(f"alias/{name}").key_id for name in BRANCHES}
        ts = test_stream.TestStream()
        for i in range(0, records_n, records_n // steps):
            ts = ts.add_elements(customers(records_n // steps, i)).advance_processing_time(1)
        p = beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))
        records = p | ts.advance_watermark_to_infinity()
        for name, (policy_of, _) in BRANCHES.items():
            policy = policy_of(records_n)
            key = f"kms-emulator://{server.endpoint}/alias/{name}"
            _OUT[name] = []
            if name == "records":
                enc = records | f"Enc {name}" >> EncryptRecords(key, keep=["id"], context=CONTEXT, policy=policy)
                back = enc | f"Dec {name}" >> DecryptRecords(key, keep=["id"], context=CONTEXT, key_cache_ttl=TTL)
            else:
                fields = ["ssn", "contact.email"]
                enc = records | f"Enc {name}" >> EncryptFields(key, fields, context=CONTEXT, policy=policy)
                back = enc | f"Dec {name}" >> DecryptFields(key, fields, context=CONTEXT, key_cache_ttl=TTL)
            _ = back | f"Keep {name}" >> beam.Map(_keep, name)
        p.run().wait_until_finish()
    audit = _audit(server)
    return records_n, steps, {name: audit.get(key_id, Counter()) for name, key_id in ids.items()}


@pytest.mark.parametrize("branch", list(BRANCHES))
def test_streaming_round_trip_and_kms_calls(branch: str, stream: tuple[int, int, dict[str, Counter[str]]]) -> None:
    records_n, steps, calls = stream
    keys = BRANCHES[branch][1](records_n, steps)
    assert sorted(_OUT[branch], key=lambda r: r["id"]) == customers(records_n)
    assert calls[branch]["GenerateDataKey"] == keys  # one per data key
    assert calls[branch]["Decrypt"] == keys  # one per data key (the cache outlives the run)


@pytest.mark.parametrize(("across", "keys"), [(None, 2), (False, 2), (True, 1)])
def test_batch_keeps_one_data_key_per_bundle(across: bool | None, keys: int, tmp_path: Path,
                                             credentials: None) -> None:  # fmt: skip
    """Two batch runs in one process (one bundle each): ``None`` means per bundle in batch, so
    two data keys; ``True`` (the control) shows the second run would have taken the first's."""
    forget_data_keys()  # no data key of an earlier test on this process's shelf
    clear_key_source_cache()
    with EmulatorServer(tmp_path / "kms", {AK: SECRET}, rotation_check_seconds=None) as server:
        key_id = server.engine.ensure_alias("alias/batch").key_id
        key = f"kms-emulator://{server.endpoint}/alias/batch"
        fields = ["ssn", "contact.email"]
        for run in range(2):
            options = PipelineOptions(flags=[], direct_running_mode="in_memory", direct_num_workers=1)
            p = beam.Pipeline(runner=fn_api_runner(options), options=options)
            _OUT[f"batch{run}"] = []
            enc = p | beam.Create(customers(300)) | EncryptFields(key, fields, context=CONTEXT,
                                                                  policy=DataKeyPolicy(across_bundles=across))  # fmt: skip
            _ = enc | DecryptFields(key, fields, context=CONTEXT) | beam.Map(_keep, f"batch{run}")
            p.run().wait_until_finish()
            assert sorted(_OUT[f"batch{run}"], key=lambda r: r["id"]) == customers(300)
    calls = _audit(server)[key_id]
    assert calls["GenerateDataKey"] == keys
    assert calls["Decrypt"] == keys
