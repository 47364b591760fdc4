"""BYOK: GetParametersForImport / ImportKeyMaterial / DeleteKeyMaterial with every wrapping
algorithm, wrapped on the client side with ``cryptography``, on a real keystore."""

from __future__ import annotations

import base64
import multiprocessing
import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.errors import ConfigurationError, KeyDisabledError, KmsBeamError
from kmsbeam.kms import ImportParameters, KeyStore, KmsEngine

ALGORITHMS = ("RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", "RSAES_PKCS1_V1_5")
CTX = {"table": "users"}
HOUR = 3600


def wrap(params: ImportParameters, material: bytes, algorithm: str) -> bytes:
    """What a client does: encrypt the material with the returned public key."""
    public = serialization.load_der_public_key(base64.b64decode(params.public_key))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    if algorithm == "RSAES_PKCS1_V1_5":
        return public.encrypt(material, padding.PKCS1v15())
    digest = hashes.SHA256() if algorithm == "RSAES_OAEP_SHA_256" else hashes.SHA1()
    return public.encrypt(material, padding.OAEP(padding.MGF1(digest), digest, None))


def _import(
    engine: KmsEngine, key: str, material: bytes, alg: str = ALGORITHMS[0], **kw: int
) -> None:
    params = engine.get_parameters_for_import(key, alg, "RSA_2048")
    engine.import_key_material(key, wrap(params, material, alg), params.import_token, **kw)


def _error(
    call: Callable[[], object], error: type[KmsBeamError] = ConfigurationError
) -> KmsBeamError:
    with pytest.raises(error) as err:
        call()
    return err.value


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_import_then_encrypt_and_decrypt(engine: KmsEngine, algorithm: str) -> None:
    key = engine.create_key(origin="EXTERNAL").key_id
    params = engine.get_parameters_for_import(key, algorithm, "RSA_2048")
    assert params.key_id == key and params.token_expire_time == "2026-11-24T12:00:00Z"
    material = os.urandom(32)
    engine.import_key_material(key, wrap(params, material, algorithm), params.import_token)
    meta = engine.describe_key(key)
    assert (meta.key_state, meta.material_expire_time) == ("Enabled", "")
    assert [v.key_version_id for v in engine.list_key_versions(key)] == [meta.primary_key_version]
    assert meta.last_rotation_date == "2026-11-23T12:00:00Z"
    data_key = engine.generate_data_key(key, context=CTX)
    assert engine.decrypt(data_key.ciphertext_blob, CTX).plaintext == base64.b64encode(
        data_key.plaintext
    )
    # the blob is sealed with the imported material itself (the documented layout)
    blob = engine.encrypt(key, b"hello", CTX).ciphertext_blob
    vid, iv, body = blob[:36], blob[36:48], blob[48:]
    aad = vid + b'{"table":"users"}'
    assert AESGCM(material).decrypt(iv, body, aad) == b"hello"
    ours = AESGCM(material).encrypt(b"\x01" * 12, b"made outside", aad)
    assert engine.decrypt(vid + b"\x01" * 12 + ours, CTX).plaintext == b"made outside"


def test_bad_wrapping_and_tokens(engine: KmsEngine, clock: Any) -> None:
    key = engine.create_key(origin="EXTERNAL").key_id
    other = engine.create_key(origin="EXTERNAL").key_id
    material = os.urandom(32)
    params = engine.get_parameters_for_import(key, "RSAES_OAEP_SHA_256", "RSA_2048")
    cases: list[tuple[bytes, str, str]] = [
        (wrap(params, material, "RSAES_OAEP_SHA_1"), params.import_token, "does not unwrap"),
        (wrap(params, material, "RSAES_PKCS1_V1_5"), params.import_token, "does not unwrap"),
        (wrap(params, material[:16], "RSAES_OAEP_SHA_256"), params.import_token, "256 bits"),
        (wrap(params, material, "RSAES_OAEP_SHA_256")[:-1], params.import_token, "unwrap"),
        (wrap(params, material, "RSAES_OAEP_SHA_256"), "bm90IGEgdG9rZW4=", "not valid"),
    ]
    messages = []
    for ciphertext, token, text in cases:
        err = _error(lambda: engine.import_key_material(key, ciphertext, token))
        assert err.code == "InvalidParameter" and text in str(err)
        messages.append(str(err))
    foreign = engine.get_parameters_for_import(other, "RSAES_OAEP_SHA_256", "RSA_2048")
    err = _error(lambda: engine.import_key_material(
        key, wrap(foreign, material, "RSAES_OAEP_SHA_256"), foreign.import_token))  # fmt: skip
    assert err.code == "InvalidParameter" and "not valid for key" in str(err)
    assert engine.describe_key(key).key_state == "PendingImport"  # nothing was imported
    for text in messages + [str(err)]:
        assert material.hex() not in text and base64.b64encode(material).decode() not in text


def test_token_expires_after_24_hours(engine: KmsEngine, clock: Any) -> None:
    key = engine.create_key(origin="EXTERNAL").key_id
    material = os.urandom(32)
    late = engine.get_parameters_for_import(key, "RSAES_OAEP_SHA_1", "RSA_2048")
    in_time = engine.get_parameters_for_import(key, "RSAES_OAEP_SHA_1", "RSA_2048")
    assert late.import_token != in_time.import_token and late.public_key != in_time.public_key
    clock.advance(24 * HOUR - 1)
    ciphertext = wrap(in_time, material, "RSAES_OAEP_SHA_1")
    engine.import_key_material(key, ciphertext, in_time.import_token)
    clock.advance(1)
    late_ciphertext = wrap(late, material, "RSAES_OAEP_SHA_1")
    err = _error(lambda: engine.import_key_material(key, late_ciphertext, late.import_token))
    assert err.code == "InvalidParameter" and "expired" in str(err)
    engine.get_parameters_for_import(key, "RSAES_OAEP_SHA_1", "RSA_2048")  # purges expired ones
    with sqlite3.connect(engine.store.path) as conn:
        assert conn.execute("SELECT COUNT(*) FROM import_tokens").fetchone()[0] == 1
    conn.close()


def _import_in_child(
    directory: str, key: str, ciphertext: bytes, token: str, queue: Any
) -> None:
    engine = KmsEngine(KeyStore(Path(directory), create=False))
    engine.import_key_material(key, ciphertext, token)
    queue.put(engine.describe_key(key).key_state)


def test_token_survives_restart_and_works_in_another_process(tmp_path: Path) -> None:
    first = KmsEngine(KeyStore(tmp_path))
    key = first.create_key(origin="EXTERNAL").key_id
    params = first.get_parameters_for_import(key, "RSAES_OAEP_SHA_256", "RSA_2048")
    first.store.close()
    material = os.urandom(32)
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    args = (str(tmp_path), key, wrap(params, material, "RSAES_OAEP_SHA_256"), params.import_token)
    child = ctx.Process(target=_import_in_child, args=(*args, queue))
    child.start()
    child.join(timeout=120)
    assert child.exitcode == 0 and queue.get(timeout=5) == "Enabled"
    again = KmsEngine(KeyStore(tmp_path))
    blob = again.encrypt(key, b"x").ciphertext_blob
    assert AESGCM(material).decrypt(blob[36:48], blob[48:], blob[:36] + b"{}") == b"x"
    # the token is stored only as a hash; the private key is stored, never in a repr
    raw = (tmp_path / "keystore.db").read_bytes() + Path(f"{tmp_path}/keystore.db-wal").read_bytes()
    assert params.import_token.encode() not in raw
    assert "PRIVATE" not in repr(params) and params.public_key in repr(params)


def test_reimport_needs_the_same_material(engine: KmsEngine, clock: Any) -> None:
    key = engine.create_key(origin="EXTERNAL").key_id
    material = os.urandom(32)
    _import(engine, key, material)
    blob = engine.encrypt(key, b"kept", CTX).ciphertext_blob
    version = engine.describe_key(key).primary_key_version
    err = _error(lambda: _import(engine, key, os.urandom(32), "RSAES_PKCS1_V1_5"))
    assert err.code == "InvalidParameter" and "only the material first imported" in str(err)
    expire = int(clock()) + 10 * HOUR
    _import(engine, key, material, "RSAES_PKCS1_V1_5", key_material_expire_unix=expire)
    meta = engine.describe_key(key)
    assert (meta.key_state, meta.primary_key_version) == ("Enabled", version)
    assert meta.material_expire_time == "2026-11-23T22:00:00Z"
    assert engine.decrypt(blob, CTX).plaintext == b"kept"
    engine.disable_key(key)
    _import(engine, key, material)  # a re-import keeps a disabled key disabled
    meta = engine.describe_key(key)
    assert (meta.key_state, meta.material_expire_time) == ("Disabled", "")


def test_material_expiry_and_deletion_return_the_key_to_pending_import(
    engine: KmsEngine, clock: Any
) -> None:
    key = engine.create_key(origin="EXTERNAL").key_id
    material = os.urandom(32)
    now = int(clock())
    for expire in (now, now - 1, -1):
        err = _error(lambda: _import(engine, key, material, key_material_expire_unix=expire))
        assert err.code == "InvalidParameter"
    with pytest.raises(TypeError):
        engine.import_key_material(key, b"x", "t", key_material_expire_unix=True)
    _import(engine, key, material, key_material_expire_unix=now + HOUR)
    blob = engine.encrypt(key, b"before", CTX).ciphertext_blob
    clock.advance(HOUR - 1)
    assert engine.decrypt(blob, CTX).plaintext == b"before"
    clock.advance(1)
    meta = engine.describe_key(key)
    assert (meta.key_state, meta.material_expire_time) == ("PendingImport", "")
    for call in (lambda: engine.decrypt(blob, CTX), lambda: engine.encrypt(key, b"x")):
        assert _error(call, KeyDisabledError).code == "Rejected.PendingImport"
    assert _error(lambda: _import(engine, key, os.urandom(32))).code == "InvalidParameter"
    _import(engine, key, material)
    assert engine.describe_key(key).key_state == "Enabled"
    assert engine.decrypt(blob, CTX).plaintext == b"before"
    engine.delete_key_material(key)
    assert engine.describe_key(key).key_state == "PendingImport"
    err = _error(lambda: engine.decrypt(blob, CTX), KeyDisabledError)
    assert err.code == "Rejected.PendingImport"
    _import(engine, key, material, "RSAES_OAEP_SHA_1")
    assert engine.decrypt(blob, CTX).plaintext == b"before"


def test_only_external_keys_import(engine: KmsEngine) -> None:
    key = engine.create_key().key_id
    external = engine.create_key(origin="EXTERNAL").key_id
    params = engine.get_parameters_for_import(external, "RSAES_OAEP_SHA_256", "RSA_2048")
    ciphertext = wrap(params, os.urandom(32), "RSAES_OAEP_SHA_256")
    for call in (
        lambda: engine.get_parameters_for_import(key, "RSAES_OAEP_SHA_256", "RSA_2048"),
        lambda: engine.import_key_material(key, ciphertext, params.import_token),
        lambda: engine.delete_key_material(key),
    ):
        assert _error(call).code == "UnsupportedOperation"
    for alg, spec in [
        ("RSAES_OAEP_SHA_256", "RSA_3072"),
        ("SM2PKE", "EC_SM2"),
        ("rsaes_oaep_sha_256", "RSA_2048"),
        ("RSAES_OAEP_SHA_512", "RSA_2048"),
    ]:
        assert _error(lambda: engine.get_parameters_for_import(external, alg, spec)).code == (
            "InvalidParameter"
        )
    with pytest.raises(TypeError):
        text: Any = "base64 text"
        engine.import_key_material(external, text, params.import_token)
    assert engine.update_rotation_policy(external, False).automatic_rotation == "Disabled"
    err = _error(lambda: engine.update_rotation_policy(external, True, "30d"))
    assert err.code == "UnsupportedOperation"


def test_pending_deletion_blocks_import_and_cancel_keeps_pending_import(engine: KmsEngine) -> None:
    key = engine.create_key(origin="EXTERNAL").key_id
    params = engine.get_parameters_for_import(key, "RSAES_OAEP_SHA_256", "RSA_2048")
    assert engine.schedule_key_deletion(key, 7).key_state == "PendingDeletion"
    ciphertext = wrap(params, os.urandom(32), "RSAES_OAEP_SHA_256")
    for call in (
        lambda: engine.get_parameters_for_import(key, "RSAES_OAEP_SHA_256", "RSA_2048"),
        lambda: engine.import_key_material(key, ciphertext, params.import_token),
    ):
        assert _error(call, KeyDisabledError).code == "Rejected.PendingDeletion"
    assert engine.cancel_key_deletion(key).key_state == "PendingImport"
    engine.import_key_material(key, ciphertext, params.import_token)
    assert engine.describe_key(key).key_state == "Enabled"
