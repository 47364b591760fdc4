"""The KMS emulator over loopback: GenerateDataKey and Decrypt calls/s, latency, CPU per call.

``python -m benchmarks.emulator [--calls N | --seconds S] [--processes K] [--threads T]
[--base PYTHONPATH [--ceiling]] [--repeat R] [--records N] [--json PATH]``

The emulator runs in its own process (an ``EmulatorServer`` on a free loopback port, throwaway
data directory, audit log on, every request signature-checked), stopped with SIGTERM by PID
and waited for (``benchmarks._children``). Clients are the official SDK, unmodified: K worker
processes of T threads, one ``Client`` per thread, each thread making its share of N calls
(or calling for S seconds) after a common start signal. Reported per operation: calls/s, p50
and p99 latency as the SDK sees them, and the load average sampled during the run; then the
server's CPU per call (user+system of the server process from ``/proc/PID/stat``, over the
calls it answered: 1e6 / that is what one core of server serves) and the clients' CPU per
call (``time.process_time`` of each client process over its calls). On a 2-core machine
calls/s is at most 2e6 / (server + client CPU per call in us).

``--base PYTHONPATH`` compares: the server runs from a PYTHONPATH holding another kmsbeam
(e.g. ``pip install --no-deps --target /tmp/base_site <old checkout>``) and from this
checkout, in turn (base, this, base, this ... ``--repeat`` times each, a fresh server each
run), GenerateDataKey only, same clients; one table side by side with the median of each
figure and every run's value. ``--ceiling`` adds a null server (GenerateDataKey answered at
once with a constant body, no signature check, no keystore): what the clients alone allow.

``--records N`` (default 0: skipped) also reports the KMS calls of a pipeline of N records
(``benchmarks.emulator_pipeline``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from multiprocessing.synchronize import Event
from pathlib import Path
from typing import Any

from benchmarks._children import start, stop
from benchmarks._measure import Load
from benchmarks._table import Row, format_table, rows_as_json

__all__ = ["OPERATIONS", "compare", "main", "measure"]

OPERATIONS = ("GenerateDataKey", "Decrypt")
ACCESS_KEY, SECRET = "bench", "bench-secret-not-for-production"
CONTEXT = {"table": "customers", "column": "ssn"}
REPO = str(Path(__file__).resolve().parents[1])
_SERVER = """
import os, signal, sys, threading
from kmsbeam.emulator import EmulatorServer
if os.environ.get("BENCH_NULL"):  # the ceiling: GenerateDataKey answered with a constant body
    from kmsbeam.emulator import _service
    real, body = _service.Service.handle, b'{"RequestId":"0","KeyId":"k","Plaintext":"cA=="}'
    def handle(self, request):
        if request.headers.get("x-acs-action") != ["GenerateDataKey"]:
            return real(self, request)
        return _service.Response(200, [("Content-Type", "application/json;charset=utf-8")], body)
    _service.Service.handle = handle
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
keys = {os.environ["BENCH_AK"]: os.environ.pop("BENCH_SECRET")}
with EmulatorServer(sys.argv[1], keys, rotation_check_seconds=None) as server:
    print("http://" + server.endpoint, flush=True)
    stop.wait()
"""


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


def _worker(endpoint: str, operation: str, key_id: str, blob: str, threads: int, calls: int,
            seconds: float, go: Event, ready: Any, results: Any) -> None:  # fmt: skip
    """One client process: ``threads`` SDK clients making ``calls`` calls each (0: calling
    until ``seconds`` after ``go``)."""
    clients = [_client(endpoint) for _ in range(threads)]
    for client in clients:  # connect and warm up before the clock starts
        _call(client, operation, key_id, blob)
    ready.put(os.getpid())
    latencies: list[list[float]] = [[] for _ in clients]
    errors = [0] * threads
    go.wait()
    began, cpu0 = time.time(), time.process_time()
    deadline = time.perf_counter() + seconds

    def loop(i: int) -> None:
        client, mine = clients[i], latencies[i]
        while len(mine) < calls if calls else (time.perf_counter() < deadline):
            start = time.perf_counter()
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
    cpu = time.process_time() - cpu0
    results.put(([x for xs in latencies for x in xs], sum(errors), began, time.time(), cpu))


def _server_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (Linux), or NaN elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def _server(pythonpath: str, null: bool = False) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """An emulator process importing kmsbeam from ``pythonpath``: (process, ``host:port``);
    ``null``: GenerateDataKey answered at once with a constant body (no check, no keystore)."""
    data = Path(tempfile.mkdtemp(prefix="kmsbeam-emulator-bench-"))
    env = {**os.environ, "PYTHONPATH": pythonpath, "BENCH_AK": ACCESS_KEY, "BENCH_SECRET": SECRET,
           **({"BENCH_NULL": "1"} if null else {})}  # fmt: skip
    proc = start([sys.executable, "-c", _SERVER, str(data)], env=env, cwd=data,
                 stdout=subprocess.PIPE)  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "http://" not in line:
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield proc, line.split("http://", 1)[1].split()[0]
    finally:
        stop(proc)  # SIGTERM by PID, then waited for
        shutil.rmtree(data, ignore_errors=True)


def _percentile(sorted_values: Sequence[float], fraction: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * fraction))]


def _run(endpoint: str, operation: str, key_id: str, blob: str, processes: int, threads: int,
         calls: int, seconds: float) -> tuple[list[float], int, float, float]:  # fmt: skip
    """All latencies (sorted), the error count, the elapsed seconds and the clients' CPU
    seconds of one operation; ``calls`` in all (0: for ``seconds``)."""
    ctx = multiprocessing.get_context("spawn")
    go, ready, results = ctx.Event(), ctx.Queue(), ctx.Queue()
    each = -(-calls // (processes * threads)) if calls else 0
    args = (endpoint, operation, key_id, blob, threads, each, seconds, go, ready, results)
    workers = [ctx.Process(target=_worker, args=args) for _ in range(processes)]
    for w in workers:
        w.start()
    for _ in workers:  # every client imported, connected and warmed up
        ready.get(timeout=120)
    go.set()
    outcomes = [results.get(timeout=seconds + 600) for _ in workers]
    for w in workers:
        w.join()
    latencies = sorted(x for o in outcomes for x in o[0])
    elapsed = max(o[3] for o in outcomes) - min(o[2] for o in outcomes)
    return latencies, sum(o[1] for o in outcomes), elapsed, sum(o[4] for o in outcomes)


def measure(seconds: float = 5.0, processes: int = 2, threads: int = 2,
            operations: Sequence[str] = OPERATIONS, calls: int = 0,
            pythonpath: str = REPO, null: bool = False) -> list[Row]:  # fmt: skip
    """Run an emulator (kmsbeam from ``pythonpath``) and the clients: a calls/s and two latency
    rows per operation, then the server's CPU per call (the clients' in its notes). ``calls``
    per operation, or 0 to call for ``seconds``. Raises ``RuntimeError`` if any call failed."""
    from alibabacloud_kms20160120 import models

    rows: list[Row] = []
    with _server(pythonpath, null) as (proc, endpoint):
        setup = _client(endpoint)
        meta = setup.create_key(models.CreateKeyRequest(description="bench")).body.key_metadata
        blob = setup.generate_data_key(models.GenerateDataKeyRequest(
            key_id=meta.key_id, encryption_context=CONTEXT)).body.ciphertext_blob  # fmt: skip
        server_cpu = client_cpu = 0.0
        answered = made = 0
        for operation in operations:
            cpu0 = _server_cpu(proc.pid)
            with Load(every=0.5) as load:
                latencies, errors, elapsed, cpu = _run(endpoint, operation, meta.key_id, blob,
                                                       processes, threads, calls, seconds)  # fmt: skip
            server_cpu += _server_cpu(proc.pid) - cpu0
            if errors:
                raise RuntimeError(f"{errors} of {len(latencies)} {operation} calls failed")
            answered += len(latencies) + processes * threads  # + the warm-up calls
            client_cpu, made = client_cpu + cpu, made + len(latencies)
            who = f"{processes} proc x {threads} threads, {len(latencies):,} calls, {elapsed:.1f} s"
            rows += [
                Row(f"emulator {operation}", len(latencies) / elapsed, "req/s", who, load.text()),
                Row(f"emulator {operation} p50", _percentile(latencies, 0.50) * 1000, "ms"),
                Row(f"emulator {operation} p99", _percentile(latencies, 0.99) * 1000, "ms"),
            ]
    per_call = server_cpu / answered * 1e6
    note = f"~{1e6 / per_call:,.0f} calls/s per server core" if per_call > 0 else "no /proc"
    note += f"; clients {client_cpu / max(made, 1) * 1e6:,.0f} us CPU per call"
    rows.append(Row("emulator server CPU per call", per_call, "us", note))
    return rows


def compare(base: str, calls: int, processes: int, threads: int, repeat: int,
            ceiling: bool = False) -> list[Row]:  # fmt: skip
    """GenerateDataKey against the server from ``base`` and from this checkout, in turn;
    ``ceiling`` adds a third side, a null server (what the clients alone allow)."""
    sides = {"base": (base, False), "this": (REPO, False)}
    if ceiling:
        sides["null server"] = (REPO, True)
    got: dict[str, list[list[Row]]] = {name: [] for name in sides}
    for _ in range(max(1, repeat)):
        for name, (path, null) in sides.items():
            got[name].append(measure(0, processes, threads, ("GenerateDataKey",), calls, path, null))
    rows = []
    for name, runs in got.items():  # equal repeats on both sides; the median of each figure
        rates, cpus = [r[0].value for r in runs], [r[-1].value for r in runs]
        clients = [float(r[-1].notes.split("clients ")[1].split()[0].replace(",", "")) for r in runs]
        loads = "; ".join(r[0].load for r in runs)
        what = f"median of {len(runs)} runs of {runs[0][0].notes.split(', ')[0]}, {calls:,} calls"
        rows.append(Row(f"{name}: GenerateDataKey", _median(rates), "req/s",
                        f"{what}: {', '.join(f'{x:.0f}' for x in rates)}", loads))  # fmt: skip
        rows.append(Row(f"{name}: server CPU per call", _median(cpus), "us",
                        ", ".join(f"{x:.0f}" for x in cpus)))  # fmt: skip
        rows.append(Row(f"{name}: client CPU per call", _median(clients), "us",
                        ", ".join(f"{x:.0f}" for x in clients)))  # fmt: skip
    return rows


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.emulator",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    parser.add_argument("--calls", type=int, default=0, help="calls per operation (default: --seconds)")
    parser.add_argument("--seconds", type=float, default=5.0, help="per operation without --calls (default 5)")
    parser.add_argument("--processes", type=int, default=2, help="client processes (default 2)")
    parser.add_argument("--threads", type=int, default=2, help="SDK clients a process (default 2)")
    parser.add_argument("--base", metavar="PYTHONPATH", help="compare with the kmsbeam found there")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each side with --base (default 1)")
    parser.add_argument("--ceiling", action="store_true",
                        help="with --base, also a null server answering GenerateDataKey at once")
    parser.add_argument("--records", type=int, default=0,
                        help="records through an EncryptFields/DecryptFields pipeline (default 0: skip)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.processes < 1 or args.threads < 1 or args.calls < 0:
        parser.error("--seconds, --processes and --threads must be positive, --calls not negative")
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"cpus {os.cpu_count()} ({usable} usable)", file=sys.stderr)
    if args.base:
        rows = compare(args.base, args.calls or 3000, args.processes, args.threads, args.repeat,
                       args.ceiling)  # fmt: skip
    else:
        rows = measure(args.seconds, args.processes, args.threads, calls=args.calls)
    if args.records > 0:
        from benchmarks.emulator_pipeline import pipeline_calls

        rows += pipeline_calls(args.records)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows_as_json(rows), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
