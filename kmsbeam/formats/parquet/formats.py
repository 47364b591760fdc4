"""The two Parquet formats as ``kmsbeam.formats.base.Format``: ``CellFormat`` (cell columns of
Arrow tables) and ``PmeFormat`` (Parquet Modular Encryption files).

Thin adapters: the engines are ``CellEncryptor`` / ``CellDecryptor`` and ``PmeEncryption`` /
``PmeDecryption``; a cell is a field value v1, so cells rewrap and inspect like field values
(``kmsbeam.formats.values``). PME key texts carry no key commitment (their format is PME's),
so ``PmeFormat.rewrap`` is PME's own key rotation of external key material: new wrapping data
keys from the same master keys, the data file untouched.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar

import pyarrow as pa

from kmsbeam.errors import ConfigurationError, KmsBeamError
from kmsbeam.formats._binding import check_paths
from kmsbeam.formats.base import REWRAPPED, Context, Engines, Hook, KeyRewrap, KeyUse, merge_uses
from kmsbeam.formats.envelope import FIELD_V1
from kmsbeam.vault import KeyVault
from kmsbeam.formats.parquet._arrow import column_at, replace_at
from kmsbeam.formats.parquet._cell_decryptor import CellDecryptor
from kmsbeam.formats.parquet._cells import CELLS_KEY, CellEncryptor
from kmsbeam.formats.parquet._inspect import KeyReport, inspect_parquet
from kmsbeam.formats.parquet._pme import PmeDecryption, PmeEncryption, rotate_key_material
from kmsbeam.formats.paths import FieldPath, Paths
from kmsbeam.formats.values import KIND_NAMES, rewrap_value, value_use
from kmsbeam.keys.cache import DataKeyCache
from kmsbeam.keys.policy import DataKeyPolicy
from kmsbeam.keys.source import KeySource

__all__ = ["CellFormat", "PmeFormat"]

_KIND_OF = {name: kind for kind, name in KIND_NAMES.items()}


@dataclass(frozen=True)
class CellFormat(Engines[CellEncryptor, CellDecryptor]):
    """Cell columns of Arrow tables (``docs/FORMAT.md``, "Parquet cell columns").

    Args:
        columns: dotted column paths (list, or one comma-separated string); ``None`` (to
            decrypt only): every column a table's ``kmsbeam.cells`` metadata lists.
        bind: cleartext columns identifying the row, bound into every cell's AAD.
        encrypt_none: encrypt null cells too.
        schema: the original schema, for decrypting tables without ``kmsbeam.cells`` metadata.
    """

    columns: tuple[FieldPath, ...]
    bind: tuple[FieldPath, ...] = ()
    encrypt_none: bool = False
    schema: pa.Schema | None = None
    vault: KeyVault | None = None
    name: ClassVar[str] = "cells"
    section: ClassVar[str] = "Parquet cell columns"

    def __init__(self, columns: Paths | None, *, bind: Paths = (), encrypt_none: bool = False,
                 schema: pa.Schema | None = None, vault: KeyVault | None = None) -> None:  # fmt: skip
        paths, bound = check_paths(columns or (), bind, "columns", required=columns is not None)
        object.__setattr__(self, "columns", paths)
        object.__setattr__(self, "bind", bound)
        object.__setattr__(self, "encrypt_none", encrypt_none)
        object.__setattr__(self, "schema", schema)
        object.__setattr__(self, "vault", vault)

    def _encryptor(self, source: KeySource, context: Context, policy: DataKeyPolicy | None,
                   on_generate: Hook) -> CellEncryptor:
        return CellEncryptor(self.columns, source, context=context, bind=self.bind, policy=policy,
                             encrypt_none=self.encrypt_none, on_generate=on_generate,
                             vault=self.vault)  # fmt: skip

    def _decryptor(self, source: KeySource, context: Context, cache: DataKeyCache | None,
                   on_call: Hook) -> CellDecryptor:
        return CellDecryptor(self.columns or None, source, context=context, bind=self.bind,
                             schema=self.schema, cache=cache, on_call=on_call, vault=self.vault)  # fmt: skip

    def rewrap_table(
        self, table: pa.Table, rewrap: KeyRewrap
    ) -> tuple[pa.Table, list[tuple[int, KmsBeamError]]]:
        """``table`` with every cell's header rewrapped and the ``kmsbeam.cells`` key hint set
        to the target, and the cells that failed as (row, error; ``error.field`` names the
        column): a failed cell stays as it was."""
        failures: list[tuple[int, KmsBeamError]] = []
        moved = False
        for path in self.columns:
            column = column_at(table, path.name)
            out: list[Any] = []
            for row, value in enumerate(column.to_pylist()):
                try:
                    new = value if value is None else rewrap_value(value, FIELD_V1, rewrap)
                except KmsBeamError as exc:
                    exc.field = path.name
                    failures.append((row, exc))
                    new = value
                moved |= new is not value
                out.append(new)
            table = replace_at(table, path.name, pa.array(out, type=column.type))
        meta = dict(table.schema.metadata or {})
        if moved and CELLS_KEY in meta:
            cells = json.loads(meta[CELLS_KEY])
            cells["key"] = rewrap.target_uri
            meta[CELLS_KEY] = json.dumps(cells).encode("utf-8")
            table = table.replace_schema_metadata(meta)
        return table, sorted(failures, key=lambda f: f[0])

    def rewrap(self, data: pa.Table, rewrap: KeyRewrap) -> pa.Table:
        """``rewrap_table``, raising the first cell's failure."""
        table, failures = self.rewrap_table(data, rewrap)
        if failures:
            raise failures[0][1]
        return table

    def inspect(self, data: pa.Table) -> list[KeyUse]:
        """The data keys of each cell column (``where``: the column), one per distinct header."""
        uses: list[KeyUse] = []
        for path in self.columns:
            firsts: dict[Any, Any] = {}
            counts: Counter[Any] = Counter()
            for value in column_at(data, path.name).drop_null().to_pylist():
                head = _header_of(value)
                firsts.setdefault(head, value)
                counts[head] += 1
            for head, value in firsts.items():
                try:
                    use = value_use(value, FIELD_V1, path.name)
                except KmsBeamError as exc:
                    exc.field = path.name
                    raise
                uses.append(replace(use, count=counts[head]))
        return merge_uses(uses)


def _header_of(value: Any) -> Any:
    """A cell's header bytes, to group cells by data key (not a cell: the value itself, which
    ``value_use`` then refuses)."""
    if not isinstance(value, bytes) or len(value) < 3:
        return value
    end = 3 + int.from_bytes(value[1:3], "big") + 16
    return value[: end + (-end % 3)]


@dataclass(frozen=True)
class PmeFormat(Engines[PmeEncryption, PmeDecryption]):
    """Parquet Modular Encryption files (``docs/FORMAT.md``, "Parquet Modular Encryption: PME
    key text v1"); the data (``Sealed``) is a local Parquet file path.

    Args:
        column_keys: column -> key URI ("": the encryptor's source's key); a list of columns
            puts them all under that key. Columns not named stay in plaintext.
        plaintext_footer, double_wrapping, external_key_material: as for ``PmeEncryption``.
        keys: other key URIs readers may need (files written under several keys).
        key_map: master key id -> key URI, for keys whose URI changed since writing.
    """

    column_keys: Mapping[str, str] = field(default_factory=dict)
    plaintext_footer: bool = False
    double_wrapping: bool = True
    external_key_material: bool = False
    keys: tuple[str, ...] = ()
    key_map: Mapping[str, str] = field(default_factory=dict)
    name: ClassVar[str] = "pme"
    section: ClassVar[str] = "Parquet Modular Encryption: PME key text v1"

    def __post_init__(self) -> None:
        columns = self.column_keys
        if not isinstance(columns, Mapping):
            columns = {c: "" for c in ([columns] if isinstance(columns, str) else columns)}
        object.__setattr__(self, "column_keys", dict(columns))
        object.__setattr__(self, "keys", tuple(self.keys))
        object.__setattr__(self, "key_map", dict(self.key_map))

    def _encryptor(self, source: KeySource, context: Context, policy: DataKeyPolicy | None,
                   on_generate: Hook) -> PmeEncryption:
        """PME settings with ``source``'s key as the footer key (and of columns without one).
        PME's data keys are pyarrow's, one per file and column: ``policy`` does not apply."""
        return PmeEncryption(
            footer_key=source.uri,
            column_keys={c: u or source.uri for c, u in self.column_keys.items()},
            plaintext_footer=self.plaintext_footer, double_wrapping=self.double_wrapping,
            external_key_material=self.external_key_material, context=dict(context or {}),
        )  # fmt: skip

    def _decryptor(self, source: KeySource, context: Context, cache: DataKeyCache | None,
                   on_call: Hook) -> PmeDecryption:
        """The keys a reader trusts: ``source``'s, the column keys and ``keys``."""
        uris = dict.fromkeys([source.uri, *(u for u in self.column_keys.values() if u), *self.keys])
        return PmeDecryption(tuple(uris), dict(context or {}), self.key_map)

    def rewrap(self, data: str, rewrap: KeyRewrap) -> str:
        """Rewrap the external key material of the file at ``data`` under its master keys'
        current versions (``rotate_key_material``); the data file is not touched.

        PME names its master keys by their URIs, so the target (``rewrap.target_uri``) must
        be one of the file's keys: rotate the key behind a URI (a new version, a moved alias).

        Raises:
            ConfigurationError: the target is not one of the file's keys, or the file has
                internal key material.
            KmsBeamError: a key source refused.
        """
        uris = {u.key_uri for u in self.inspect(data) if u.key_uri}
        if rewrap.target_uri not in uris | set(self.keys):
            raise ConfigurationError(
                "PME names its master keys by their URIs: rotate the key behind one of the "
                "file's key URIs (a new version, a moved alias) and rewrap to that URI"
            )
        keys = tuple(dict.fromkeys([rewrap.target_uri, *sorted(uris), *self.keys]))
        rotate_key_material(data, PmeDecryption(keys, rewrap.context, self.key_map),
                            double_wrapping=self.double_wrapping)  # fmt: skip
        rewrap.count(REWRAPPED)
        return data

    def inspect(self, data: str) -> list[KeyUse]:
        """The PME keys of the file at ``data``: the footer key and, with a plaintext footer,
        each encrypted column's key (``where``: ``footer`` or the column); no commitment.

        Raises:
            FormatError: not a Parquet file. OSError: it cannot be read.
        """
        report = inspect_parquet(data, scan_cells=False)
        found = [("footer", report.footer_key)]
        found += [(c.path, c.key) for c in report.columns or () if c.protection == "PME, column key"]
        return merge_uses(_pme_use(where, k) for where, k in found if k is not None)


def _pme_use(where: str, key: KeyReport) -> KeyUse:
    return KeyUse(where, "", _KIND_OF.get(key.key_kind or "", 0), key.key_version or "", key.key_uri or "")

