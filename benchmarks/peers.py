"""kmsbeam next to its peers: field encryption, per-value envelope SDKs, naive KMS use, Parquet.

Usage: ``python -m benchmarks.peers [--records N] [--rows N] [--naive-records N]
[--budget S] [--repeat R] [--quick] [--json PATH]``

One run, one table, the same generated data for every row: N records x 3 fields of 16 bytes
(``benchmarks.foundation.make_record``; default 1,000,000) and a table of ``--rows`` rows
(``benchmarks.parquet.make_table``; default 2,000,000). Rows:

- kmsbeam ``FieldEncryptor.encrypt_batch`` (512 records per call; bytes = the reference,
  ratio 1.00) and text, ``encrypt`` one record per call, ``FieldDecryptor.decrypt_batch``;
- AWS Encryption SDK, one message per value, caching CMM over a raw AES master key (no AWS
  access), with the unsigned committing suite and with the SDK's default (ECDSA-signed) suite;
- Tink AEAD (AES256_GCM), one local keyset, one ``encrypt`` per value;
- a naive envelope job: one GenerateDataKey per record against the kmsbeam KMS emulator (own
  process, 127.0.0.1, official Alibaba SDK), on a subset (``--naive-records``);
- Parquet: plain write, pyarrow PME, kmsbeam cell columns, on the table.

Peers slower than kmsbeam run for at most ``--budget`` seconds each (the notes give the count).
Every row is the best of ``--repeat`` runs (the same number for every row, so every ratio
compares equal repeats) and prints the load average sampled while it ran.
KMS calls are counted, never assumed: see each module's docstring and the README.

Progress goes to stderr; machine facts and the table to stdout. The keystore is a throwaway
``KMSBEAM_HOME`` (set before anything opens a key) and, with every temp file, lives under
``/tmp/peers-*`` and is deleted at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

__all__ = ["QUICK", "main", "run"]

KEY = "local:alias/peers"
QUICK = {"records": 2_000, "rows": 5_000, "naive_records": 50, "budget": 1.0}


def _args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, metavar="N",
                        help="records of 3 x 16-byte fields (default 1,000,000)")
    parser.add_argument("--rows", type=int, default=2_000_000, metavar="N",
                        help="rows of the Parquet table (default 2,000,000)")
    parser.add_argument("--naive-records", type=int, default=10_000, metavar="N",
                        help="records for the GenerateDataKey-per-record row (default 10,000)")
    parser.add_argument("--budget", type=float, default=15.0, metavar="S",
                        help="seconds at most for each slow per-value peer (default 15)")
    parser.add_argument("--repeat", type=int, default=3, metavar="R",
                        help="runs of every row, the best kept (default 3; the Parquet writes interleaved)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2,000 records, 5,000 rows, 50 naive records, 1 s budget")
    parser.add_argument("--json", metavar="PATH", help="also write machine facts and rows as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in QUICK.items():
            setattr(args, name, value)
        args.repeat = 1
    if min(args.records, args.rows, args.naive_records, args.repeat) < 1 or args.budget <= 0:
        parser.error("--records, --rows, --naive-records, --repeat and --budget must be positive")
    return args  # fmt: skip


def _version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def machine_facts(argv: Sequence[str]) -> dict[str, Any]:
    """CPU, load and versions: what a reader needs to compare two runs."""
    import platform
    import shlex

    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    facts: dict[str, Any] = {
        "command": shlex.join([sys.executable, "-m", "benchmarks.peers", *argv]),
        "cpus": f"{cpus} ({usable} usable)",
        "load": "1-minute load average sampled every second during each row (min/mean/max)",
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    for name in ("kmsbeam", "cryptography", "pyarrow", "aws-encryption-sdk", "tink",
                 "alibabacloud-kms20160120"):  # fmt: skip
        facts[name] = _version(name)
    return facts


def run(args: argparse.Namespace, work: Path, say: Any) -> list[Any]:
    """Every row, in table order. ``KMSBEAM_HOME`` must already be a throwaway keystore."""
    from benchmarks._peers_local import esdk_rows, kmsbeam_rows, tink_rows
    from benchmarks._peers_naive import naive_rows
    from benchmarks._peers_parquet import parquet_rows
    from benchmarks.foundation import make_record
    from benchmarks.parquet import make_table
    from kmsbeam import open_key_source

    open_key_source(KEY, create=True)

    def step(label: str, fn: Any) -> Any:
        t0 = time.perf_counter()
        out = fn()
        say(f"[{label}] done in {time.perf_counter() - t0:.1f} s")
        return out

    records = step("records", lambda: [make_record(i) for i in range(args.records)])
    rows: list[Any] = step("kmsbeam", lambda: kmsbeam_rows(KEY, records, say, args.repeat))
    rows += step("esdk", lambda: esdk_rows(records, args.budget, say, args.repeat))
    rows += step("tink", lambda: tink_rows(records, args.budget, say, args.repeat))
    rows += step("naive", lambda: naive_rows(records, args.naive_records, say, args.repeat))
    del records
    table = step("table", lambda: make_table(args.rows))
    rows += step("parquet", lambda: parquet_rows(KEY, table, work, args.repeat, say))
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    from benchmarks.__main__ import _quiet_logging

    argv = list(sys.argv[1:] if argv is None else argv)
    args = _args(argv)
    _quiet_logging()
    from benchmarks._peers_table import PEER_ROWS, format_peers, peers_as_json

    from benchmarks._env import throwaway

    facts = machine_facts(argv)

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    with throwaway("peers-") as work:
        say(f"KMSBEAM_HOME={work / 'home'} (throwaway keystore, key {KEY})")
        say(f"{args.records:,} records, {args.rows:,} rows, naive subset {args.naive_records:,} records, "
            f"budget {args.budget:g} s")  # fmt: skip
        rows = run(args, work, say)
    elapsed = time.perf_counter() - t0
    if [r.name for r in rows] != list(PEER_ROWS):
        raise RuntimeError("the rows are not in table order")
    for name, value in facts.items():
        print(f"{name + ':':<28} {value}")
    print(f"{'data:':<28} {args.records:,} records x 3 fields of 16 B; Parquet {args.rows:,} rows; "
          f"every row best of {args.repeat}")  # fmt: skip
    print(f"{'total elapsed:':<28} {elapsed:.1f} s")
    print()
    print(format_peers(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": facts, "records": args.records, "rows": args.rows,
                       "naive_records": args.naive_records, "budget_seconds": args.budget,
                       "elapsed_seconds": elapsed, "table": peers_as_json(rows)}, f, indent=2)  # fmt: skip
            f.write("\n")
        say(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
