"""Every way to damage an object fails with the one AuthenticationError, never wrong plaintext."""

from __future__ import annotations

import io
import os
from typing import Any

import pytest

from kmsbeam import AuthenticationError, FormatError
from kmsbeam.formats.objects import ObjectReader, ObjectWriter

CHUNK = 32


class Stream(io.RawIOBase):
    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self._b.readinto(b)


def seal(source: Any, data: bytes, **kw: Any) -> tuple[bytes, int]:
    raw = io.BytesIO()
    w = ObjectWriter(raw, source, chunk_size=CHUNK, close_raw=False, **kw)
    w.write(data)
    w.close()
    return raw.getvalue(), w.header.size


def read_all(blob: bytes, source: Any, streaming: bool, **kw: Any) -> bytes:
    raw = Stream(blob) if streaming else io.BytesIO(blob)
    return ObjectReader(raw, source, **kw).read()


@pytest.fixture()
def obj(source: Any) -> tuple[bytes, bytes, int]:
    data = os.urandom(3 * CHUNK + 5)
    blob, hsize = seal(source, data, context={"dataset": "d"})
    return data, blob, hsize


@pytest.mark.parametrize("streaming", [False, True], ids=["seekable", "streaming"])
def test_every_flipped_bit_outside_the_key_uri_fails(source: Any, obj: Any, streaming: bool) -> None:
    data, blob, hsize = obj
    uri_start, uri_end = 48, 48 + len(source.uri)  # the key URI is a hint, not authenticated
    for i in range(len(blob)):
        for bit in (0x01, 0x80):
            bad = bytearray(blob)
            bad[i] ^= bit
            try:
                out = read_all(bytes(bad), source, streaming)  # context: the header's
            except AuthenticationError:
                continue
            assert uri_start <= i < uri_end and out == data, f"byte {i} bit {bit:#x} not detected"


@pytest.mark.parametrize("streaming", [False, True], ids=["seekable", "streaming"])
def test_truncation_at_every_length_fails(source: Any, obj: Any, streaming: bool) -> None:
    data, blob, hsize = obj
    for n in range(len(blob)):
        with pytest.raises(AuthenticationError):
            read_all(blob[:n], source, streaming)


@pytest.mark.parametrize("streaming", [False, True], ids=["seekable", "streaming"])
def test_appended_data_fails(source: Any, obj: Any, streaming: bool) -> None:
    data, blob, hsize = obj
    body = blob[hsize:]
    for extra in (b"\0", os.urandom(15), os.urandom(16), os.urandom(CHUNK + 16), body[: CHUNK + 16]):
        with pytest.raises(AuthenticationError):
            read_all(blob + extra, source, streaming)


def test_reordered_dropped_and_duplicated_chunks_fail(source: Any, obj: Any) -> None:
    data, blob, hsize = obj
    size = CHUNK + 16
    head, body = blob[:hsize], blob[hsize:]
    chunks = [body[i : i + size] for i in range(0, len(body), size)]
    variants = [
        [chunks[1], chunks[0], *chunks[2:]],
        [chunks[0], chunks[2], chunks[1], chunks[3]],
        [chunks[0], chunks[1], chunks[3]],  # a middle chunk dropped
        [chunks[0], chunks[0], chunks[1], chunks[2], chunks[3]],
        chunks[:3],  # the last chunk dropped: a whole-chunk truncation
    ]
    for variant in variants:
        for streaming in (False, True):
            with pytest.raises(AuthenticationError):
                read_all(head + b"".join(variant), source, streaming)


def test_chunks_swapped_between_objects_fail(source: Any) -> None:
    data = os.urandom(3 * CHUNK)
    a, ha = seal(source, data)
    b, hb = seal(source, data)
    size = CHUNK + 16
    mixed = a[: ha + size] + b[hb + size : hb + 2 * size] + a[ha + 2 * size :]
    with pytest.raises(AuthenticationError):
        read_all(mixed, source, False)
    with pytest.raises(AuthenticationError):  # b's header over a's chunks
        read_all(b[:hb] + a[ha:], source, False)


def test_wrong_context_fails(source: Any, obj: Any) -> None:
    data, blob, hsize = obj
    with pytest.raises(AuthenticationError):
        read_all(blob, source, False, context={"dataset": "other"})


def test_metadata_of_another_object_fails_and_missing_metadata_is_clear(source: Any, obj: Any) -> None:
    data, blob, hsize = obj
    from kmsbeam.formats.objects import read_header

    other_blob, _ = seal(source, b"other")
    other_meta = read_header(io.BytesIO(other_blob))[0].metadata()
    with pytest.raises(AuthenticationError):
        ObjectReader(io.BytesIO(blob), source, metadata=other_meta)
    with pytest.raises(FormatError, match="oss://b/x.kmsb"):
        ObjectReader(io.BytesIO(blob), source, metadata={"other": "1"}, where="oss://b/x.kmsb")


def test_not_an_object_fails_the_same_way(source: Any) -> None:
    for junk in (b"", b"KMSO", b"hello world" * 10, b"KMSO\x02" + b"\0" * 100):
        with pytest.raises(AuthenticationError):
            read_all(junk, source, False)


def test_an_aborted_writer_never_yields_an_object(source: Any) -> None:
    raw = io.BytesIO()
    w = ObjectWriter(raw, source, chunk_size=CHUNK, close_raw=False)
    w.write(os.urandom(5 * CHUNK))
    raw.close = lambda: None  # type: ignore[method-assign]  # keep the bytes to inspect
    w.abort()
    with pytest.raises(AuthenticationError):
        read_all(raw.getvalue(), source, False)
