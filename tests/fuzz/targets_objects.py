"""Fuzz targets for object stream v1: the header (``ObjectHeader.parse``, ``read_header``), the
chunk framing (``ObjectReader`` with the size known and streaming), and the OSS metadata."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from fuzzlib import Target, as_text, attempt

from kmsbeam.errors import AuthenticationError, ConfigurationError, FormatError, KeySourceError
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.formats.objects import ObjectReader, ObjectWriter
from kmsbeam.formats.objects._format import ObjectHeader, plaintext_size
from kmsbeam.formats.objects._reader import read_header

#: what an object reader documents: tampering is AuthenticationError (MalformedValueError:
#: not an object at all); a header naming another key is ConfigurationError; the key source's
#: own refusal of a wrapped key it cannot find is a KeySourceError
READER_ERRORS = (AuthenticationError, ConfigurationError, KeySourceError)


class Stream(io.RawIOBase):
    """A readable, non-seekable stream: the reader must find the last chunk by looking ahead."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self._b.readinto(b)


class ObjectTarget(Target):
    """Whole encrypted objects. Read with the size known (seekable) and streaming; an object
    decrypts only if its preamble and chunks are a written object's, to that object's bytes."""

    name = "object_stream"

    def __init__(self, workdir: Path) -> None:
        self.source = LocalKeySource("local:alias/fuzz", home=workdir / "keystore", create=True)
        self.objects: list[bytes] = []
        self.known: dict[tuple[bytes, bytes], bytes] = {}
        for chunk, size, context in ((16, 0, None), (16, 5, {"dataset": "d"}), (16, 16, None),
                                     (16, 40, {"a": "1", "b": "\u00e9"}), (32, 100, None)):  # fmt: skip
            plain = bytes(range(size))
            raw = io.BytesIO()
            with ObjectWriter(raw, self.source, context=context, chunk_size=chunk, close_raw=False) as w:
                w.write(plain)
            data = raw.getvalue()
            self.objects.append(data)
            self.known[(data[:42], data[w.header.size :])] = plain

    def seeds(self) -> list[bytes]:
        return list(self.objects)

    def check(self, data: bytes) -> None:
        expected = None
        parsed = attempt((AuthenticationError,), read_header, io.BytesIO(data))
        if parsed is not None:
            header, size = parsed
            assert header.to_bytes() == data[:size] and size == header.size
            assert ObjectHeader.parse(data[:size]) == header
            assert header.from_metadata(header.metadata()) == header
            expected = self.known.get((data[:42], data[size:]))
            if attempt((AuthenticationError,), plaintext_size, len(data), header.chunk_size, size) is None:
                assert expected is None
        for raw in (io.BytesIO(data), Stream(data)):
            plain = attempt(READER_ERRORS, _read, raw, self.source)
            assert plain is None or plain == expected, "a tampered object decrypted"
        if data in self.objects:
            assert _read(io.BytesIO(data), self.source) == expected


def _read(raw: Any, source: Any) -> bytes:
    reader = ObjectReader(raw, source, close_raw=False)
    out = reader.read()
    if reader.seekable() and out:  # random access lands on the same bytes
        middle = len(out) // 2
        reader.seek(middle)
        assert reader.read(7) == out[middle : middle + 7]
    return out


class ObjectMetadataTarget(Target):
    """``ObjectHeader.from_metadata``: OSS ``x-oss-meta-kmsbeam-*`` entries (input: one
    ``name=value`` per line). FormatError, AuthenticationError or a header with the same
    preamble and a non-empty wrapped key."""

    name = "object_metadata"

    def __init__(self) -> None:
        self.header = ObjectHeader(16, bytes(range(16)), bytes(range(16, 32)), "local:alias/pii",
                                   {"dataset": "d"}, b"\x01" + bytes(108))  # fmt: skip

    def seeds(self) -> list[bytes]:
        other = self.header.with_wrapped(b"\x02" + bytes(range(108)), "kms-emulator://127.0.0.1:9800/alias/x")
        return ["\n".join(f"{k}={v}" for k, v in h.metadata().items()).encode("utf-8")
                for h in (self.header, other)]  # fmt: skip

    def check(self, data: bytes) -> None:
        meta = dict(line.partition("=")[::2] for line in as_text(data).split("\n"))
        header = attempt((FormatError, AuthenticationError), self.header.from_metadata, meta, "fuzz")
        if header is None:
            return
        assert header.preamble == self.header.preamble and header.wrapped
        assert header.from_metadata(header.metadata()) == header
