"""The dataset manifest ``OUTPUT/_kmsbeam.json``: how ``kmsbeam encrypt`` wrote a dataset.

``kmsbeam decrypt DIR OUT`` reads it, so decryption needs no options. Example::

    {"kmsbeam_dataset": 1, "mode": "fields", "fields": ["ssn", "email"], "bind": [],
     "keep": [], "payload_field": "kmsbeam_record", "key": "local:alias/kmsbeam-default",
     "context": {"dataset": "customers"}, "format": "jsonl", "encoding": "text",
     "columns": null, "arrow_schema": null, "kmsbeam_version": "0.1.0"}

``columns`` is the CSV header of the input (CSV only); ``arrow_schema`` the base64 of the
input's ``pyarrow.Schema.serialize()`` (Parquet only), so decryption restores the exact types.

Parquet modes (``--parquet-mode``): ``mode`` is ``"pme"`` or ``"cells"`` and ``fields`` the
protected columns. PME datasets add ``column_keys`` (column -> key URI), ``footer_key``,
``plaintext_footer`` and ``key_material`` (``"internal"`` or ``"external"``); readers map the
files' master key ids back to these URIs (``kmsbeam.formats.parquet.master_key_id``).

``key_vault`` (fields and record modes, ``--key-vault``): the key vault prefix holding the
dataset's wrapped data keys (values v2); absent or null: the values carry their own (v1).

The manifest holds no key material and no data; the encryption context is not secret. It is
read and written through Beam's filesystems (``kmsbeam.pipelines.paths``), so a dataset on
``oss://`` (or any registered scheme) has its manifest there too. ``manifest_kind`` tells a
dataset manifest from an export manifest (``kmsbeam export``), both named ``_kmsbeam.json``.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict, dataclass, field
import os
from typing import Any

import pyarrow as pa

from kmsbeam import FormatError

__all__ = ["MANIFEST_NAME", "MODES", "Manifest", "manifest_kind"]

MANIFEST_NAME = "_kmsbeam.json"
MODES = ("fields", "record", "pme", "cells")
VERSION = 1


@dataclass
class Manifest:
    """What decrypt needs to know about an encrypted dataset."""

    mode: str
    fields: list[str]
    bind: list[str] = field(default_factory=list)
    keep: list[str] = field(default_factory=list)
    payload_field: str = "kmsbeam_record"
    key: str = ""
    context: dict[str, str] = field(default_factory=dict)
    format: str = ""
    encoding: str = ""
    columns: list[str] | None = None
    arrow_schema: str | None = None
    kmsbeam_version: str = ""
    column_keys: dict[str, str] | None = None
    footer_key: str | None = None
    plaintext_footer: bool = False
    key_material: str | None = None
    key_vault: str | None = None

    @staticmethod
    def encode_schema(schema: pa.Schema) -> str:
        return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")

    def schema(self) -> pa.Schema | None:
        """The input's Arrow schema (Parquet datasets), or None."""
        if self.arrow_schema is None:
            return None
        try:
            return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(self.arrow_schema)))
        except (ValueError, pa.ArrowException) as exc:
            raise FormatError("the manifest's arrow_schema is not a serialized Arrow schema") from exc

    def to_json(self) -> str:
        return json.dumps({"kmsbeam_dataset": VERSION, **asdict(self)}, indent=2) + "\n"

    def write(self, directory: str | os.PathLike[str]) -> str:
        """Write ``directory/_kmsbeam.json`` (any filesystem); returns its path."""
        from kmsbeam.pipelines import paths

        path = paths.join(os.fspath(directory), MANIFEST_NAME)
        paths.write_bytes(path, self.to_json().encode("utf-8"), mime_type="application/json")
        return path

    @classmethod
    def from_json(cls, text: str, where: str = "the manifest") -> Manifest:
        try:
            data: Any = json.loads(text)
        except ValueError as exc:
            raise FormatError(f"{where} is not valid JSON: the dataset manifest is damaged; "
                              "restore it from a copy of the dataset") from exc  # fmt: skip
        if not isinstance(data, dict) or data.get("kmsbeam_dataset") != VERSION:
            raise FormatError(f"{where} is not a kmsbeam dataset manifest (version {VERSION})")
        data.pop("kmsbeam_dataset")
        known = set(cls.__dataclass_fields__)
        try:
            manifest = cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise FormatError(f"{where} lacks required entries (mode, fields, key, ...)") from exc
        if manifest.mode not in MODES:
            raise FormatError(f"{where} has an unknown mode {manifest.mode!r}")
        if manifest.format not in ("jsonl", "csv", "parquet") or not manifest.key:
            raise FormatError(f"{where} lacks a known format or a key URI")
        return manifest

    @classmethod
    def read(cls, directory: str | os.PathLike[str]) -> Manifest | None:
        """The manifest in ``directory`` (any filesystem), or None when there is none."""
        text = _read_text(os.fspath(directory))
        if text is None:
            return None
        from kmsbeam.pipelines import paths

        return cls.from_json(text, paths.join(os.fspath(directory), MANIFEST_NAME))


def _read_text(directory: str) -> str | None:
    """The text of ``directory/_kmsbeam.json``, or None when there is no such file."""
    from kmsbeam.pipelines import paths

    path = paths.join(directory, MANIFEST_NAME)
    if not paths.exists(path):
        return None
    try:
        return paths.read_bytes(path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FormatError(f"{path} is not UTF-8 text: the manifest is damaged; restore it from "
                          "a copy of the dataset") from exc  # fmt: skip


def manifest_kind(location: str) -> str | None:
    """``"dataset"`` (kmsbeam encrypt), ``"export"`` (kmsbeam export) or None: what the
    ``_kmsbeam.json`` in ``location`` (a directory or prefix on any filesystem) is. None when
    there is none or ``location`` is a file or glob; a damaged manifest counts as a dataset's
    (decrypt then says what is wrong with it)."""
    from kmsbeam.pipelines import paths

    if any(c in location for c in "*?[") or not paths.is_dir(location):
        return None
    text = _read_text(location)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return "dataset"
    return "export" if isinstance(data, dict) and "kmsbeam_export" in data else "dataset"
