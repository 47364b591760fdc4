"""PME key text v1 is pinned by vectors, decrypts from docs/FORMAT.md alone, and refuses any
tampering with one opaque error."""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam import AuthenticationError, MalformedValueError
from kmsbeam.formats.envelope import to_text
from kmsbeam.formats.parquet import master_key_id, parse_key_text
from kmsbeam.formats.parquet._keytext import seal_key_text

VECTORS = json.loads((Path(__file__).parent / "vectors" / "pme_key_v1.json").read_text())["vectors"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["description"])
def test_vectors_are_reproduced_exactly(v: dict[str, Any]) -> None:
    assert master_key_id(v["key_uri"]) == v["master_key_id"]
    assert v["master_key_id"] == "kmsbeam-" + hashlib.sha256(v["key_uri"].encode()).hexdigest()[:16]
    text = seal_key_text(bytes.fromhex(v["pme_key_hex"]), v["master_key_id"], v["key_uri"],
                         bytes.fromhex(v["wrapped_key_hex"]), AESGCM(bytes.fromhex(v["dek_hex"])),
                         bytes.fromhex(v["nonce_hex"]))  # fmt: skip
    assert text == v["key_text"]
    parsed = parse_key_text(text)
    assert parsed.uri == v["key_uri"] and parsed.wrapped.hex() == v["wrapped_key_hex"]
    assert parsed.key_version == "3f0b6a52-9c1e-4c4e-9d7a-2b8e6f1d0c55"
    assert parsed.open(v["master_key_id"], AESGCM(bytes.fromhex(v["dek_hex"]))).hex() == v["pme_key_hex"]


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: v["description"])
def test_vectors_decrypt_from_the_spec_alone(v: dict[str, Any]) -> None:
    """docs/FORMAT.md "PME key text v1", step by step, with nothing from kmsbeam."""
    data = base64.urlsafe_b64decode(v["key_text"] + "=" * (-len(v["key_text"]) % 4))
    assert data[0] == 1
    (ulen,) = struct.unpack(">H", data[1:3])
    uri = data[3 : 3 + ulen]
    (wlen,) = struct.unpack(">H", data[3 + ulen : 5 + ulen])
    wrapped = data[5 + ulen : 5 + ulen + wlen]
    nonce = data[5 + ulen + wlen : 17 + ulen + wlen]
    sealed = data[17 + ulen + wlen :]
    assert wrapped.hex() == v["wrapped_key_hex"] and uri.decode() == v["key_uri"]
    kid = v["master_key_id"].encode()
    aad = b"kmsbeam.pme-key.v1" + struct.pack(">H", len(kid)) + kid + struct.pack(">H", len(uri)) + uri
    assert aad.hex() == v["aad_hex"]
    key = AESGCM(bytes.fromhex(v["dek_hex"])).decrypt(nonce, sealed, aad)
    assert key.hex() == v["pme_key_hex"]


def test_master_key_ids_survive_pme_serialization() -> None:
    uris = ["local:alias/pii", "kms-emulator://127.0.0.1:9800/alias/x",
            "alibaba-kms://cn-hangzhou/alias/a?endpoint=kst-x.cryptoservice.kms.aliyuncs.com",
            "pkcs11:token=t;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:PIN"]  # fmt: skip
    ids = [master_key_id(u) for u in uris]
    assert len(set(ids)) == len(ids)
    for kid in ids:
        assert kid.startswith("kmsbeam-") and len(kid) == 24
        assert not set(kid) & set(":;, \t")


def test_every_flipped_bit_and_every_truncation_fails_opaquely() -> None:
    v = VECTORS[0]
    dek, kid = AESGCM(bytes.fromhex(v["dek_hex"])), v["master_key_id"]
    data = base64.urlsafe_b64decode(v["key_text"] + "=" * (-len(v["key_text"]) % 4))
    ulen = struct.unpack(">H", data[1:3])[0]
    w_start, w_end = 5 + ulen, 5 + ulen + len(bytes.fromhex(v["wrapped_key_hex"]))
    # W itself is authenticated by the key source (a changed W unwraps to nothing or to
    # another DEK); here the DEK is fixed, so only the bytes around W are flipped.
    for i in [*range(w_start), *range(w_end, len(data))]:
        for bit in (0x01, 0x80):
            tampered = bytearray(data)
            tampered[i] ^= bit
            with pytest.raises(AuthenticationError) as info:
                parse_key_text(to_text(bytes(tampered))).open(kid, dek)
            assert str(info.value) in (str(AuthenticationError()), str(MalformedValueError()))
    for n in range(len(data)):
        with pytest.raises(AuthenticationError):
            parse_key_text(to_text(data[:n])).open(kid, dek)


def test_a_text_opens_only_for_its_master_key_id() -> None:
    v = VECTORS[0]
    parsed = parse_key_text(v["key_text"])
    with pytest.raises(AuthenticationError):
        parsed.open(master_key_id("local:alias/other"), AESGCM(bytes.fromhex(v["dek_hex"])))


@pytest.mark.parametrize("text", ["", "=", "AQ==", "not base64!", "AQAA", 5])
def test_malformed_texts(text: Any) -> None:
    with pytest.raises(MalformedValueError):
        parse_key_text(text)
