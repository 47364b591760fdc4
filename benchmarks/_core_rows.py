"""The foundation's rows without Beam: core encrypt/decrypt rates and bytes on disk.

``core_rows`` times ``FieldEncryptor``/``FieldDecryptor`` over the foundation's records on one
core (and the bare ``AESGCM.encrypt`` call next to them), best of ``repeat`` each, the cyclic
GC paused; ``size_rows`` writes the encrypted values as Parquet columns and measures them.
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import gc
import json
import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from benchmarks._measure import best_of
from benchmarks._table import ROWS, Row
from benchmarks.foundation import FIELDS, KEY, make_record
from kmsbeam import DataKeyCache, FieldDecryptor, FieldEncryptor, KeySource, open_key_source

__all__ = ["CoreOutputs", "core_rows", "size_rows"]

Progress = Callable[[str], None]


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
