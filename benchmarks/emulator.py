"""The KMS emulator over loopback: GenerateDataKey and Decrypt requests/s and latency.

``python -m benchmarks.emulator [--seconds S] [--processes P] [--threads T] [--records N]
[--json PATH]``

The emulator runs as users run it, in its own process (``kmsbeam emulator serve --port 0``,
throwaway data directory, audit log on, every request signature-checked). Clients are the
official SDK, unmodified: P worker processes of T threads, one ``Client`` per thread, each
thread calling in a loop for S seconds after a common start signal. The SDK costs more CPU
per call than the server does, so one Python process of client threads cannot saturate the
server; the default is 2 processes x 2 threads (the best of 1-3 x 1-4 on a 2-core machine:
more threads only queue on each client process's GIL). ``server CPU per call`` is the emulator
process's user+system CPU over the run divided by the calls it answered (Linux ``/proc``):
1e6 / that is what one core of server can serve when clients are not the limit.

Latencies are per call as the SDK sees them (request built, signed, sent, answered,
parsed). Errors are counted and reported; the run fails if there is any.

``--records N`` (default 1,000,000; 0 skips it) also runs N records x 3 fields through
``EncryptFields`` and then ``DecryptFields`` with a ``kms-emulator://`` key (FnApiRunner,
in_memory, one worker; the emulator in-process) and reports the KMS calls each made, from
kmsbeam's Beam metrics and from the emulator's audit log.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from benchmarks._table import Row, format_table, rows_as_json

__all__ = ["OPERATIONS", "measure", "main"]

OPERATIONS = ("GenerateDataKey", "Decrypt")
ACCESS_KEY, SECRET = "bench", "bench-secret-not-for-production"
CONTEXT = {"table": "customers", "column": "ssn"}


def _client(endpoint: str) -> Any:
    from alibabacloud_kms20160120.client import Client
    from alibabacloud_tea_openapi.models import Config

    return Client(Config(endpoint=endpoint, protocol="http", access_key_id=ACCESS_KEY,
                         access_key_secret=SECRET))  # fmt: skip


def _call(client: Any, operation: str, key_id: str, blob: str) -> None:
    from alibabacloud_kms20160120 import models

    if operation == "GenerateDataKey":
        request = models.GenerateDataKeyRequest(key_id=key_id, encryption_context=CONTEXT)
        client.generate_data_key(request)
    else:
        client.decrypt(models.DecryptRequest(ciphertext_blob=blob, encryption_context=CONTEXT))


def _worker(endpoint: str, operation: str, key_id: str, blob: str, threads: int,
            seconds: float, go: Event, ready: Any, results: Any) -> None:  # fmt: skip
    """One client process: ``threads`` SDK clients calling until ``seconds`` after ``go``."""
    clients = [_client(endpoint) for _ in range(threads)]
    for client in clients:  # connect and warm up before the clock starts
        _call(client, operation, key_id, blob)
    ready.put(os.getpid())
    latencies: list[list[float]] = [[] for _ in clients]
    errors = [0] * threads
    go.wait()
    began = time.time()
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        client, mine = clients[i], latencies[i]
        while (start := time.perf_counter()) < deadline:
            try:
                _call(client, operation, key_id, blob)
            except Exception:  # counted: the run reports and fails on any error
                errors[i] += 1
            mine.append(time.perf_counter() - start)

    pool = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    results.put(([x for xs in latencies for x in xs], sum(errors), began, time.time()))


def _server_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux), or NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _start_server(data: Path) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "KMSBEAM_EMULATOR_ACCESS_KEYS": f"{ACCESS_KEY}:{SECRET}"}
    proc = subprocess.Popen([sys.executable, "-m", "kmsbeam.pipelines", "emulator", "serve",
                             "--port", "0", "--data", str(data)], env=env, text=True,
                            stdout=subprocess.PIPE)  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if "http://" not in line:
        proc.kill()
        raise RuntimeError(f"the emulator did not start: {line!r}")
    return proc, line.split("http://", 1)[1].split()[0]


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def _run(endpoint: str, operation: str, key_id: str, blob: str, processes: int, threads: int,
         seconds: float) -> tuple[list[float], int, float]:  # fmt: skip
    """All latencies (sorted), the error count and the elapsed seconds of one operation."""
    ctx = multiprocessing.get_context("spawn")
    go, ready, results = ctx.Event(), ctx.Queue(), ctx.Queue()
    args = (endpoint, operation, key_id, blob, threads, seconds, go, ready, results)
    workers = [ctx.Process(target=_worker, args=args) for _ in range(processes)]
    for w in workers:
        w.start()
    for _ in workers:  # every client imported, connected and warmed up
        ready.get(timeout=120)
    go.set()
    outcomes = [results.get(timeout=seconds + 120) for _ in workers]
    for w in workers:
        w.join()
    latencies = sorted(x for lat, _, _, _ in outcomes for x in lat)
    elapsed = max(o[3] for o in outcomes) - min(o[2] for o in outcomes)
    return latencies, sum(o[1] for o in outcomes), elapsed


def measure(seconds: float = 5.0, processes: int = 2, threads: int = 2,
            operations: Sequence[str] = OPERATIONS) -> list[Row]:  # fmt: skip
    """Run the emulator and the clients; one throughput and two latency rows per operation,
    then the server's CPU per call. Raises ``RuntimeError`` if any call failed."""
    from alibabacloud_kms20160120 import models

    data = Path(tempfile.mkdtemp(prefix="kmsbeam-emulator-bench-"))
    proc, endpoint = _start_server(data)
    rows: list[Row] = []
    try:
        setup = _client(endpoint)
        meta = setup.create_key(models.CreateKeyRequest(description="bench")).body.key_metadata
        blob = setup.generate_data_key(models.GenerateDataKeyRequest(
            key_id=meta.key_id, encryption_context=CONTEXT)).body.ciphertext_blob  # fmt: skip
        cpu0, answered = _server_cpu(proc.pid), 0
        for operation in operations:
            latencies, errors, elapsed = _run(endpoint, operation, meta.key_id, blob,
                                              processes, threads, seconds)  # fmt: skip
            if errors:
                raise RuntimeError(f"{errors} of {len(latencies)} {operation} calls failed")
            answered += len(latencies) + processes * threads  # + the warm-up calls
            who = f"{processes} proc x {threads} threads, {len(latencies):,} calls, {elapsed:.1f} s"
            rows += [
                Row(f"emulator {operation}", len(latencies) / elapsed, "req/s", who),
                Row(f"emulator {operation} p50", _percentile(latencies, 0.50) * 1000, "ms"),
                Row(f"emulator {operation} p99", _percentile(latencies, 0.99) * 1000, "ms"),
            ]
        per_call = (_server_cpu(proc.pid) - cpu0) / answered * 1e6
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
        shutil.rmtree(data, ignore_errors=True)
    note = f"~{1e6 / per_call:,.0f} calls/s per server core" if per_call > 0 else "no /proc"
    rows.append(Row("emulator server CPU per call", per_call, "us", note))
    return rows


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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emulator",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--seconds", type=float, default=5.0, help="per operation (default 5)")
    parser.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="SDK clients a process (default 2)")
    parser.add_argument("--records", type=int, default=1_000_000,
                        help="records through an EncryptFields/DecryptFields pipeline (0: skip)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.processes < 1 or args.threads < 1:
        parser.error("--seconds, --processes and --threads must be positive")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cpus {os.cpu_count()} ({usable} usable), load average "
          + " ".join(f"{x:.2f}" for x in os.getloadavg()), file=sys.stderr)  # fmt: skip
    rows = measure(args.seconds, args.processes, args.threads)
    if args.records > 0:
        rows += pipeline_calls(args.records)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows_as_json(rows), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
