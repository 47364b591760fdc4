"""ObjectFormat: object stream v1 as one format object (encrypt, decrypt, rewrap the key block
or the OSS metadata in place, inspect the header) over real local keys."""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import pytest

from kmsbeam import AuthenticationError, DataKeyCache, FormatError, open_key_source
from kmsbeam.formats import ALREADY, REWRAPPED, Format, format_class
from kmsbeam.formats.objects import ObjectFormat, ObjectReader, read_header
from kmsbeam.keys.local import shared_engine
from kmsbeam.rotation.rewrap import Rewrapper

DATA = bytes(range(256)) * 300  # several chunks


def test_object_format_round_trip_rewrap_and_inspect(source: Any, kms_home: Path) -> None:
    fmt = ObjectFormat(chunk_size=4096)
    assert isinstance(fmt, Format) and format_class("objects") is ObjectFormat
    assert pickle.loads(pickle.dumps(fmt)) == fmt
    generated: list[int] = []
    blob = fmt.encryptor(source, context={"o": "1"}, on_generate=lambda: generated.append(1)).encrypt(DATA)
    calls: list[int] = []
    assert generated == [1] and fmt.decryptor(source, on_call=lambda: calls.append(1)).decrypt(blob) == DATA
    assert calls == [1]
    header, size = read_header(io.BytesIO(blob))
    (use,) = fmt.inspect(header)
    assert (use.where, use.commitment, use.key_uri, use.kind) == ("object", header.commitment.hex(), source.uri, source.kind)
    new_version = shared_engine(kms_home).create_key_version("alias/test").key_version_id
    rw = Rewrapper(open_key_source(source.uri), context={"o": "1"}, cache=DataKeyCache())
    new = fmt.rewrap(header, rw)
    assert rw.counts[REWRAPPED] == 1 and fmt.inspect(new)[0].version == new_version != use.version
    assert new.preamble == header.preamble  # the chunks' AAD: every chunk stays valid
    rotated = new.to_bytes() + blob[size:]
    assert fmt.decryptor(source).decrypt(rotated) == DATA
    assert fmt.rewrap(new, rw) is new and rw.counts[ALREADY] == 1 and rw.calls == 1


def test_object_format_rewraps_oss_metadata(source: Any, kms_home: Path) -> None:
    fmt = ObjectFormat()
    blob = fmt.encryptor(source).encrypt(DATA)
    header, _ = read_header(io.BytesIO(blob))
    shared_engine(kms_home).create_key_version("alias/test")
    rw = Rewrapper(open_key_source(source.uri), cache=DataKeyCache())
    meta = fmt.rewrap_metadata(header.metadata(), rw)
    assert meta["kmsbeam-wrapped-key"] != header.metadata()["kmsbeam-wrapped-key"]
    assert {k: v for k, v in meta.items() if k != "kmsbeam-wrapped-key"} == {
        k: v for k, v in header.metadata().items() if k != "kmsbeam-wrapped-key"}  # fmt: skip
    with ObjectReader(io.BytesIO(blob), source, metadata=meta) as reader:
        assert reader.read() == DATA
    other = fmt.encryptor(source).encrypt(b"x")
    swapped = dict(meta, **{"kmsbeam-commitment": read_header(io.BytesIO(other))[0].metadata()["kmsbeam-commitment"]})
    with pytest.raises(AuthenticationError):  # the new key is checked against K
        fmt.rewrap_metadata(swapped, Rewrapper(open_key_source(source.uri), cache=DataKeyCache(),
                                               target_version="another"))  # fmt: skip
    with pytest.raises(FormatError):
        fmt.rewrap_metadata({"content-type": "x"}, rw)
