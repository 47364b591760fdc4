"""Parquet Modular Encryption settings and key rotation (reading files: ``_reading``).

``PmeEncryption`` (writers) and ``PmeDecryption`` (readers) are small picklable settings; the
pyarrow objects they make (``FileEncryptionProperties``...) do not pickle and are built on the
worker, fresh per file, from the process's ``crypto_factory()``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.parquet.encryption as pe

from kmsbeam.errors import ConfigurationError, KmsBeamError
from kmsbeam.keys.source import check_context
from kmsbeam.formats.parquet._client import connection_config, crypto_factory, forget_wrapping_keys
from kmsbeam.formats.parquet._keytext import master_key_id
from kmsbeam.keys.uri import parse_key_uri

__all__ = [
    "ALGORITHMS",
    "PmeDecryption",
    "PmeEncryption",
    "expand_columns",
    "leaf_paths",
    "rotate_key_material",
]

ALGORITHMS = ("AES_GCM_V1", "AES_GCM_CTR_V1")


def leaf_paths(schema: pa.Schema) -> list[str]:
    """The Parquet column paths of ``schema``'s leaves, as PME names them (``s.x``,
    ``l.list.element``, ``m.key_value.key``)."""
    out: list[str] = []

    def walk(prefix: str, t: pa.DataType) -> None:
        if pa.types.is_struct(t):
            for i in range(t.num_fields):
                walk(f"{prefix}.{t.field(i).name}", t.field(i).type)
        elif pa.types.is_map(t):
            walk(f"{prefix}.key_value.key", t.key_type)
            walk(f"{prefix}.key_value.value", t.item_type)
        elif pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
            walk(f"{prefix}.list.element", t.value_type)
        else:
            out.append(prefix)

    for f in schema:
        walk(f.name, f.type)
    return out


def expand_columns(schema: pa.Schema, names: Iterable[str]) -> dict[str, list[str]]:
    """Each name (a leaf path, or a field path above leaves such as a struct) -> its leaves.

    Raises:
        ConfigurationError: a name matches no column.
    """
    leaves = leaf_paths(schema)
    out: dict[str, list[str]] = {}
    for name in names:
        hits = [p for p in leaves if p == name or p.startswith(name + ".")]
        if not hits:
            top = ", ".join(f.name for f in schema)
            raise ConfigurationError(f"unknown column {name!r}: the columns are {top}")
        out[name] = hits
    return out


def _check_uri(uri: str, what: str) -> str:
    if not isinstance(uri, str):
        raise TypeError(f"{what} is a key URI string such as 'local:alias/pii'")
    parse_key_uri(uri)
    return uri


@dataclass(frozen=True)
class PmeEncryption:
    """How to encrypt Parquet files with PME (picklable; no key material).

    Args:
        footer_key: key URI of the footer key (it also signs a plaintext footer).
        column_keys: column (a leaf path, or a struct/list field for all leaves under it)
            -> key URI. Columns not named stay in plaintext.
        plaintext_footer: leave the footer readable by any reader (schema, row counts,
            plaintext columns); encrypted columns still need their keys.
        double_wrapping: wrap data keys with KEKs, and KEKs with the key source (default):
            one key-source call per master key per worker per ``cache_lifetime_seconds``.
        external_key_material: store wrapped keys in ``_KEY_MATERIAL_FOR_<file>.json`` next
            to each file (rotation rewraps it without touching the data file).
        context: encryption context of the wrapping data keys (give it again to read).
        cache_lifetime_seconds: how long KEKs and wrapping data keys are reused.
        data_key_bits: PME data key length, 128, 192 or 256.
        algorithm: ``AES_GCM_V1`` (default) or ``AES_GCM_CTR_V1``.
    """

    footer_key: str
    column_keys: Mapping[str, str] = field(default_factory=dict)
    plaintext_footer: bool = False
    double_wrapping: bool = True
    external_key_material: bool = False
    context: Mapping[str, str] = field(default_factory=dict)
    cache_lifetime_seconds: float = 600.0
    data_key_bits: int = 256
    algorithm: str = "AES_GCM_V1"

    def __post_init__(self) -> None:
        _check_uri(self.footer_key, "footer_key")
        if not isinstance(self.column_keys, Mapping):
            raise TypeError("column_keys maps column paths to key URIs")
        for column, uri in self.column_keys.items():
            if not isinstance(column, str) or not column:
                raise ConfigurationError("column_keys maps non-empty column paths to key URIs")
            _check_uri(uri, f"the key of column {column!r}")
        object.__setattr__(self, "column_keys", dict(self.column_keys))
        object.__setattr__(self, "context", check_context(self.context))
        if self.algorithm not in ALGORITHMS:
            raise ConfigurationError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        if self.data_key_bits not in (128, 192, 256):
            raise ConfigurationError("data_key_bits must be 128, 192 or 256")
        if not self.cache_lifetime_seconds > 0:
            raise ConfigurationError("cache_lifetime_seconds must be positive")

    @property
    def uris(self) -> list[str]:
        """Every key URI used, footer key first, without repeats."""
        return list(dict.fromkeys([self.footer_key, *self.column_keys.values()]))

    def master_keys(self) -> dict[str, str]:
        """Master key id -> key URI."""
        return {master_key_id(u): u for u in self.uris}

    def column_map(self, schema: pa.Schema) -> dict[str, list[str]]:
        """PME's ``column_keys``: master key id -> leaf column paths, checked against
        ``schema``.

        Raises:
            ConfigurationError: an unknown column, or a leaf named under two keys.
        """
        out: dict[str, list[str]] = {}
        owner: dict[str, str] = {}
        for name, leaves in expand_columns(schema, self.column_keys).items():
            uri = self.column_keys[name]
            for leaf in leaves:
                if owner.setdefault(leaf, uri) != uri:
                    raise ConfigurationError(f"column {leaf!r} is given two keys")
                if leaf not in out.setdefault(master_key_id(uri), []):
                    out[master_key_id(uri)].append(leaf)
        return out

    def _lifetime(self) -> datetime.timedelta:
        return datetime.timedelta(seconds=self.cache_lifetime_seconds)

    def properties(self, schema: pa.Schema, parquet_file_path: str | None = None) -> Any:
        """Fresh ``FileEncryptionProperties`` for one file (new data keys every call).

        ``parquet_file_path`` is required with external key material: the key material
        file is written next to it now, before the data file.
        """
        if self.external_key_material and not parquet_file_path:
            raise ConfigurationError("external key material needs the Parquet file's path")
        config = pe.EncryptionConfiguration(
            footer_key=master_key_id(self.footer_key),
            column_keys=self.column_map(schema),
            encryption_algorithm=self.algorithm,
            plaintext_footer=self.plaintext_footer,
            double_wrapping=self.double_wrapping,
            cache_lifetime=self._lifetime(),
            internal_key_material=not self.external_key_material,
            data_key_length_bits=self.data_key_bits,
        )
        conn = connection_config(self.uris, self.context, self._lifetime())
        if not self.external_key_material:
            return crypto_factory().file_encryption_properties(conn, config)
        try:
            return crypto_factory().file_encryption_properties(conn, config, parquet_file_path)
        except (OSError, pa.ArrowException) as exc:
            raise ConfigurationError(
                f"cannot write external key material next to {parquet_file_path}: pyarrow's "
                f"filesystems cannot write there ({type(exc).__name__}); use internal key material"
            ) from None


@dataclass(frozen=True)
class PmeDecryption:
    """The keys a reader trusts to open PME files (picklable; no key material).

    Args:
        keys: key URIs; a file's master key id is matched by ``master_key_id(uri)``.
        context: the encryption context the writer used.
        key_map: extra master key id -> key URI, for keys whose URI changed since writing.
        cache_lifetime_seconds: how long unwrapped KEKs are reused.
    """

    keys: Sequence[str] = ()
    context: Mapping[str, str] = field(default_factory=dict)
    key_map: Mapping[str, str] = field(default_factory=dict)
    cache_lifetime_seconds: float = 600.0

    def __post_init__(self) -> None:
        keys = [self.keys] if isinstance(self.keys, str) else list(self.keys)
        object.__setattr__(self, "keys", tuple(_check_uri(k, "a key") for k in keys))
        object.__setattr__(self, "key_map", {k: _check_uri(v, "a key") for k, v in self.key_map.items()})
        object.__setattr__(self, "context", check_context(self.context))
        if not self.keys and not self.key_map:
            raise ConfigurationError("name the key URIs that may open the files")

    def properties(self, parquet_file_path: str | None = None) -> Any:
        """``FileDecryptionProperties`` (the path finds external key material)."""
        lifetime = datetime.timedelta(seconds=self.cache_lifetime_seconds)
        conn = connection_config(self.keys, self.context, lifetime, self.key_map)
        config = pe.DecryptionConfiguration(cache_lifetime=lifetime)
        return crypto_factory().file_decryption_properties(conn, config, parquet_file_path)


def rotate_key_material(
    path: str, decryption: PmeDecryption, *, double_wrapping: bool = True
) -> None:
    """Rewrap a file's external key material under its master keys' current versions.

    The data file is not touched: only ``_KEY_MATERIAL_FOR_<file>.json`` is rewritten, with
    PME keys wrapped by new data keys from the key sources (after a master key rotation,
    under its new primary version). ``decryption`` names the key URIs and context.

    Raises:
        ConfigurationError: the file has internal key material (nothing to rotate).
        KmsBeamError: a key source refused.
    """
    lifetime = datetime.timedelta(seconds=decryption.cache_lifetime_seconds)
    conn = connection_config(decryption.keys, decryption.context, lifetime, decryption.key_map)
    forget_wrapping_keys()  # rotation wants data keys under the current key versions
    crypto_factory().remove_cache_entries_for_token(conn.key_access_token)
    try:
        crypto_factory().rotate_master_keys(
            conn, path, double_wrapping=double_wrapping,
            cache_lifetime_seconds=decryption.cache_lifetime_seconds,
        )
    except KmsBeamError:
        raise
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise ConfigurationError(
            f"cannot rotate the key material of {path}: only files written with external key "
            f"material can be rotated ({type(exc).__name__})"
        ) from None
