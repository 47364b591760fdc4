"""The KMS calls of a pipeline on the emulator, from Beam metrics and from its audit log.

``pipeline_calls(n)`` runs n records x 3 fields through ``EncryptFields`` and then
``DecryptFields`` with a ``kms-emulator://`` key (FnApiRunner, in_memory, one worker; the
emulator in-process); ``python -m benchmarks.emulator --records N`` prints its rows.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._table import Row
from benchmarks.emulator import ACCESS_KEY, CONTEXT, SECRET

__all__ = ["pipeline_calls"]


def pipeline_calls(n: int) -> list[Row]:
    """KMS calls for ``n`` records through EncryptFields then DecryptFields on the emulator."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from benchmarks.foundation import FIELDS, SHARDS, CountingSink, make_records
    from kmsbeam.emulator import EmulatorServer
    from kmsbeam.transforms import DecryptFields, EncryptFields

    data = Path(tempfile.mkdtemp(prefix="kmsbeam-emulator-bench-"))
    saved = {k: os.environ.get(k) for k in ("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET")}
    os.environ.update(ALIBABA_CLOUD_ACCESS_KEY_ID=ACCESS_KEY, ALIBABA_CLOUD_ACCESS_KEY_SECRET=SECRET)
    rows: list[Row] = []
    try:
        with EmulatorServer(data, {ACCESS_KEY: SECRET}) as server:
            server.engine.create_alias("alias/bench", server.engine.create_key("bench").key_id)
            key = f"kms-emulator://{server.endpoint}/alias/bench"
            options = PipelineOptions(flags=[], direct_running_mode="in_memory", direct_num_workers=1)
            p = beam.Pipeline(runner=FnApiRunner(), options=options)
            enc = (p | beam.Create(range(SHARDS)) | beam.FlatMap(make_records, n, SHARDS)
                   | EncryptFields(key, list(FIELDS), context=CONTEXT))  # fmt: skip
            _ = enc | DecryptFields(key, list(FIELDS), context=CONTEXT) | beam.ParDo(CountingSink())
            t0 = time.perf_counter()
            result = p.run()
            result.wait_until_finish()
            seconds = time.perf_counter() - t0
            counts: dict[str, int] = {}
            for c in result.metrics().query()["counters"]:
                counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + int(c.committed or 0)
            audit: dict[str, int] = {}
            with open(server.audit.path, encoding="utf-8") as f:
                for line in f:
                    action = json.loads(line).get("eventName", "")
                    audit[action] = audit.get(action, 0) + 1
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        shutil.rmtree(data, ignore_errors=True)
    if counts.get("records_out") != n:
        raise RuntimeError(f"the pipeline counted {counts.get('records_out')} records, not {n}")
    what = f"{n:,} records x {len(FIELDS)} fields, encrypt then decrypt, {seconds:.1f} s"
    rows.append(Row("pipeline GenerateDataKey calls", counts.get("kms_calls_generate_data_key", 0),
                    "calls", f"{what}; audit log: {audit.get('GenerateDataKey', 0)}"))  # fmt: skip
    rows.append(Row("pipeline Decrypt calls", counts.get("kms_calls_decrypt", 0), "calls",
                    f"one per data key per worker; audit log: {audit.get('Decrypt', 0)}"))  # fmt: skip
    return rows
