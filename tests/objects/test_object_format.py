"""Object stream v1: round trips, random access, sizes, rewrap, and the vectors from the spec."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import os
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kmsbeam import ConfigurationError, open_key_source
from kmsbeam.keys.source import DataKey
from kmsbeam.formats.objects import ObjectHeader, ObjectReader, ObjectWriter, ciphertext_size, read_header

VECTORS = json.loads((Path(__file__).parent / "object_v1.json").read_text(encoding="utf-8"))["vectors"]


class Stream(io.RawIOBase):
    """A non-seekable source: the reader must find the last chunk by looking ahead."""

    def __init__(self, data: bytes) -> None:
        self._b = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        return self._b.readinto(b)


def seal(source: Any, data: bytes, chunk: int = 64, piece: int = 7, **kw: Any) -> tuple[bytes, ObjectWriter]:
    raw = io.BytesIO()
    w = ObjectWriter(raw, source, chunk_size=chunk, close_raw=False, **kw)
    for i in range(0, len(data), piece):
        w.write(data[i : i + piece])
    w.close()
    return raw.getvalue(), w


@pytest.mark.parametrize("size", [0, 1, 63, 64, 65, 128, 129, 1000])
def test_round_trip_seekable_and_streaming(source: Any, size: int) -> None:
    data = os.urandom(size)
    blob, w = seal(source, data, context={"dataset": "x"})
    assert len(blob) == ciphertext_size(size, 64, w.header.size)
    assert ObjectReader(io.BytesIO(blob)).read() == data
    assert ObjectReader(Stream(blob)).read() == data
    small = ObjectReader(Stream(blob))
    assert b"".join(iter(lambda: small.read(5), b"")) == data


def test_large_writes_go_straight_through_and_read_into_caller_buffers(source: Any) -> None:
    data = os.urandom(10 * 4096 + 17)
    blob, _ = seal(source, data, chunk=4096, piece=len(data))
    out = bytearray(len(data) + 100)
    assert ObjectReader(io.BytesIO(blob)).readinto(out) == len(data)
    assert bytes(out[: len(data)]) == data


@pytest.mark.parametrize("pieces", [[64, 64], [64, 64, 64], [64, 10], [128, 64], [130], [64, 0, 64]])
def test_whole_chunk_writes_give_the_same_object_as_small_writes(source: Any, pieces: list[int]) -> None:
    # A whole chunk of bytes waits for the next write (or close) without a copy; a bytearray is
    # copied, so changing it after write() changes nothing.
    data_key = source.generate_data_key({})
    data = os.urandom(sum(pieces))

    def written(kind: type) -> bytes:
        raw = io.BytesIO()
        w = ObjectWriter.with_data_key(raw, data_key, source.uri, chunk_size=64,
                                       close_raw=False, object_id=bytes(16))  # fmt: skip
        pos = 0
        for n in pieces:
            piece = kind(data[pos : pos + n])
            w.write(piece)
            if kind is bytearray:
                piece[:] = bytes(len(piece))
            pos += n
        w.close()
        return raw.getvalue()

    small = io.BytesIO()
    w = ObjectWriter.with_data_key(small, data_key, source.uri, chunk_size=64,
                                   close_raw=False, object_id=bytes(16))  # fmt: skip
    for i in range(len(data)):
        w.write(data[i : i + 1])
    w.close()
    assert written(bytes) == written(bytearray) == small.getvalue()
    assert ObjectReader(io.BytesIO(small.getvalue()), source).read() == data


def test_random_access_reads_only_the_chunk_it_needs(source: Any) -> None:
    data = os.urandom(1000)
    blob, w = seal(source, data, chunk=64)
    raw = io.BytesIO(blob)
    reader = ObjectReader(raw)
    assert reader.seekable() and reader.plaintext_size == 1000
    for offset in (0, 63, 64, 500, 999, 1000, 37):
        assert reader.seek(offset) == offset
        assert reader.read(100) == data[offset : offset + 100]
    reader.seek(-10, io.SEEK_END)
    assert reader.read() == data[-10:]
    reader.seek(640)
    assert raw.tell() == w.header.size + 11 * (64 + 16)  # chunk 10 read, nothing more


def test_header_and_metadata_describe_the_object(source: Any) -> None:
    blob, w = seal(source, b"abc", context={"dataset": "customers"})
    header, size = read_header(io.BytesIO(blob))
    assert size == w.header.size and header == w.header
    assert header.context == {"dataset": "customers"} and header.key_uri == source.uri
    meta = header.metadata()
    assert meta["kmsbeam-format"] == "object-v1" and meta["kmsbeam-key"] == source.uri
    assert header.from_metadata(meta) == header
    assert "plaintext" not in repr(header) and header.wrapped.hex() not in repr(header)


def test_rewrap_replaces_the_key_block_and_leaves_every_chunk_identical(source: Any) -> None:
    data = os.urandom(300)
    blob, w = seal(source, data)
    other = open_key_source("local:alias/rotated", create=True)
    rewrapped = other.rewrap(w.header.wrapped)
    new_header = w.header.with_wrapped(rewrapped, other.uri)
    body = blob[w.header.size :]
    moved = new_header.to_bytes() + body
    assert moved[new_header.size :] == body and new_header.preamble == w.header.preamble
    assert ObjectReader(io.BytesIO(moved), other).read() == data
    # ... or, for OSS, only the metadata changes and the stored bytes stay as they were:
    meta = new_header.metadata()
    assert ObjectReader(io.BytesIO(blob), other, metadata=meta).read() == data


def test_a_key_that_cannot_unwrap_is_a_clear_error(
    source: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blob, _ = seal(source, b"secret data")
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path))  # another keystore: another master key
    other = open_key_source("local:alias/other", create=True)
    with pytest.raises(ConfigurationError, match="another key") as caught:
        ObjectReader(io.BytesIO(blob), other.uri).read()
    assert "alias/test" not in str(caught.value)  # the header's URI is data: never repeated


def test_writer_refuses_to_pickle_and_aborts_on_error(source: Any) -> None:
    import pickle

    raw = io.BytesIO()
    with pytest.raises(TypeError):
        pickle.dumps(ObjectWriter(raw, source, close_raw=False))
    raw = io.BytesIO()
    with pytest.raises(RuntimeError):
        with ObjectWriter(raw, source, chunk_size=16) as w:
            w.write(b"x" * 40)
            raise RuntimeError("boom")
    assert raw.closed  # aborted: no last chunk was written, the sink was closed


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{len(v['plaintext']) // 2}B")
def test_vectors_are_reproduced(vector: dict[str, Any]) -> None:
    raw = io.BytesIO()
    data_key = DataKey(bytes.fromhex(vector["dek"]), bytes.fromhex(vector["wrapped"]), "k", "v")
    w = ObjectWriter.with_data_key(raw, data_key, vector["key_uri"], context=vector["context"],
                                   chunk_size=vector["chunk_size"], close_raw=False,
                                   object_id=bytes.fromhex(vector["object_id"]))  # fmt: skip
    w.write(bytes.fromhex(vector["plaintext"]))
    w.close()
    assert raw.getvalue().hex() == vector["object"]


@pytest.mark.parametrize("vector", VECTORS, ids=lambda v: f"{len(v['plaintext']) // 2}B")
def test_vectors_decrypt_from_the_spec_alone(vector: dict[str, Any]) -> None:
    """docs/FORMAT.md "Object stream v1", step by step, with nothing but AESGCM and HKDF."""
    obj, dek = bytes.fromhex(vector["object"]), bytes.fromhex(vector["dek"])
    assert obj[:4] == b"KMSO" and obj[4] == 1 and obj[5] == 1
    (chunk,) = struct.unpack(">I", obj[6:10])
    object_id, commitment = obj[10:26], obj[26:42]
    (block,) = struct.unpack(">I", obj[42:46])
    pos, fields = 46, []
    for _ in range(3):
        (n,) = struct.unpack(">H", obj[pos : pos + 2])
        fields.append(obj[pos + 2 : pos + 2 + n])
        pos += 2 + n
    assert pos == 46 + block and fields[0].decode() == vector["key_uri"]
    assert json.loads(fields[1]) == vector["context"]
    assert hmac.digest(dek, b"kmsbeam.key-commitment.v1", hashlib.sha256)[:16] == commitment
    key = HKDF(SHA256(), 32, salt=object_id, info=b"kmsbeam.object.v1").derive(dek)
    body, aead, out, i = obj[pos:], AESGCM(key), b"", 0
    while body:
        piece, body = body[: chunk + 16], body[chunk + 16 :]
        nonce = struct.pack(">QI", i, 0 if body else 1)
        out += aead.decrypt(nonce, piece, obj[:42])
        i += 1
    assert out.hex() == vector["plaintext"]


def test_header_validates_its_fields() -> None:
    with pytest.raises(ValueError):
        ObjectHeader(8, b"\0" * 16, b"\0" * 16, "", {}, b"\1")
    with pytest.raises(ValueError):
        ObjectHeader(64, b"\0" * 15, b"\0" * 16, "", {}, b"\1")
