"""The foundation measurements: Beam overhead of EncryptFields, core crypto rates, bytes on disk.

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

import gc
import json
import os
import shutil
import struct
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks._measure import Timing, best_of, interleaved, load_text
from benchmarks._table import ROWS, Row
from kmsbeam import DataKeyCache, FieldDecryptor, FieldEncryptor, KeySource, open_key_source
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


# -- 2/3. core rates (no Beam) --------------------------------------------------------------
@dataclass
class CoreOutputs:
    """What later measurements reuse: the records and their encryptions."""

    records: list[dict[str, Any]]
    as_bytes: list[dict[str, Any]]
    as_text: list[dict[str, Any]]
    keys_for_bytes: int


BATCH = 512  # records per encrypt_batch call, as EncryptFields batches


def _encrypt_all(
    source: KeySource, records: list[dict[str, Any]], encoding: str
) -> tuple[list[dict[str, Any]], int]:
    enc = FieldEncryptor(list(FIELDS), source, encoding=encoding)
    out: list[dict[str, Any]] = []
    for i in range(0, len(records), BATCH):
        out += enc.encrypt_batch(records[i : i + BATCH])
    return out, enc.keys.generated


def _encrypt_each(source: KeySource, records: list[dict[str, Any]]) -> None:
    enc = FieldEncryptor(list(FIELDS), source, encoding="text")
    for r in records:
        enc.encrypt(r)


def core_rows(n: int, repeat: int, progress: Progress) -> tuple[list[Row], CoreOutputs]:
    source = open_key_source(KEY, create=True)
    records = [make_record(i) for i in range(n)]
    values = n * len(FIELDS)
    rows: list[Row] = []

    def measure(name: str, fn: Callable[[], Any], note: str) -> Any:
        # The harness keeps millions of records and their encryptions alive (a pipeline
        # never does), which makes the cyclic GC rescan them again and again: pause it while
        # timing. The pipeline rows above run with the GC on, as Beam does.
        gc.collect()
        gc.disable()
        try:
            t = best_of(repeat, fn)
        finally:
            gc.enable()
        secs = t.best
        rows.append(Row(name, values / secs, "values/s", f"{note}, best of {repeat}", t.load.text()))
        progress(f"{name}: {values / secs:,.0f} values/s")
        return t.result

    outputs: dict[str, tuple[list[dict[str, Any]], int]] = {}
    for encoding, name in (("bytes", ROWS[8]), ("text", ROWS[9])):
        note = f"FieldEncryptor, {BATCH} records per call, target >= 1,000,000"
        outputs[encoding] = measure(name, partial(_encrypt_all, source, records, encoding), note)
    measure(ROWS[10], partial(_encrypt_each, source, records), "FieldEncryptor.encrypt")

    aead = AESGCM(AESGCM.generate_key(256))
    # An AAD as long as kmsbeam's (envelope.py): label, u16 + field name, key commitment K.
    # GCM's cost depends on length only.
    aad = bytes(len(b"kmsbeam.field.v1") + 2 + len("email") + 16)
    msg = records[0]["ssn"].encode()  # 16 bytes (kmsbeam seals 17: the codec's type tag)
    pack = struct.Struct(">8xI").pack

    def raw(a: bytes | None) -> None:
        enc = aead.encrypt
        for i in range(values):
            enc(pack(i), msg, a)

    for a, name in ((None, ROWS[11]), (aad, ROWS[12])):
        note = "one AESGCM object, counter nonce" + (f", {len(aad)} B AAD" if a else "")
        measure(name, partial(raw, a), note)

    def decrypt_all(encrypted: list[dict[str, Any]], batch: bool) -> None:
        dec = FieldDecryptor(list(FIELDS), source, cache=DataKeyCache())
        if batch:
            for i in range(0, len(encrypted), BATCH):
                dec.decrypt_batch(encrypted[i : i + BATCH])
        else:
            for r in encrypted:
                dec.decrypt(r)
        if dec.values != values:
            raise RuntimeError(f"decrypted {dec.values} values, not {values}")

    for encoding, name in (("bytes", ROWS[13]), ("text", ROWS[14])):
        note = f"FieldDecryptor, {BATCH} records per call, fresh cache"
        measure(name, partial(decrypt_all, outputs[encoding][0], True), note)
    measure(ROWS[15], partial(decrypt_all, outputs["text"][0], False), "FieldDecryptor.decrypt")
    core = CoreOutputs(records, outputs["bytes"][0], outputs["text"][0], outputs["bytes"][1])
    return rows, core


# -- 4/5. sizes -----------------------------------------------------------------------------
def _parquet_bytes(array: pa.Array, directory: str, name: str, **kwargs: Any) -> int:
    path = os.path.join(directory, f"{name}.parquet")
    pq.write_table(pa.table({"v": array}), path, compression="snappy", **kwargs)
    return os.path.getsize(path)


def size_rows(core: CoreOutputs) -> list[Row]:
    n = len(core.records)
    if core.keys_for_bytes != 1:
        raise RuntimeError(f"expected one data-key session, got {core.keys_for_bytes}")
    enc = pa.array([r["ssn"] for r in core.as_bytes], pa.binary())
    plain = pa.array([r["ssn"] for r in core.records], pa.string())
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="kmsbeam-bench-") as d:
        ways: tuple[tuple[str, dict[str, Any]], ...] = (
            (ROWS[16], {}),
            (ROWS[17], {"use_dictionary": False}),
            (ROWS[18], {"use_dictionary": False, "column_encoding": {"v": "DELTA_BYTE_ARRAY"}}),  # as the CLI writes
        )
        for i, (name, kwargs) in enumerate(ways):
            size = _parquet_bytes(enc, d, f"enc{i}", **kwargs)
            rows.append(Row(name, size / n, "B/value", f"{size:,} B file, target <= 40"))
        size = _parquet_bytes(plain, d, "plain")
        rows.append(Row(ROWS[19], size / n, "B/value", f"{size:,} B file, 16 B strings"))
    first_bytes = core.as_bytes[0]["ssn"]
    first_text = core.as_text[0]["ssn"]
    rows.append(Row(ROWS[20], len(first_bytes), "B", "binary value of a 16 B string"))
    rows.append(Row(ROWS[21], len(first_text), "chars", "URL-safe base64 text value"))
    extra = sum(
        len(json.dumps(e[f])) - len(json.dumps(p[f]))
        for p, e in zip(core.records, core.as_text)
        for f in FIELDS
    )
    note = "json.dumps(encrypted) - json.dumps(plain)"
    rows.append(Row(ROWS[22], extra / (n * len(FIELDS)), "chars", note))
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

    rows: list[Row] = step("beam", lambda: beam_rows(n, repeat, say))
    core_list, core = step("core", lambda: core_rows(n, repeat, say))
    rows += core_list
    rows += step("sizes", lambda: size_rows(core))
    return rows
