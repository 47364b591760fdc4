"""Parquet column protection: PME and cell columns against plain pyarrow and the per-record path.

Usage: ``python -m benchmarks.parquet [--rows N] [--repeat R] [--json PATH]``

On one generated table of N rows (default 2,000,000: ``id``, ``name``, ``amount`` and three
16-byte PII strings ``ssn``, ``email``, ``card``), in one process, without Beam:

- PME write and read (``ssn``, ``email`` under one master key, ``card`` under another, footer
  key, double wrapping, snappy) against plain pyarrow on the same table; best of R, the plain
  and PME runs interleaved so machine drift hits both. Target ratio <= 1.15.
- Every ratio's two sides run R times each, interleaved; every row prints the load average
  sampled while it ran (``benchmarks._measure``).
- Cell columns (``CellEncryptor``/``CellDecryptor`` on the Arrow table) against the per-record
  path of the field format (``table.to_pylist()`` -> ``FieldEncryptor.encrypt_batch`` with
  bytes encoding -> ``pa.Table.from_pylist``, and back with ``FieldDecryptor``).
- Bytes on disk per encrypted cell (snappy, DELTA_BYTE_ARRAY as the CLI writes them) against
  the plaintext column, and the PME column's bytes per value.

The keystore is a throwaway temp dir (``KMSBEAM_HOME`` is set before any key is opened).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._measure import interleaved, load_text
from benchmarks._table import Row, format_table, rows_as_json

PII = ("ssn", "email", "card")
KEYS = {"pii": "local:alias/bench-pii", "pci": "local:alias/bench-pci", "foot": "local:alias/bench-footer"}


def make_table(n: int) -> pa.Table:
    """N rows; the PII strings are 16 ASCII bytes with scrambled digits (no easy compression)."""
    xs = [(i * 2654435761 + 12345) % 10**12 for i in range(n)]
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "name": [f"Customer {i}" for i in range(n)],
        "amount": [x % 100000 / 100 for x in xs],
        "ssn": [f"SSN-{x:012d}" for x in xs],
        "email": [f"u{x % 10**10:010d}@e.co" for x in xs],
        "card": [f"4111{x:012d}" for x in xs],
    })  # fmt: skip


def _pme(rows: int, repeat: int, work: Path, table: pa.Table, out: list[Row], say: Callable[[str], None]) -> None:
    from kmsbeam.formats.parquet import (PmeDecryption, PmeEncryption, crypto_factory, inspect_parquet,
                                 kms_call_totals)  # fmt: skip

    enc = PmeEncryption(KEYS["foot"], {"ssn": KEYS["pii"], "email": KEYS["pii"], "card": KEYS["pci"]},
                        plaintext_footer=True)  # fmt: skip
    dec = PmeDecryption(list(KEYS.values()))
    plain_path, pme_path = work / "plain.parquet", work / "pme.parquet"
    calls0 = kms_call_totals()

    def write_plain() -> None:
        pq.write_table(table, plain_path, compression="snappy")

    def write_pme() -> None:
        props = enc.properties(table.schema)
        pq.write_table(table, pme_path, compression="snappy", encryption_properties=props)

    def read_plain() -> pa.Table:
        return pq.ParquetFile(plain_path).read()

    def read_pme() -> pa.Table:
        return pq.ParquetFile(pme_path, decryption_properties=dec.properties()).read()

    t = interleaved(repeat, {"w_plain": write_plain, "w_pme": write_pme, "r_plain": read_plain, "r_pme": read_pme})
    w_plain, w_pme, r_plain, r_pme = (t[k].best for k in ("w_plain", "w_pme", "r_plain", "r_pme"))
    load = {k: v.load.text() for k, v in t.items()}
    calls = kms_call_totals()
    assert read_pme().equals(table)
    say(f"PME write {w_pme:.2f} s vs plain {w_plain:.2f} s; read {r_pme:.2f} s vs {r_plain:.2f} s")
    out += [
        Row("plain pyarrow write, snappy", w_plain, "s", f"{rows:,} rows, best of {repeat}", load["w_plain"]),
        Row("PME write (3 columns, 2 master keys)", w_pme, "s",
            f"footer key, double wrapping, new file keys per file, best of {repeat}", load["w_pme"]),
        Row("PME write / plain write", w_pme / w_plain, "x", f"target <= 1.15; {repeat} runs each, interleaved",
            load_text(t["w_plain"], t["w_pme"])),
        Row("plain pyarrow read", r_plain, "s", f"best of {repeat}", load["r_plain"]),
        Row("PME read", r_pme, "s", f"fresh decryption properties per read, best of {repeat}", load["r_pme"]),
        Row("PME read / plain read", r_pme / r_plain, "x", f"target <= 1.15; {repeat} runs each, interleaved",
            load_text(t["r_plain"], t["r_pme"])),
        Row("PME key-source GenerateDataKey calls", calls.generate - calls0.generate, "calls",
            f"{repeat} files written: one per master key per process (double wrapping)"),
        Row("PME key-source Decrypt calls", calls.decrypt - calls0.decrypt, "calls",
            f"{repeat + 1} files read: one per wrapped data key per process"),
    ]  # fmt: skip
    report = inspect_parquet(pme_path)
    plain_meta = pq.ParquetFile(plain_path).metadata
    plain_sizes = {plain_meta.schema.column(i).path: sum(
        plain_meta.row_group(g).column(i).total_compressed_size for g in range(plain_meta.num_row_groups))
        for i in range(plain_meta.num_columns)}  # fmt: skip
    assert report.columns is not None
    for c in report.columns:
        if c.path == "ssn" and c.compressed_bytes:
            out.append(Row("PME ssn column, bytes per value", c.compressed_bytes / rows, "B/value",
                           f"plaintext {plain_sizes['ssn'] / rows:.2f} B/value"))  # fmt: skip
    out.append(Row("PME file size / plain file size", pme_path.stat().st_size / plain_path.stat().st_size, "x", ""))
    crypto_factory().remove_cache_entries_for_all_tokens()


def _cells(rows: int, repeat: int, work: Path, table: pa.Table, out: list[Row], say: Callable[[str], None]) -> None:
    from kmsbeam import FieldDecryptor, FieldEncryptor, open_key_source
    from kmsbeam.formats.parquet import CellDecryptor, CellEncryptor

    source = open_key_source(KEYS["pii"])
    n_values = rows * len(PII)
    enc = CellEncryptor(list(PII), source)

    def cells_encrypt() -> pa.Table:
        enc.reset()
        return enc.encrypt_table(table)

    encrypted = cells_encrypt()  # the schema per_record converts to (not timed)

    def per_record() -> pa.Table:
        fe = FieldEncryptor(list(PII), source, encoding="bytes")
        done = fe.encrypt_batch(table.to_pylist())
        return pa.Table.from_pylist(done, schema=encrypted.schema)

    records = table.to_pylist()
    e = interleaved(repeat, {"cells": cells_encrypt, "records": per_record,
                             "batch": lambda: FieldEncryptor(list(PII), source, encoding="bytes").encrypt_batch(records)})  # fmt: skip
    encrypted = e["cells"].result
    t_cells, t_records, t_batch = e["cells"].best, e["records"].best, e["batch"].best
    say(f"cells encrypt {t_cells:.2f} s, per-record encrypt {t_records:.2f} s")
    fd = FieldDecryptor(list(PII), source)
    decrypt_many = getattr(fd, "decrypt_batch", None)

    def record_decrypt(records: list[dict[str, Any]]) -> list[Any]:
        return decrypt_many(records) if decrypt_many else [fd.decrypt(r) for r in records]

    enc_records = encrypted.to_pylist()
    d = interleaved(repeat, {
        "cells": lambda: CellDecryptor(None, source).decrypt_table(encrypted),
        "records": lambda: pa.Table.from_pylist(record_decrypt(encrypted.to_pylist()), schema=table.schema),
        "batch": lambda: record_decrypt(enc_records)})  # fmt: skip
    back, failed = d["cells"].result
    assert not failed and back.equals(table)
    t_cdec, t_rdec, t_rdec_only = d["cells"].best, d["records"].best, d["batch"].best
    say(f"cells decrypt {t_cdec:.2f} s, per-record decrypt {t_rdec:.2f} s")
    best = f"best of {repeat}"
    ratio = f"lower is better; {repeat} runs each, interleaved"
    out += [
        Row("cells encrypt (CellEncryptor, Arrow in/out)", t_cells, "s", f"{n_values / t_cells:,.0f} values/s, {best}", e["cells"].load.text()),
        Row("per-record encrypt (dicts, Arrow in/out)", t_records, "s", f"to_pylist + encrypt_batch(bytes) + from_pylist, {best}", e["records"].load.text()),
        Row("per-record encrypt, encrypt_batch only", t_batch, "s", f"{n_values / t_batch:,.0f} values/s, {best}", e["batch"].load.text()),
        Row("cells / per-record encrypt", t_cells / t_records, "x", ratio, load_text(e["cells"], e["records"])),
        Row("cells decrypt (CellDecryptor)", t_cdec, "s", f"{n_values / t_cdec:,.0f} values/s, {best}", d["cells"].load.text()),
        Row("per-record decrypt (dicts, Arrow in/out)", t_rdec, "s", f"to_pylist + decrypt_batch + from_pylist, {best}", d["records"].load.text()),
        Row("per-record decrypt, decrypt_batch only", t_rdec_only, "s",
            ("decrypt_batch" if decrypt_many else "decrypt per record") + f", {n_values / t_rdec_only:,.0f} values/s, {best}",
            d["batch"].load.text()),
        Row("cells / per-record decrypt", t_cdec / t_rdec, "x", ratio, load_text(d["cells"], d["records"])),
    ]  # fmt: skip
    _cell_bytes(rows, work, table, encrypted, out)


def _cell_bytes(rows: int, work: Path, table: pa.Table, encrypted: pa.Table, out: list[Row]) -> None:
    def column_bytes(path: Path, name: str) -> int:
        meta = pq.ParquetFile(path).metadata
        i = [meta.schema.column(j).path for j in range(meta.num_columns)].index(name)
        return sum(meta.row_group(g).column(i).total_compressed_size for g in range(meta.num_row_groups))

    delta = dict.fromkeys(PII, "DELTA_BYTE_ARRAY")
    others = [c for c in encrypted.column_names if c not in PII]
    pq.write_table(encrypted, work / "cells.parquet", compression="snappy", use_dictionary=others,
                   column_encoding=delta)  # fmt: skip
    pq.write_table(encrypted, work / "cells-default.parquet", compression="snappy")
    pq.write_table(table, work / "plain.parquet", compression="snappy")
    cell = sum(column_bytes(work / "cells.parquet", c) for c in PII) / (rows * len(PII))
    default = sum(column_bytes(work / "cells-default.parquet", c) for c in PII) / (rows * len(PII))
    plain = sum(column_bytes(work / "plain.parquet", c) for c in PII) / (rows * len(PII))
    out += [
        Row("cell on disk, snappy + DELTA_BYTE_ARRAY", cell, "B/cell", "as kmsbeam writes cell columns"),
        Row("cell on disk, snappy, pyarrow defaults", default, "B/cell", "dictionary, falls back to PLAIN"),
        Row("plaintext value on disk, snappy", plain, "B/value", "the same 16-byte strings"),
        Row("encrypted cell length in memory", len(encrypted.column("ssn")[0].as_py()), "B", "16-byte string, local key"),
    ]  # fmt: skip


def run(rows: int, repeat: int = 3, say: Callable[[str], None] = lambda _: None) -> list[Row]:
    """All measurements; ``KMSBEAM_HOME`` must already point at a throwaway keystore."""
    from kmsbeam import open_key_source

    for uri in KEYS.values():
        open_key_source(uri, create=True)
    work = Path(tempfile.mkdtemp(prefix="kmsbeam-bench-parquet-"))
    try:
        t0 = time.perf_counter()
        table = make_table(rows)
        say(f"table of {rows:,} rows in {time.perf_counter() - t0:.1f} s")
        out: list[Row] = []
        _pme(rows, repeat, work, table, out, say)
        _cells(rows, repeat, work, table, out, say)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parquet", description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2_000_000, metavar="N", help="table rows (default 2,000,000)")
    parser.add_argument("--repeat", type=int, default=5, metavar="R", help="runs of every measurement, interleaved; the best kept (default 5)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be at least 1")
    home = tempfile.mkdtemp(prefix="kmsbeam-bench-home-")
    os.environ["KMSBEAM_HOME"] = home
    try:
        rows = run(args.rows, args.repeat, lambda m: print(f"  {m}", file=sys.stderr, flush=True))
    finally:
        shutil.rmtree(home, ignore_errors=True)
    from importlib.metadata import version

    print(f"rows: {args.rows:,}  repeat: {args.repeat} (every side of a ratio, interleaved)  "
          f"cpus: {os.cpu_count()}  load: per row (min/mean/max during)  pyarrow {version('pyarrow')}  "
          f"cryptography {version('cryptography')}")  # fmt: skip
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows_as_json(rows), indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
