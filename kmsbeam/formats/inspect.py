"""Inspect a kmsbeam file of any format, without keys and without decrypting: ``inspect_file``.

The first bytes say which format owns a file: ``PAR1`` / ``PARE`` is Parquet (PME keys, cell
and record columns: ``kmsbeam.formats.parquet.inspect_parquet``), ``KMSO`` an object stream
(its header: ``ObjectFormat.inspect``). Either way the answer is a ``FileReport``; no key
source is called, and a key URI read from the data is reported as text, never opened.
"""

from __future__ import annotations

import os
from pathlib import Path

from kmsbeam.errors import FormatError, KmsBeamError
from kmsbeam.formats.objects import MAGIC, ObjectFormat, read_header
from kmsbeam.formats.parquet import FileReport, KeyReport, inspect_parquet
from kmsbeam.formats.values import kind_name

__all__ = ["inspect_file"]


def inspect_file(path: str | os.PathLike[str]) -> FileReport:
    """How the local file at ``path`` is protected (see the module docstring).

    Raises:
        FormatError: neither Parquet nor a kmsbeam object, or a damaged one.
        OSError: the file cannot be read.
    """
    p = Path(path)
    with open(p, "rb") as f:
        if f.read(len(MAGIC)) != MAGIC:
            return inspect_parquet(p)
        f.seek(0)
        try:
            header, size = read_header(f)
        except KmsBeamError:
            raise FormatError(f"{p} is not a kmsbeam object, or its header is damaged") from None
    (use,) = ObjectFormat().inspect(header)
    report = FileReport(str(p), p.stat().st_size, "object stream v1", "AES_GCM (chunks)")
    report.data_key = KeyReport("", use.key_uri or None, kind_name(use.kind), use.version or None,
                                key_material="object header")  # fmt: skip
    report.notes.append(f"chunks of {header.chunk_size:,} bytes after a {size:,}-byte header")
    return report
