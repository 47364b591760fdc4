"""Describe a Parquet file's protection without decrypting anything and without keys.

``inspect_parquet`` reads the footer bytes itself (``_thrift``) instead of asking pyarrow, which
aborts the process when asked about encrypted column metadata it cannot decrypt. It reports:

- PME files: footer mode, algorithm, and per column (when the footer is in plaintext) which
  master key protects it, with what the key material says: the master key id, the key URI and
  master key version recorded in kmsbeam's key text, double wrapping, internal or external
  key material. An encrypted footer hides the column list: only the footer key is visible.
- Files without PME: columns holding kmsbeam values (field values v1: cells; record v1),
  found from the ``kmsbeam.cells`` metadata or by their header, with the data keys (distinct
  key commitments), wrapped-key kinds and master key versions seen in the headers. Only
  headers are read (vectorised slices); no value is decrypted.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from kmsbeam.formats.envelope import FIELD_V1, parse
from kmsbeam.errors import FormatError, KmsBeamError
from kmsbeam.formats.parquet._arrow import column_at
from kmsbeam.formats.parquet._cells import CELLS_KEY
from kmsbeam.formats.parquet._keytext import parse_key_text
from kmsbeam.formats.parquet._thrift import read_struct
from kmsbeam.formats.values import kind_name, value_use

__all__ = ["ColumnReport", "FileReport", "KeyReport", "inspect_parquet", "key_material_path"]

FORMATS = {1: "cells (field value v1)", 2: "records (record v1)", 3: "cells (field value v2, key vault)",
           4: "records (record v2, key vault)"}  # fmt: skip
_ALGORITHMS = {1: "AES_GCM_V1", 2: "AES_GCM_CTR_V1"}
_PHYSICAL = ("BOOLEAN", "INT32", "INT64", "INT96", "FLOAT", "DOUBLE", "BYTE_ARRAY", "FIXED_LEN_BYTE_ARRAY")


@dataclass
class KeyReport:
    """One PME key's material (no key bytes): which master key wraps it and how."""

    master_key_id: str
    key_uri: str | None = None
    key_kind: str | None = None
    key_version: str | None = None
    double_wrapping: bool | None = None
    key_material: str = "internal"
    wrapped_by: str = "kmsbeam"


@dataclass
class ColumnReport:
    path: str
    physical_type: str = ""
    protection: str = "plaintext"
    key: KeyReport | None = None
    data_keys: int = 0
    key_kinds: list[str] = field(default_factory=list)
    key_versions: list[str] = field(default_factory=list)
    compressed_bytes: int | None = None


@dataclass
class FileReport:
    path: str
    size: int
    encryption: str = "none"
    algorithm: str | None = None
    footer_key: KeyReport | None = None
    rows: int | None = None
    row_groups: int | None = None
    created_by: str | None = None
    cells_key: str | None = None
    columns: list[ColumnReport] | None = None
    notes: list[str] = field(default_factory=list)
    data_key: KeyReport | None = None  # an object's one data key (not Parquet)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.data_key is None:
            del out["data_key"]
        return out


def key_material_path(path: str | os.PathLike[str]) -> Path:
    """Where PME's external key material for a Parquet file lives."""
    p = Path(path)
    return p.with_name(f"_KEY_MATERIAL_FOR_{p.name}.json")


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _key_report(raw: bytes, path: Path) -> KeyReport:
    """A KeyReport from PME key metadata bytes (internal material, or a reference)."""
    try:
        meta = json.loads(raw)
        where = "internal"
        if not meta.get("internalStorage", True):
            store = key_material_path(path)
            where = f"external: {store.name}"
            if not store.is_file():
                return KeyReport("?", key_material=f"{where} (missing)", wrapped_by="unknown")
            meta = json.loads(json.loads(store.read_text("utf-8"))[meta["keyReference"]])
        double = bool(meta.get("doubleWrapping"))
        text = meta.get("wrappedKEK" if double else "wrappedDEK", "")
        report = KeyReport(str(meta.get("masterKeyID", "?")), double_wrapping=double, key_material=where)
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return KeyReport("?", wrapped_by="unreadable key metadata")
    try:
        parsed = parse_key_text(text)
    except KmsBeamError:
        report.wrapped_by = "another KMS client"
        return report
    report.key_uri = parsed.uri
    report.key_kind = kind_name(parsed.kind)
    report.key_version = parsed.key_version
    return report


def _algorithm(union: Any) -> str:
    """The name of a Thrift ``EncryptionAlgorithm`` union (its one set field)."""
    if isinstance(union, dict) and len(union) == 1:
        return _ALGORITHMS.get(next(iter(union)), "?")
    return "?"


def _leaves(schema: list[dict[int, Any]]) -> list[tuple[str, str]]:
    """(dotted path, physical type) of each leaf of a flattened Parquet schema."""
    out: list[tuple[str, str]] = []
    pos = 1  # element 0 is the root

    def walk(prefix: str) -> None:
        nonlocal pos
        if pos >= len(schema):
            raise FormatError("the Parquet schema is truncated")
        element = schema[pos]
        pos += 1
        name = f"{prefix}.{_text(element.get(4, b''))}" if prefix else _text(element.get(4, b""))
        children = element.get(5, 0)
        if children:
            for _ in range(children):
                walk(name)
        else:
            t = element.get(1)
            out.append((name, _PHYSICAL[t] if isinstance(t, int) and 0 <= t < 8 else "?"))

    for _ in range(schema[0].get(5, 0) if schema else 0):
        walk("")
    return out


def _footer(path: Path) -> tuple[bytes, bytes, int]:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(4)
        if size < 12:
            raise FormatError(f"{path} is not a Parquet file (too short)")
        f.seek(size - 8)
        tail = f.read(8)
        magic = tail[4:]
        length = int.from_bytes(tail[:4], "little")
        if magic not in (b"PAR1", b"PARE") or head != magic or length > size - 12:
            raise FormatError(f"{path} is not a Parquet file, or it is truncated")
        f.seek(size - 8 - length)
        return magic, f.read(length), size


def inspect_parquet(path: str | os.PathLike[str], *, scan_cells: bool = True) -> FileReport:
    """Describe ``path``'s encryption. Reads headers and metadata only; needs no keys.

    Raises:
        FormatError: not a Parquet file, truncated, or a footer that does not parse.
        OSError: the file cannot be read.
    """
    p = Path(path)
    magic, footer, size = _footer(p)
    report = FileReport(str(p), size)
    if magic == b"PARE":
        crypto, _ = read_struct(footer)
        report.encryption = "PME, encrypted footer"
        report.algorithm = _algorithm(crypto.get(1))
        report.footer_key = _key_report(crypto.get(2, b"{}"), p)
        report.notes.append("the column list is in the encrypted footer; only the footer key shows")
        return report
    meta, _ = read_struct(footer)
    leaves = _leaves(meta.get(2, []))
    groups = meta.get(4, [])
    report.rows, report.row_groups = meta.get(3), len(groups)
    report.created_by = _text(meta[6]) if 6 in meta else None
    report.columns = [ColumnReport(name, physical) for name, physical in leaves]
    if 8 in meta:
        report.encryption = "PME, plaintext footer"
        report.algorithm = _algorithm(meta[8])
        report.footer_key = _key_report(meta.get(9, b"{}"), p)
    _column_chunks(report, groups, p)
    kv = {_text(e.get(1, b"")): e.get(2, b"") for e in meta.get(5, [])}
    try:
        report.cells_key = json.loads(kv.get(CELLS_KEY.decode(), b"{}")).get("key")
    except (ValueError, AttributeError):
        report.notes.append("the kmsbeam.cells metadata is not readable")
    if scan_cells and 8 not in meta:
        _scan_cells(report, p)
    return report


def _column_chunks(report: FileReport, groups: list[dict[int, Any]], path: Path) -> None:
    assert report.columns is not None
    keys: dict[bytes, KeyReport] = {}
    for group in groups:
        chunks = group.get(1, [])
        if len(chunks) != len(report.columns):
            raise FormatError(f"{path}: a row group does not match the schema")
        for column, chunk in zip(report.columns, chunks):
            size = chunk.get(3, {}).get(7)
            if isinstance(size, int):
                column.compressed_bytes = (column.compressed_bytes or 0) + size
            crypto = chunk.get(8)
            if not crypto:
                continue
            if 2 in crypto:
                raw = crypto[2].get(2, b"{}")
                if raw not in keys:
                    keys[raw] = _key_report(raw, path)
                column.protection, column.key = "PME, column key", keys[raw]
            else:
                column.protection, column.key = "PME, footer key", report.footer_key


def _header_stats(arr: pa.Array) -> set[bytes] | None:
    """The distinct value headers of a binary array of kmsbeam values, or None when the
    array does not hold kmsbeam values (its first value has no header; too many kinds)."""
    arr = arr.drop_null()
    if not len(arr):
        return set()
    first = arr[0].as_py()
    try:
        parse(first, first[0] if first and first[0] in FORMATS else FIELD_V1, vault=True)
    except KmsBeamError:
        return None
    prefix = pc.binary_slice(arr, 0, 3)
    kinds = pc.unique(prefix).to_pylist()
    if len(kinds) > 16:
        return None
    heads: set[bytes] = set()
    for pre in kinds:
        if len(pre) < 3:
            return None
        if pre[0] in (3, 4):  # v2: fmt || K || 0x00
            end = 18
        else:
            end = 3 + int.from_bytes(pre[1:3], "big") + 16
            end += -end % 3
        picked = arr.filter(pc.equal(prefix, pa.scalar(pre, arr.type)))
        heads.update(pc.unique(pc.binary_slice(picked, 0, end)).to_pylist())
    return heads


def _heads(pf: pq.ParquetFile, path: str) -> set[bytes] | None:
    """The distinct headers of column ``path`` over all row groups (None: not kmsbeam's)."""
    heads: set[bytes] = set()
    for rg in range(pf.num_row_groups):
        table = pf.read_row_group(rg, columns=[path.split(".")[0]])
        arr = column_at(table, path).combine_chunks()
        if not (pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
            return None
        found = _header_stats(arr)
        if found is None:
            return None
        heads |= found
    return heads


def _scan_cells(report: FileReport, path: Path) -> None:
    """Find the columns holding kmsbeam values and the data keys in their headers."""
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        report.notes.append(f"cell columns not scanned ({type(exc).__name__})")
        return
    assert report.columns is not None
    for column in report.columns:
        if column.physical_type != "BYTE_ARRAY" or ".list." in column.path or ".key_value." in column.path:
            continue
        try:
            heads = _heads(pf, column.path)
            uses = [value_use(h + bytes(21), h[0], column.path) for h in heads or ()]  # + a dummy body
        except (OSError, pa.ArrowException, ValueError, KeyError, KmsBeamError) as exc:
            report.notes.append(f"{column.path}: not scanned ({type(exc).__name__})")
            continue
        if not heads:
            continue
        column.protection = FORMATS.get(next(iter(heads))[0], "?")
        column.data_keys = len({u.commitment for u in uses})
        column.key_kinds = sorted({kind_name(u.kind) for u in uses})
        column.key_versions = sorted({u.version for u in uses if u.version})
