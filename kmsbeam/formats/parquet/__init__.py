"""Parquet column protection without Beam: Parquet Modular Encryption (PME) and cell columns.

Two ways to protect Parquet columns, both backed by kmsbeam key sources:

- **PME** (the Apache Parquet standard that Spark, parquet-java and pyarrow read): pyarrow
  encrypts column chunks and the footer; ``KeySourceKmsClient`` wraps its keys with data keys
  from key URIs, mapped to PME master key ids by ``master_key_id``. ``PmeEncryption`` and
  ``PmeDecryption`` make fresh file properties from the process's one ``crypto_factory()``.
- **Cells**: ``CellEncryptor`` turns chosen Arrow columns into binary columns of kmsbeam field
  values v1, readable by any engine and decryptable anywhere with ``FieldDecryptor``.

``inspect_parquet`` describes either kind of file without keys and without decrypting.
``CellFormat`` and ``PmeFormat`` (``formats``) are the two as ``kmsbeam.formats.base.Format``.
Formats: ``docs/FORMAT.md`` ("PME key text v1", "Cell columns").
"""

from kmsbeam.formats.parquet._arrow import column_at, replace_at
from kmsbeam.formats.parquet._cell_decryptor import CellDecryptor
from kmsbeam.formats.parquet._cells import (
    CELLS_KEY,
    CellEncryptor,
    cells_metadata,
    cells_schema,
    original_schema,
)
from kmsbeam.formats.parquet._client import (
    KeySourceKmsClient,
    KmsCalls,
    connection_config,
    crypto_factory,
    kms_call_totals,
    take_pending_calls,
)
from kmsbeam.formats.parquet.formats import CellFormat, PmeFormat
from kmsbeam.formats.parquet._inspect import (
    ColumnReport,
    FileReport,
    KeyReport,
    inspect_parquet,
    key_material_path,
)
from kmsbeam.formats.parquet._keytext import KeyText, master_key_id, parse_key_text
from kmsbeam.formats.parquet._pme import (
    PmeDecryption,
    PmeEncryption,
    expand_columns,
    leaf_paths,
    rotate_key_material,
)
from kmsbeam.formats.parquet._reading import iter_row_group, open_parquet

__all__ = [
    "CELLS_KEY",
    "CellDecryptor",
    "CellEncryptor",
    "CellFormat",
    "ColumnReport",
    "FileReport",
    "KeyReport",
    "KeySourceKmsClient",
    "KeyText",
    "KmsCalls",
    "PmeDecryption",
    "PmeEncryption",
    "PmeFormat",
    "cells_metadata",
    "cells_schema",
    "column_at",
    "connection_config",
    "crypto_factory",
    "expand_columns",
    "inspect_parquet",
    "iter_row_group",
    "key_material_path",
    "kms_call_totals",
    "leaf_paths",
    "master_key_id",
    "open_parquet",
    "original_schema",
    "parse_key_text",
    "replace_at",
    "rotate_key_material",
    "take_pending_calls",
]
