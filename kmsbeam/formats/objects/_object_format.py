"""``ObjectFormat``: object stream v1 as a ``kmsbeam.formats.base.Format``.

The engines are ``ObjectWriter`` and ``ObjectReader`` (one data key per object, so the
data-key policy's caps do not apply); ``rewrap`` and ``inspect`` take the object's header
(``read_header``), and ``rewrap_metadata`` the OSS metadata that repeats its key block: a
rewrap replaces the key block only, every chunk byte stays the same.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, ClassVar

from kmsbeam.errors import FormatError, MalformedValueError
from kmsbeam.formats.base import MOVED, Context, Engines, Hook, KeyRewrap, KeyUse
from kmsbeam.formats.envelope import from_text, to_text
from kmsbeam.formats.objects._format import DEFAULT_CHUNK_SIZE, ObjectHeader
from kmsbeam.formats.objects._reader import ObjectReader
from kmsbeam.formats.objects._writer import ObjectWriter
from kmsbeam.formats.values import wrapped_version
from kmsbeam.keys.cache import DataKeyCache
from kmsbeam.keys.policy import DataKeyPolicy
from kmsbeam.keys.source import KeySource, check_context

__all__ = ["ObjectDecryptor", "ObjectEncryptor", "ObjectFormat"]


class ObjectEncryptor:
    """Opens ``ObjectWriter``s under one key source and context (a fresh data key each)."""

    def __init__(self, source: KeySource, context: Mapping[str, str] | None, chunk_size: int,
                 on_generate: Callable[[], None] | None) -> None:  # fmt: skip
        self._source, self._context, self._chunk_size = source, check_context(context), chunk_size
        self._on_generate = on_generate

    def writer(self, raw: IO[bytes] | Any, *, close_raw: bool = True) -> ObjectWriter:
        """A writer encrypting into ``raw`` (one GenerateDataKey)."""
        w = ObjectWriter(raw, self._source, context=self._context, chunk_size=self._chunk_size,
                         close_raw=close_raw)  # fmt: skip
        if self._on_generate is not None:
            self._on_generate()
        return w

    def encrypt(self, data: bytes) -> bytes:
        """One whole object in memory."""
        out = io.BytesIO()
        with self.writer(out, close_raw=False) as w:
            w.write(data)
        return out.getvalue()


class ObjectDecryptor:
    """Opens ``ObjectReader``s with one key source and context (``on_call``: once per reader,
    for its one Decrypt)."""

    def __init__(self, source: KeySource, context: Mapping[str, str] | None,
                 on_call: Callable[[], None] | None = None) -> None:  # fmt: skip
        self._source, self._context = source, None if context is None else check_context(context)
        self._on_call = on_call

    def reader(self, raw: IO[bytes] | Any, *, metadata: Mapping[str, str] | None = None, size: int | None = None,
               where: str = "the object", close_raw: bool = True) -> ObjectReader:  # fmt: skip
        reader = ObjectReader(raw, self._source, context=self._context, metadata=metadata, size=size,
                              where=where, close_raw=close_raw)  # fmt: skip
        if self._on_call is not None:
            self._on_call()
        return reader

    def decrypt(self, data: bytes) -> bytes:
        """One whole object in memory."""
        with self.reader(io.BytesIO(data)) as r:
            return r.read()


@dataclass(frozen=True)
class ObjectFormat(Engines[ObjectEncryptor, ObjectDecryptor]):
    """Object stream v1 (``docs/FORMAT.md``, "Object stream v1"); ``Sealed`` is the object's
    ``ObjectHeader``.

    Args:
        chunk_size: plaintext bytes per chunk the encryptor writes (readers take any).
    """

    chunk_size: int = DEFAULT_CHUNK_SIZE
    name: ClassVar[str] = "objects"
    section: ClassVar[str] = "Object stream v1"

    def _encryptor(self, source: KeySource, context: Context, policy: DataKeyPolicy | None,
                   on_generate: Hook) -> ObjectEncryptor:
        """Writers of objects under ``source``'s key: one data key per object, so ``policy``
        does not apply."""
        return ObjectEncryptor(source, context, self.chunk_size, on_generate)

    def _decryptor(self, source: KeySource, context: Context, cache: DataKeyCache | None,
                   on_call: Hook) -> ObjectDecryptor:
        """Readers with ``source``'s key (``context`` None: the one each header stores). Each
        object's data key is unwrapped once, directly: ``cache`` is not used."""
        return ObjectDecryptor(source, context, on_call)

    def rewrap(self, data: ObjectHeader, rewrap: KeyRewrap) -> ObjectHeader:
        """The header with its key block rewrapped (and the target's key URI), or ``data``
        itself when the key stays. Write it in place of the old header: its preamble (the
        chunks' AAD) is the same, so every chunk stays valid."""
        wrapped, status = rewrap.rewrap_key(data.wrapped, data.commitment)
        return data.with_wrapped(wrapped, rewrap.target_uri) if status in MOVED else data

    def rewrap_metadata(self, meta: Mapping[str, str], rewrap: KeyRewrap) -> dict[str, str]:
        """An object's ``x-oss-meta-`` entries with the wrapped key rewrapped (the object's
        bytes need not change: readers take the metadata's key block).

        Raises:
            FormatError: no kmsbeam object metadata. MalformedValueError: an entry is not
                in text form. Otherwise as ``KeyRewrap.rewrap_key``.
        """
        out = {k.lower(): v for k, v in meta.items()}
        if out.get("kmsbeam-format") != "object-v1" or "kmsbeam-wrapped-key" not in out:
            raise FormatError("no kmsbeam object metadata")
        commitment = from_text(out.get("kmsbeam-commitment", ""))
        if len(commitment) != 16:
            raise MalformedValueError()
        wrapped, status = rewrap.rewrap_key(from_text(out["kmsbeam-wrapped-key"]), commitment)
        if status in MOVED:
            out["kmsbeam-wrapped-key"] = to_text(wrapped)
            if rewrap.target_uri.isascii():
                out["kmsbeam-key"] = rewrap.target_uri
        return out

    def inspect(self, data: ObjectHeader) -> list[KeyUse]:
        """The object's data key (``where``: ``object``), with the key URI its header names."""
        version = wrapped_version(data.wrapped)
        return [KeyUse("object", data.commitment.hex(), data.wrapped[0], version, data.key_uri)]
