"""``python -m benchmarks.oss_io``: a JSONL encrypt and decrypt with input and output on the
loopback OSS server vs on local disk, on ``multi_processing`` with 2 workers.

Usage: ``python -m benchmarks.oss_io [--records 1000000] [--workers 2] [--only local|oss]``

Each row is one ``kmsbeam`` job run through the public API (``plan_encrypt``/``plan_decrypt`` +
``run_plan``, what the CLI runs): its wall time (planning included), the bytes it moved and
its KMS calls (Beam metrics: every ``kms_calls_*`` counter). Bytes moved on OSS are what the
loopback server counted (request bodies in, response bodies out, over every operation:
reads, writes, lists, copies; a ranged GET counts its whole range even when the reader closes
it early); on local disk they are the input files' size read and the output shards' size
written. The server (``kmsbeam.oss.LoopbackOssServer``) runs in a child
process, as a remote endpoint would: it checks every signature and CRC-64 in Python, on the
same 2 cores as the job. Records: 3 fields of 16 bytes (``benchmarks.foundation``); key:
a throwaway ``local:`` keystore. Needs encrypt and decrypt on ``oss://`` paths (issue 15 part
1); without them the OSS rows say why they failed and the local rows still run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from benchmarks._children import OssServer
from benchmarks._measure import Load

KEY = "local:alias/bench-oss-io"
FIELDS = ["ssn", "email", "phone"]


@dataclass
class Result:
    job: str
    where: str
    seconds: float = 0.0
    records: int = 0
    read: int = 0
    written: int = 0
    requests: int = 0
    kms_calls: int = 0
    load: str = "-"  # min/mean/max 1-minute load average during the job
    error: str = ""


def write_input(path: str, n: int) -> None:
    from benchmarks.foundation import make_records

    with open(path, "w", encoding="utf-8") as f:
        for record in make_records(0, n, 1):
            f.write(json.dumps(record) + "\n")


def upload(path: str, url: str) -> None:
    from kmsbeam.oss import oss_client

    with open(path, "rb") as src, oss_client().open_write(url) as dst:
        while chunk := src.read(8 << 20):
            dst.write(chunk)


def _kms_calls(counters: dict[str, int]) -> int:
    return sum(v for k, v in counters.items() if k.startswith("kmsbeam/kms_calls_"))


def run_job(action: str, src: str, dst: str, beam_args: list[str]) -> Any:
    from kmsbeam.pipelines import JobSpec, plan_decrypt, plan_encrypt, run_plan

    if action == "encrypt":
        spec = JobSpec("encrypt", src, dst, fields=FIELDS, key=KEY, bind=["id"], beam_args=beam_args)
        plan = plan_encrypt(spec, notice=lambda line: None)
    else:
        plan = plan_decrypt(JobSpec("decrypt", src, dst, key=KEY, beam_args=beam_args))
    return run_plan(plan)


def measure(action: str, where: str, src: str, dst: str, beam_args: list[str],
            server: OssServer | None) -> Result:  # fmt: skip
    row = Result(action, where)
    before = server.counters() if server else {}
    started = time.perf_counter()
    try:
        with Load() as load:
            result = run_job(action, src, dst, beam_args)
    except Exception as exc:  # noqa: BLE001 - a row that failed says why, the others still run
        row.error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:140] if str(exc) else ''}"
        return row
    row.seconds = time.perf_counter() - started
    row.load = load.text()
    row.records = result.records_out
    row.kms_calls = _kms_calls(result.counters)
    if server:
        after = server.counters()
        row.read, row.written = after["out"] - before["out"], after["in"] - before["in"]
        row.requests = after["requests"] - before["requests"]
    else:
        row.read, row.written = result.bytes_in, result.bytes_out
    return row


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f}"


def format_rows(rows: list[Result]) -> str:
    head = ("job", "storage", "seconds", "records/s", "MB read", "MB written", "requests", "KMS calls", "load during")
    lines = []
    for r in rows:
        if r.error:
            lines.append((r.job, r.where, "failed: " + r.error, "", "", "", "", "", ""))
            continue
        lines.append((r.job, r.where, f"{r.seconds:.1f}", f"{r.records / r.seconds:,.0f}", _mb(r.read),
                      _mb(r.written), f"{r.requests:,}" if r.where == "oss" else "-", f"{r.kms_calls:,}", r.load))  # fmt: skip
    widths = [max(len(str(x)) for x in col) for col in zip(head, *[ln for ln in lines if ln[3]])]
    out = ["  ".join(h.ljust(w) if i < 2 else h.rjust(w) for i, (h, w) in enumerate(zip(head, widths)))]
    out.append("-" * len(out[0]))
    for ln in lines:
        if not ln[3]:
            out.append(f"{ln[0].ljust(widths[0])}  {ln[1].ljust(widths[1])}  {ln[2]}")
            continue
        out.append("  ".join(str(x).ljust(w) if i < 2 else str(x).rjust(w)
                             for i, (x, w) in enumerate(zip(ln, widths))))  # fmt: skip
    return "\n".join(out)


def run(records: int, workers: int, only: str | None = None, log: Any = sys.stderr) -> list[Result]:
    """Measure the rows; the environment points kmsbeam at a throwaway keystore and the server."""
    import kmsbeam.transforms  # noqa: F401  registers oss://
    from kmsbeam.oss import clear_clients

    tmp = tempfile.mkdtemp(prefix="kmsbeam-oss-io-")
    server = OssServer()
    os.environ.update({"KMSBEAM_HOME": os.path.join(tmp, "keystore"), **server.environ()})
    os.environ.pop("ALIBABA_CLOUD_SECURITY_TOKEN", None)
    clear_clients()
    beam_args = ["--direct_running_mode", "multi_processing", "--direct_num_workers", str(workers)]
    rows: list[Result] = []
    try:
        source = os.path.join(tmp, "in.jsonl")
        write_input(source, records)
        print(f"input: {records:,} records, {os.path.getsize(source) / 1e6:,.1f} MB", file=log)
        if only != "oss":
            for action, src, dst in (("encrypt", source, os.path.join(tmp, "enc")),
                                     ("decrypt", os.path.join(tmp, "enc"), os.path.join(tmp, "plain"))):  # fmt: skip
                rows.append(measure(action, "local", src, dst, beam_args, None))
                print(format_rows(rows[-1:]).splitlines()[-1], file=log)
        if only != "local":
            upload(source, "oss://bench/raw/in.jsonl")
            for action, src, dst in (("encrypt", "oss://bench/raw/in.jsonl", "oss://bench/enc/"),
                                     ("decrypt", "oss://bench/enc/", "oss://bench/plain/")):  # fmt: skip
                rows.append(measure(action, "oss", src, dst, beam_args, server))
                print(format_rows(rows[-1:]).splitlines()[-1], file=log)
    finally:
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.oss_io", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, help="records (default 1,000,000)")
    parser.add_argument("--workers", type=int, default=2, help="multi_processing workers (default 2)")
    parser.add_argument("--only", choices=("local", "oss"), help="only the local or the OSS rows")
    args = parser.parse_args(argv)
    from kmsbeam.pipelines._noise import quiet_beam_logging

    quiet_beam_logging()
    rows = run(args.records, args.workers, args.only)
    print(f"{args.records:,} records x 3 fields of 16 B, JSONL; multi_processing, {args.workers} workers; "
          f"loopback OSS server in a child process")  # fmt: skip
    print(format_rows(rows))
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
