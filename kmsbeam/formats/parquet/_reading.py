"""Opening and reading (possibly PME-encrypted) Parquet files safely, errors as kmsbeam's.

Caveat (measured, pyarrow 25): touching an encrypted column's chunk metadata
(``metadata.row_group(i).column(j)``, ``metadata.to_dict()``) when its key is missing or its
unwrap fails aborts the whole process, whatever the footer mode. Nothing here touches column
chunk metadata; reading (``iter_batches``, ``read_row_group``) raises a normal exception.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from kmsbeam.errors import AuthenticationError, ConfigurationError, FormatError, KmsBeamError
from kmsbeam.formats.parquet._pme import PmeDecryption

__all__ = ["iter_row_group", "open_parquet"]


def _reading_error(name: str, exc: Exception) -> KmsBeamError:
    """A pyarrow error while opening or reading ``name`` as one clear kmsbeam error."""
    text = str(exc)
    lower = text.lower()
    if "magic bytes" in lower or "parquet file size is" in lower or "couldn't deserialize" in lower:
        return FormatError(f"{name} is not a Parquet file, or it is truncated")
    if "no decryption found" in lower or "filedecryption is not setup" in lower or (
        "no key" in lower and "decrypt" in lower
    ):
        return ConfigurationError(
            f"{name} has encrypted parts and no keys were given to read them; name the key "
            "URIs (--key / keys=...)"
        )
    if "decrypt" in lower or "signature" in lower or "tag" in lower:
        return AuthenticationError()
    return FormatError(f"{name} cannot be read as Parquet ({type(exc).__name__})")


def open_parquet(
    source: Any, name: str, decryption: PmeDecryption | None = None, path: str | None = None
) -> pq.ParquetFile:
    """Open a (possibly PME-encrypted) Parquet file.

    Args:
        source: a path or a readable binary file object.
        name: how errors name the file.
        decryption: the reader's keys; None for files without PME (plaintext columns of a
            plaintext-footer file are readable too).
        path: the local path of the file, to find external key material.

    Raises:
        FormatError: not Parquet, or truncated. ConfigurationError: keys are needed.
        KmsBeamError: the key source refused (disabled key, access denied...).
    """
    props = None if decryption is None else decryption.properties(path)
    try:
        return pq.ParquetFile(source, decryption_properties=props)
    except KmsBeamError:
        raise
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise _reading_error(name, exc) from None


def iter_row_group(
    pf: pq.ParquetFile,
    index: int,
    name: str,
    columns: Sequence[str] | None = None,
    batch_size: int = 65536,
) -> Iterator[pa.RecordBatch]:
    """The record batches of one row group, with errors mapped as for ``open_parquet``."""
    try:
        yield from pf.iter_batches(batch_size=batch_size, row_groups=[index], columns=columns)
    except KmsBeamError:
        raise
    except (OSError, pa.ArrowException, ValueError) as exc:
        raise _reading_error(name, exc) from None
