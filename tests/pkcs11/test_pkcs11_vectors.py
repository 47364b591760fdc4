"""The wrapped-key layout v1, pinned by vectors.json and checked against pyca/cryptography.

A KEK of known value is imported into the test token with OpenSC's pkcs11-tool (extractable
test material: only this test does that); then the HSM must unwrap the fixed vectors, and a
key kmsbeam wraps must unwrap with ``cryptography``'s RFC 3394 ``aes_key_unwrap``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDFExpand
from cryptography.hazmat.primitives.keywrap import aes_key_unwrap, aes_key_wrap
from pkcs11_helpers import Hsm

from kmsbeam import AuthenticationError, canonical_context
from kmsbeam.keys.source import KIND_PKCS11
from kmsbeam.pkcs11 import Pkcs11KeySource
from kmsbeam.pkcs11._blob import Blob

DATA = json.loads((Path(__file__).parent / "vectors.json").read_text(encoding="utf-8"))
KEK = bytes.fromhex(DATA["kek"])
VECTORS: list[dict[str, Any]] = DATA["vectors"]
LABEL, KEK_ID = VECTORS[0]["kek_label"], VECTORS[0]["kek_id"]


def hkdf_expand(seed: bytes, info: bytes, n: int) -> bytes:
    return HKDFExpand(hashes.SHA256(), n, info).derive(seed)


def layout(v: dict[str, Any]) -> bytes:
    """The v1 layout written out independently of kmsbeam's encoder."""
    token, label, kek_id = v["token"].encode(), v["kek_label"].encode(), bytes.fromhex(v["kek_id"])
    wrapped = bytes.fromhex(v["wrapped_seed"])
    return (bytes([KIND_PKCS11, 1, 1, len(token)]) + token + bytes([len(label)]) + label
            + bytes([len(kek_id)]) + kek_id + bytes([len(wrapped)]) + wrapped + bytes.fromhex(v["tag"]))  # fmt: skip


@pytest.fixture(scope="module")
def vector_source(hsm: Hsm, tmp_path_factory: pytest.TempPathFactory) -> Pkcs11KeySource:
    path = tmp_path_factory.mktemp("kek") / "kek.bin"
    path.write_bytes(KEK)
    hsm.tool("--write-object", str(path), "--type", "secrkey", "--key-type", "AES:32",
             "--label", LABEL, "--id", KEK_ID, "--usage-wrap")  # fmt: skip
    path.unlink()
    return Pkcs11KeySource(hsm.uri(LABEL))


@pytest.mark.parametrize("v", VECTORS, ids=[v["description"] for v in VECTORS])
def test_the_vectors_follow_from_rfc3394_and_rfc5869(v: dict[str, Any]) -> None:
    seed = bytes.fromhex(v["seed"])
    assert canonical_context(v["context"]).decode() == v["canonical_context"]
    assert aes_key_wrap(KEK, seed).hex() == v["wrapped_seed"]
    assert hkdf_expand(seed, b"kmsbeam.pkcs11.v1/data-key", 32).hex() == v["dek"]
    info = b"kmsbeam.pkcs11.v1/context/" + v["canonical_context"].encode()
    assert hkdf_expand(seed, info, 16).hex() == v["tag"]
    assert layout(v).hex() == v["wrapped_key"]
    blob = Blob(v["token"], v["kek_label"], bytes.fromhex(v["kek_id"]), bytes.fromhex(v["wrapped_seed"]),
                bytes.fromhex(v["tag"]))  # fmt: skip
    assert (bytes([KIND_PKCS11]) + blob.encode()).hex() == v["wrapped_key"]
    assert Blob.decode(bytes.fromhex(v["wrapped_key"])[1:]) == blob


@pytest.mark.parametrize("v", VECTORS, ids=[v["description"] for v in VECTORS])
def test_the_hsm_unwraps_the_vectors(vector_source: Pkcs11KeySource, v: dict[str, Any]) -> None:
    wrapped = bytes.fromhex(v["wrapped_key"])
    assert vector_source.decrypt_data_key(wrapped, v["context"]).hex() == v["dek"]
    with pytest.raises(AuthenticationError):
        vector_source.decrypt_data_key(wrapped, {**v["context"], "x": "y"})


def test_what_kmsbeam_wraps_unwraps_with_cryptography(vector_source: Pkcs11KeySource) -> None:
    context = {"table": "customers"}
    key = vector_source.generate_data_key(context)
    blob = Blob.decode(key.wrapped[1:])
    assert (blob.token, blob.kek_label, blob.kek_id.hex()) == ("etl", LABEL, KEK_ID)
    seed = aes_key_unwrap(KEK, blob.wrapped_seed)  # RFC 3394, integrity checked
    assert len(seed) == 32 and seed != key.plaintext
    assert hkdf_expand(seed, b"kmsbeam.pkcs11.v1/data-key", 32) == key.plaintext
    info = b"kmsbeam.pkcs11.v1/context/" + canonical_context(context)
    assert hkdf_expand(seed, info, 16) == blob.tag
