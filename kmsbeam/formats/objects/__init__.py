"""Whole-object envelope encryption: object stream v1 as file-like objects (no Beam).

::

    from kmsbeam.formats.objects import ObjectReader, ObjectWriter
    with open("x.kmsb", "wb") as f, ObjectWriter(f, "local:alias/export", close_raw=False) as w:
        w.write(data)
    with open("x.kmsb", "rb") as f:
        plain = ObjectReader(f).read()

One data key per object, chunked AES-256-GCM (1 MiB chunks by default), memory bounded by
two chunks whatever the object size. The format (``docs/FORMAT.md``, "Object stream v1")
makes truncation, extension, reordering and chunk swapping between objects fail with
``kmsbeam.AuthenticationError``; its header can be rewrapped without touching the chunks
(``ObjectFormat``: the format as one object, ``kmsbeam.formats.base.Format``).
"""

from kmsbeam.formats.objects._format import (
    DEFAULT_CHUNK_SIZE,
    MAGIC,
    ObjectHeader,
    ciphertext_size,
    plaintext_size,
)
from kmsbeam.formats.objects._object_format import ObjectDecryptor, ObjectEncryptor, ObjectFormat
from kmsbeam.formats.objects._reader import ObjectReader, read_header
from kmsbeam.formats.objects._writer import ObjectWriter

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "ObjectDecryptor",
    "ObjectEncryptor",
    "ObjectFormat",
    "ObjectHeader",
    "ObjectReader",
    "ObjectWriter",
    "ciphertext_size",
    "plaintext_size",
    "read_header",
]
