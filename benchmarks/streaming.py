"""Issue 19's figures: data keys across bundles in a streaming pipeline, side by side in one run,
and the nonce-uniqueness check of reused data keys.

Usage: ``python -m benchmarks.streaming [--records N] [--seconds S] [--max-age A]
[--nonce-values V] [--nonce-max-records M] [--no-nonces] [--json PATH]``

Both tables run real Beam streaming pipelines (the BundleBasedDirectRunner with ``--streaming``,
a ``TestStream`` as the source, in this process) against ``kmsbeam emulator serve`` in a child
process (``benchmarks._children``). KMS calls are counted in the emulator's audit log, per side
(the log's counts before and after it): Beam metrics under-report on that runner (it reports
only the last bundle's counters).

Table 1, KMS calls: N records (``foundation.make_record``: ``ssn``, ``email``, ``phone``, 16 B
each), one record per TestStream step (one 1-record bundle per step and transform), through
``EncryptFields`` then ``DecryptFields`` (default ``key_cache_ttl``, 60 s), once with
``DataKeyPolicy(across_bundles=False)`` (a data key per bundle: what main did before issue 19)
and once with ``across_bundles=True`` (the key outlives its bundle until a cap), each on its own
master key. ``--max-age A`` is both sides' ``max_age_seconds`` (default 300). ``--seconds S``
paces the stream over S real seconds (a ``Pace`` step holds record i until i * S / N seconds
after the first; N defaults to 10 a second), so the reuse side shows one GenerateDataKey per
A seconds (``--seconds 60 --max-age 10``: ~6-7). Columns: records, bundles (steps), wall
seconds, GenerateDataKey and Decrypt calls (audit log), calls per record, and the calls an hour
of a stream of 1,000 records/s in 1-record bundles would make per worker thread and key: per
bundle, calls per record x 3.6 M; across bundles, a key lives L = min(max age, max records /
1,000) s, so 3,600 / L GenerateDataKey and 3,600 / L x ceil(L / key_cache_ttl) Decrypt (the
decrypt side unwraps a live key again when its cache entry expires); the notes extrapolate the
measured calls over the stream's own duration.

Table 2, nonces: V values (``--nonce-values``, default 10,000,000) of one 8-character field,
in lists of up to 10,000 records (one list per TestStream step, made by a ``Map`` from a seed so
the stream holds no records), split between two ``EncryptFields(..., encoding="bytes")
.batched()`` transforms on the same key, context and policy (``across_bundles=True``,
``max_records`` M, default V / 7 + 1: the keys rotate mid-stream and mid-list), so both take
data keys from the one process shelf. Every value's data-key commitment K and counter C are
collected (``_streaming_rows.Nonces``: 4 bytes a value) and checked: values, distinct K,
GenerateDataKey calls (audit log), K that both transforms sealed under (``K of both``: the shelf
passed the key from one to the other), duplicate (K, C) pairs (must be 0), wall seconds of the
pipeline and of the check, and this process's peak RSS.
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shlex
import sys
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import _children as children
from benchmarks._env import environ, throwaway
from benchmarks._measure import Load
from benchmarks._streaming_rows import Alternate, Count, Nonces, Pace, counted, make_list, new_token, nonce_check
from benchmarks._vault_rows import audit_counts, emulator_keys

__all__ = ["SIDES", "main", "nonce_run", "side_run"]

AK = ("bench-stream", "bench-stream-secret-1d1d")
ALIASES = ("bench-stream-per-bundle", "bench-stream-reuse")
NONCE_ALIASES = ("bench-stream-nonces", "bench-stream-spare")
SIDES = ("per bundle", "across bundles")  # the rows of table 1, in order
FIELDS = ("ssn", "email", "phone")
CONTEXT = {"bench": "streaming"}
RATE = 1000  # records/s of the stream the hourly figures are for
KEY_CACHE_TTL = 60.0  # DecryptFields' default key_cache_ttl
PER_LIST = 10_000


def _pipeline() -> Any:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    return beam.Pipeline(runner="BundleBasedDirectRunner", options=PipelineOptions(["--streaming"]))


def side_run(key: str, records: int, across: bool, max_age: float, seconds: float | None,
             audit: Path) -> dict[str, Any]:  # fmt: skip
    """One side of table 1: ``records`` 1-record bundles through EncryptFields and DecryptFields."""
    import apache_beam as beam
    from apache_beam.testing.test_stream import TestStream

    from benchmarks.foundation import make_record
    from kmsbeam import DataKeyPolicy
    from kmsbeam.transforms import DecryptFields, EncryptFields

    token = new_token()
    stream = TestStream()
    for i in range(records):
        stream = stream.add_elements([(i, make_record(i)) if seconds else make_record(i)]).advance_processing_time(1)
    p = _pipeline()
    pcoll = p | "Stream" >> stream.advance_watermark_to_infinity()
    if seconds:
        pcoll = pcoll | "Pace" >> beam.ParDo(Pace(token, seconds / records))
    policy = DataKeyPolicy(across_bundles=across, max_age_seconds=max_age)
    enc = pcoll | EncryptFields(key, list(FIELDS), context=CONTEXT, policy=policy)
    _ = enc | DecryptFields(key, list(FIELDS), context=CONTEXT) | "Count" >> beam.ParDo(Count(token))
    before = audit_counts(audit)
    with Load() as load:
        start = time.perf_counter()
        p.run().wait_until_finish()
        wall = time.perf_counter() - start
    calls = audit_counts(audit) - before
    out = counted(token)
    if out != records:
        raise RuntimeError(f"{out:,} records came out of the stream, not {records:,}")
    return {"records": records, "bundles": records, "wall": wall, "GenerateDataKey": calls["GenerateDataKey"],
            "Decrypt": calls["Decrypt"], "load": load.text(), "across_bundles": across}  # fmt: skip


def nonce_run(key: str, values: int, max_records: int, audit: Path) -> dict[str, Any]:
    """Table 2: ``values`` values through two batched EncryptFields sharing a key; the check."""
    import apache_beam as beam
    from apache_beam.testing.test_stream import TestStream

    from kmsbeam import DataKeyPolicy
    from kmsbeam.transforms import EncryptFields

    token = new_token()
    per_list = max(1, min(PER_LIST, values // 20))
    seeds = [(s, min(per_list, values - s)) for s in range(0, values, per_list)]
    stream = TestStream()
    for seed in seeds:
        stream = stream.add_elements([seed]).advance_processing_time(1)
    p = _pipeline()
    parts = (p | "Stream" >> stream.advance_watermark_to_infinity()
             | "Split" >> beam.Partition(Alternate(per_list), 2))  # fmt: skip
    policy = DataKeyPolicy(across_bundles=True, max_records=max_records)
    for j, part in enumerate(parts):
        _ = (part | f"Lists {j}" >> beam.Map(make_list)
             | f"Encrypt {j}" >> EncryptFields(key, "v", context=CONTEXT, encoding="bytes", policy=policy).batched()
             | f"Nonces {j}" >> beam.ParDo(Nonces(token, "v", f"Encrypt {j}")))  # fmt: skip
    before = audit_counts(audit)
    with Load() as load:
        start = time.perf_counter()
        p.run().wait_until_finish()
        wall = time.perf_counter() - start
        start = time.perf_counter()
        check = nonce_check(token)
        check_wall = time.perf_counter() - start
    calls = audit_counts(audit) - before
    if check["values"] != values:
        raise RuntimeError(f"{check['values']:,} values came out of the stream, not {values:,}")
    return {**check, "lists": len(seeds), "per list": per_list, "max records": max_records, "wall": wall,
            "check wall": check_wall, "GenerateDataKey": calls["GenerateDataKey"], "load": load.text(),
            "peak rss mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}  # fmt: skip


def hourly(side: dict[str, Any], max_age: float) -> tuple[float, float]:
    """(GenerateDataKey, Decrypt) an hour of a 1,000 records/s stream of 1-record bundles."""
    if not side["across_bundles"]:
        return side["GenerateDataKey"] / side["records"] * 3.6e6, side["Decrypt"] / side["records"] * 3.6e6
    life = min(max_age, 1_000_000 / RATE)  # DataKeyPolicy's max_records default: 1,000,000
    return 3600 / life, 3600 / life * math.ceil(life / KEY_CACHE_TTL)


def format_tables(res: dict[str, Any], max_age: float, command: str) -> str:
    lines: list[str] = []
    if res.get("sides"):
        cells = [["stream of 1-record bundles", "across_bundles", "records", "bundles", "wall s", "GenerateDataKey",
                  "Decrypt", "calls/record", "GenerateDataKey/h", "Decrypt/h", "load during"]]  # fmt: skip
        notes = []
        for name, s in res["sides"].items():
            g, d = hourly(s, max_age)
            per = (s["GenerateDataKey"] + s["Decrypt"]) / s["records"]
            cells.append([name, str(s["across_bundles"]), f"{s['records']:,}", f"{s['bundles']:,}", f"{s['wall']:.2f}",
                          f"{s['GenerateDataKey']:,}", f"{s['Decrypt']:,}", f"{per:.3f}", f"{g:,.0f}", f"{d:,.0f}",
                          s["load"]])  # fmt: skip
            notes.append(f"  {name}: measured {s['GenerateDataKey']:,} GenerateDataKey + {s['Decrypt']:,} Decrypt "
                         f"in {s['wall']:.1f} s of stream = {3600 / s['wall'] * s['GenerateDataKey']:,.0f} + "
                         f"{3600 / s['wall'] * s['Decrypt']:,.0f} an hour at this run's pace "
                         f"({s['records'] / s['wall']:,.1f} records/s)")  # fmt: skip
        lines += _align(cells, left=(0, 1, 10))
        lines += [f"/h: KMS calls an hour of a {RATE:,} records/s stream of 1-record bundles, per worker thread and "
                  f"key: per bundle = calls/record x 3.6 M; across bundles = 3,600/L GenerateDataKey and 3,600/L x "
                  f"ceil(L/{KEY_CACHE_TTL:g}) Decrypt, L = min(max age {max_age:g} s, 1,000,000 records / {RATE:,}/s)"
                  f" s (key_cache_ttl {KEY_CACHE_TTL:g} s)", *notes, ""]  # fmt: skip
    if res.get("nonces"):
        n = res["nonces"]
        cells = [["nonce check", "values", "lists", "max records/key", "data keys (K)", "GenerateDataKey",
                  "K of both", "most values/key", "duplicate (K, C)", "wall s", "check s", "peak RSS MB",
                  "load during"]]  # fmt: skip
        cells.append(["2 x EncryptFields.batched(), one key", f"{n['values']:,}", f"{n['lists']:,}",
                      f"{n['max records']:,}", f"{n['keys']:,}", f"{n['GenerateDataKey']:,}", f"{n['shared keys']:,}",
                      f"{n['most per key']:,}",
                      f"{n['duplicates']:,}", f"{n['wall']:.2f}", f"{n['check wall']:.2f}",
                      f"{n['peak rss mb']:,.0f}", n["load"]])  # fmt: skip
        lines += _align(cells, left=(0, 12))
        lines += [f"(K, C): a value's data-key commitment and counter; K of both: data keys both transforms sealed "
                  f"under (taken from the one shelf); lists of up to {n['per list']:,} records, one per step, "
                  f"alternating between the two transforms; peak RSS of this whole process", ""]  # fmt: skip
    lines.append(f"command: {command}")
    return "\n".join(lines)


def _align(cells: list[list[str]], left: tuple[int, ...]) -> list[str]:
    w = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    out = ["  ".join(c.ljust(w[i]) if i in left else c.rjust(w[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    return out[:1] + ["-" * len(out[0])] + out[1:]


def run(records: int, max_age: float, seconds: float | None, nonce_values: int, nonce_max_records: int,
        say: Any = lambda _m: None) -> dict[str, Any]:  # fmt: skip
    """Both tables: the emulator in a child process, the pipelines in this one."""
    from kmsbeam.alikms import clear_clients
    from kmsbeam.keys.registry import clear_key_source_cache

    res: dict[str, Any] = {"sides": {}, "nonces": None}
    with throwaway("kmsbeam-bench-streaming-") as work, \
            children.emulator(work / "kms", dict([AK])) as (_proc, endpoint), \
            environ({"ALIBABA_CLOUD_ACCESS_KEY_ID": AK[0], "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK[1]}):  # fmt: skip
        clear_clients()
        clear_key_source_cache()
        audit = work / "kms" / "audit.jsonl"
        if records:
            keys = emulator_keys(endpoint, AK, ALIASES)
            for name, key, across in zip(SIDES, keys, (False, True)):
                say(f"{name}: {records:,} records, 1 a step{f', over {seconds:g} s' if seconds else ''} ...")
                res["sides"][name] = side = side_run(key, records, across, max_age, seconds, audit)
                say(f"{name}: {side['wall']:.1f} s, GenerateDataKey {side['GenerateDataKey']:,}, "
                    f"Decrypt {side['Decrypt']:,}")  # fmt: skip
        if nonce_values:
            key = emulator_keys(endpoint, AK, NONCE_ALIASES)[0]
            say(f"nonces: {nonce_values:,} values, max_records {nonce_max_records:,} ...")
            res["nonces"] = n = nonce_run(key, nonce_values, nonce_max_records, audit)
            say(f"nonces: {n['values']:,} values, {n['keys']:,} keys, {n['duplicates']:,} duplicates, "
                f"{n['wall']:.1f} s + check {n['check wall']:.1f} s")  # fmt: skip
        clear_clients()
        clear_key_source_cache()
    return res


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.streaming", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, metavar="N", help="records of table 1 (default 1,000; with "
                        "--seconds S: 10 x S); 0 skips table 1")  # fmt: skip
    parser.add_argument("--seconds", type=float, metavar="S", help="stream the records over S real seconds")
    parser.add_argument("--max-age", type=float, default=300.0, metavar="A",
                        help="DataKeyPolicy max_age_seconds of both sides (default 300)")  # fmt: skip
    parser.add_argument("--nonce-values", type=int, default=10_000_000, metavar="V",
                        help="values of the nonce check (default 10,000,000); 0 skips it")  # fmt: skip
    parser.add_argument("--nonce-max-records", type=int, metavar="M", help="max_records of the nonce check's "
                        "policy (default V / 7 + 1)")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    records = args.records if args.records is not None else (int(10 * args.seconds) if args.seconds else 1000)
    if records < 0 or args.nonce_values < 0 or (args.seconds is not None and args.seconds <= 0) or args.max_age <= 0:
        parser.error("--records and --nonce-values must be >= 0, --seconds and --max-age > 0")
    if args.seconds and not records:
        parser.error("--seconds needs records (--records N > 0)")
    max_records = args.nonce_max_records or args.nonce_values // 7 + 1

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    with Load() as load:
        res = run(records, args.max_age, args.seconds, args.nonce_values, max_records, say)
    command = "python -m benchmarks.streaming " + shlex.join(sys.argv[1:] if argv is None else list(argv))
    print(f"BundleBasedDirectRunner --streaming, TestStream; KMS: kmsbeam emulator serve (child process), calls "
          f"from its audit log; cpus {os.cpu_count()}; load during the whole run {load.text()} "
          f"(1-minute, min/mean/max)")  # fmt: skip
    print(format_tables(res, args.max_age, command.rstrip()))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "max_age": args.max_age, "seconds": args.seconds,
                                               **res}, indent=2, default=str) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
