"""The foundation measurements: Beam overhead of EncryptFields, core crypto rates, bytes on disk.

The records and the Beam rows live here; the rows without Beam (core rates, bytes on disk) in
``benchmarks._core_rows``; ``run_all`` runs both in table order.

Every measurement runs on the same generated records (``make_record``): an ``id`` int, a
``name`` and three 16-byte strings ``ssn``, ``email``, ``phone``. The caller must point
``KMSBEAM_HOME`` at a throwaway keystore (``benchmarks._env.throwaway``) before ``run_all``:
the key ``local:alias/bench`` is created there on first use.

Pipelines run on the FnApiRunner (the engine the DirectRunner falls back to), with
``direct_running_mode=in_memory`` and ``direct_num_workers=1`` set explicitly. Naming
``runner="DirectRunner"`` would first try Prism, which downloads a binary from the internet.
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from benchmarks._measure import Timing, interleaved, load_text
from benchmarks._table import ROWS, Row
from kmsbeam import open_key_source
from kmsbeam.transforms import EncryptFields  # type: ignore[import-not-found, unused-ignore]

__all__ = [
    "FIELDS",
    "KEY",
    "ROWS",
    "Row",
    "make_record",
    "make_records",
    "run_all",
]

KEY = "local:alias/bench"
FIELDS = ("ssn", "email", "phone")
SHARDS = 8
SINK_NAMESPACE = "benchmarks"
Progress = Callable[[str], None]


# -- the data ---------------------------------------------------------------------------
def make_record(i: int) -> dict[str, Any]:
    """Record ``i``: ssn, email and phone are 16 ASCII bytes each, digits scrambled."""
    x = (i * 2654435761 + 12345) % 10**12
    return {
        "id": i,
        "name": f"Customer {i}",
        "ssn": f"SSN-{x:012d}",
        "email": f"u{x % 10**10:010d}@e.co",
        "phone": f"+1-555-{x % 10**9:09d}",
    }


def make_records(shard: int, n: int, shards: int) -> Iterator[dict[str, Any]]:
    """The records of one shard of ``n`` (a FlatMap body: generation inside the pipeline)."""
    for i in range(shard * n // shards, (shard + 1) * n // shards):
        yield make_record(i)


def identity(record: dict[str, Any]) -> dict[str, Any]:
    return record


class CountingSink(beam.DoFn):  # type: ignore[misc, unused-ignore]
    """Counts elements; one counter increment per bundle, so counting costs ~nothing."""

    def __init__(self) -> None:
        self._n = 0

    def start_bundle(self) -> None:
        self._n = 0

    def process(self, element: Any) -> Iterator[Any]:
        self._n += 1
        return iter(())

    def finish_bundle(self) -> None:
        beam.metrics.Metrics.counter(SINK_NAMESPACE, "records_out").inc(self._n)


# -- 1. Beam: identity vs EncryptFields ---------------------------------------------------
def write_jsonl(n: int, directory: str) -> str:
    """The ``n`` records as one JSON-lines file (the input of the I/O pipelines)."""
    path = os.path.join(directory, "records.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(make_record(i)) + "\n")
    return path


def run_pipeline(n: int, encrypt: bool, jsonl: str | None = None) -> tuple[float, dict[str, int]]:
    """One pipeline run; (seconds, counters).

    ``jsonl`` None: generate ``n`` records in the pipeline, map them, count them (Beam's
    per-record cost only). Else read that JSON-lines file, map, write JSON lines to a temp
    dir (a minimal ETL job: what the "naive prototype 1.5x" in FIELD-NOTES was measured on).
    """
    options = PipelineOptions(flags=[], direct_running_mode="in_memory", direct_num_workers=1)
    p = beam.Pipeline(runner=FnApiRunner(), options=options)
    out_dir = tempfile.mkdtemp(prefix="kmsbeam-bench-out-")
    if jsonl is None:
        records = (
            p
            | "Shards" >> beam.Create(range(SHARDS))
            | "Generate" >> beam.FlatMap(make_records, n, SHARDS)
        )
    else:
        records = p | "Read" >> beam.io.ReadFromText(jsonl) | "Parse" >> beam.Map(json.loads)
    if encrypt:
        mapped = records | "Encrypt" >> EncryptFields(KEY, list(FIELDS), encoding="text")
    else:
        mapped = records | "Identity" >> beam.Map(identity)
    _ = mapped | "Count" >> beam.ParDo(CountingSink())
    if jsonl is not None:
        _ = (
            mapped
            | "Dump" >> beam.Map(json.dumps)
            | "Write" >> beam.io.WriteToText(os.path.join(out_dir, "out"), file_name_suffix=".jsonl")
        )
    t0 = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - t0
    shutil.rmtree(out_dir, ignore_errors=True)
    counters: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        ns = c.key.metric.namespace
        if ns in ("kmsbeam", SINK_NAMESPACE):
            name = c.key.metric.name
            counters[name] = counters.get(name, 0) + int(c.committed or c.attempted or 0)
    if counters.get("records_out") != n:
        raise RuntimeError(f"pipeline counted {counters.get('records_out')} records, not {n}")
    return seconds, counters


def _pair(n: int, repeat: int, progress: Progress, jsonl: str | None) -> dict[str, Timing]:
    """Identity and EncryptFields, ``repeat`` runs each, interleaved (I, E, I, E, ...)."""
    kind = " JSONL" if jsonl else ""

    def after(name: str, t: Timing) -> None:
        progress(f"{name}{kind} pipeline, run {t.runs}/{repeat}: {t.wall[-1]:.2f} s")

    return interleaved(repeat, {"identity": lambda: run_pipeline(n, False, jsonl),
                                "EncryptFields": lambda: run_pipeline(n, True, jsonl)}, after)  # fmt: skip


def beam_rows(n: int, repeat: int, progress: Progress) -> list[Row]:
    """The two pipeline pairs (JSONL I/O, then in memory), after an untimed warm-up."""
    for encrypt in (False, True):  # first-pipeline costs (imports, caches) stay out of timing
        run_pipeline(SHARDS, encrypt)

    def per(seconds: float) -> str:
        return f"{seconds / n * 1e6:.1f} us/record"

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kmsbeam-bench-") as d:
        jsonl = write_jsonl(n, d)
        for source, names, target in (
            (jsonl, ROWS[0:3], "target <= 1.2"),
            (None, ROWS[3:6], "no I/O: Beam's own per-record cost only"),
        ):
            runs = _pair(n, repeat, progress, source)
            ident, enc = runs["identity"].best, runs["EncryptFields"].best
            c = runs["EncryptFields"].result[1]
            li, le = runs["identity"].load.text(), runs["EncryptFields"].load.text()
            both = load_text(runs["identity"], runs["EncryptFields"])
            rows += [
                Row(names[0], ident, "s", f"{n:,} records, {per(ident)}, best of {repeat}", li),
                Row(names[1], enc, "s", f"{c.get('values_encrypted', 0):,} values, {per(enc)}, "
                    f"best of {repeat}", le),  # fmt: skip
                Row(names[2], enc / ident, "x", f"{target}; +{(enc - ident) / n * 1e6:.1f} us/record; "
                    f"best of {repeat} each, interleaved", both),  # fmt: skip
            ]
            if source is None:
                rows += [
                    Row(ROWS[6], c.get("kms_calls_generate_data_key", 0), "calls", "Beam metric", le),
                    Row(ROWS[7], c.get("data_keys_generated", 0), "keys", "Beam metric", le),
                ]
    return rows


# -- all ----------------------------------------------------------------------------------
def run_all(n: int, repeat: int = 1, progress: Progress | None = None) -> list[Row]:
    """Every measurement on ``n`` records, in table order."""
    say: Progress = progress or (lambda _msg: None)
    open_key_source(KEY, create=True)  # the key exists before any worker opens it

    def step(label: str, fn: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        out = fn()
        say(f"[{label}] done in {time.perf_counter() - t0:.1f} s")
        return out

    from benchmarks._core_rows import core_rows, size_rows

    rows: list[Row] = step("beam", lambda: beam_rows(n, repeat, say))
    core_list, core = step("core", lambda: core_rows(n, repeat, say))
    rows += core_list
    rows += step("sizes", lambda: size_rows(core))
    return rows
