"""Crypto and key import through the official SDK: data keys, Encrypt/Decrypt, ReEncrypt,
BYOK, and every way a ciphertext or key can be refused."""

from __future__ import annotations

import base64
import os
import uuid

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding

from tests.emulator.conftest import sdk_error

CTX = {"table": "customers", "column": "ssn"}


def test_generate_data_key_and_decrypt(admin: Client, key_id: str) -> None:
    body = admin.generate_data_key(models.GenerateDataKeyRequest(
        key_id=key_id, encryption_context=CTX)).body  # fmt: skip
    assert body.key_id == key_id and body.key_version_id and body.request_id
    assert len(base64.b64decode(body.plaintext)) == 32 and len(body.ciphertext_blob) == 144
    out = admin.decrypt(models.DecryptRequest(ciphertext_blob=body.ciphertext_blob,
                                              encryption_context=dict(reversed(CTX.items())))).body  # fmt: skip
    assert (out.plaintext, out.key_id, out.key_version_id) == (body.plaintext, key_id, body.key_version_id)


def test_data_key_sizes(admin: Client, key_id: str) -> None:
    def size(**kw: object) -> int:
        body = admin.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id, **kw)).body
        return len(base64.b64decode(body.plaintext))

    assert (size(), size(key_spec="AES_128"), size(number_of_bytes=64)) == (32, 16, 64)
    assert size(key_spec="AES_128", number_of_bytes=24) == 24  # NumberOfBytes wins
    for bad in ({"number_of_bytes": 0}, {"number_of_bytes": 1025}, {"key_spec": "AES_512"}):
        err = sdk_error(lambda b=bad: size(**b))
        assert (err.code, err.status_code) == ("InvalidParameter", 400)


def test_generate_data_key_without_plaintext(admin: Client, key_id: str) -> None:
    body = admin.generate_data_key_without_plaintext(models.GenerateDataKeyWithoutPlaintextRequest(
        key_id=key_id, number_of_bytes=16, encryption_context=CTX)).body  # fmt: skip
    assert body.key_id == key_id and not hasattr(body, "plaintext")
    out = admin.decrypt(models.DecryptRequest(ciphertext_blob=body.ciphertext_blob, encryption_context=CTX))
    assert len(base64.b64decode(out.body.plaintext)) == 16


def test_encrypt_decrypt_text(admin: Client, key_id: str) -> None:
    text = "héllo wörld ✓"
    blob = admin.encrypt(models.EncryptRequest(key_id=key_id, plaintext=text)).body.ciphertext_blob
    assert admin.decrypt(models.DecryptRequest(ciphertext_blob=blob)).body.plaintext == text
    err = sdk_error(lambda: admin.encrypt(models.EncryptRequest(key_id=key_id, plaintext="x" * 6145)))
    assert err.code == "InvalidParameter"


def test_re_encrypt_moves_a_blob_to_another_key(admin: Client, key_id: str) -> None:
    other = admin.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    dk = admin.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id, encryption_context=CTX)).body
    moved = admin.re_encrypt(models.ReEncryptRequest(
        ciphertext_blob=dk.ciphertext_blob, destination_key_id=other,
        source_encryption_context=CTX, destination_encryption_context={"v": "2"})).body  # fmt: skip
    assert moved.key_id == other and moved.ciphertext_blob != dk.ciphertext_blob
    out = admin.decrypt(models.DecryptRequest(ciphertext_blob=moved.ciphertext_blob,
                                              encryption_context={"v": "2"})).body  # fmt: skip
    assert (out.key_id, out.plaintext) == (other, dk.plaintext)
    err = sdk_error(lambda: admin.re_encrypt(models.ReEncryptRequest(
        ciphertext_blob=dk.ciphertext_blob, destination_key_id=other)))  # fmt: skip
    assert (err.code, err.status_code) == ("InvalidCiphertext", 400)


def _flip(blob: str, index: int) -> str:
    raw = bytearray(base64.b64decode(blob))
    raw[index] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_malformed_blob_and_wrong_context_look_alike(admin: Client, key_id: str) -> None:
    blob = admin.encrypt(models.EncryptRequest(key_id=key_id, plaintext="secret", encryption_context=CTX)).body.ciphertext_blob
    bad_blobs = ["not base64!", base64.b64encode(b"short").decode(), _flip(blob, 0), _flip(blob, 40),
                 _flip(blob, 60), blob[:-4], base64.b64encode(os.urandom(100)).decode()]  # fmt: skip
    messages = set()
    for bad in bad_blobs:
        err = sdk_error(lambda b=bad: admin.decrypt(models.DecryptRequest(ciphertext_blob=b, encryption_context=CTX)))
        assert (err.code, err.status_code) == ("InvalidCiphertext", 400), bad
        messages.add(err.data["Message"])
    for ctx in (None, {"table": "customers"}, {**CTX, "extra": "1"}, {"table": "customers", "column": "SSN"}):
        err = sdk_error(lambda c=ctx: admin.decrypt(models.DecryptRequest(ciphertext_blob=blob, encryption_context=c)))
        assert (err.code, err.status_code) == ("InvalidCiphertext", 400), ctx
        messages.add(err.data["Message"])
    assert len(messages) == 1 and "secret" not in messages.pop()


def test_disabled_pending_and_unknown_keys_are_refused(admin: Client, key_id: str) -> None:
    blob = admin.encrypt(models.EncryptRequest(key_id=key_id, plaintext="x")).body.ciphertext_blob
    admin.disable_key(models.DisableKeyRequest(key_id=key_id))
    for call in (lambda: admin.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id)),
                 lambda: admin.decrypt(models.DecryptRequest(ciphertext_blob=blob))):  # fmt: skip
        err = sdk_error(call)
        assert (err.code, err.status_code) == ("Rejected.Disabled", 409)
    admin.enable_key(models.EnableKeyRequest(key_id=key_id))
    admin.schedule_key_deletion(models.ScheduleKeyDeletionRequest(key_id=key_id, pending_window_in_days=7))
    err = sdk_error(lambda: admin.encrypt(models.EncryptRequest(key_id=key_id, plaintext="x")))
    assert (err.code, err.status_code) == ("Rejected.PendingDeletion", 409)
    err = sdk_error(lambda: admin.generate_data_key(models.GenerateDataKeyRequest(key_id=str(uuid.uuid4()))))
    assert (err.code, err.status_code) == ("Forbidden.KeyNotFound", 404)
    err = sdk_error(lambda: admin.generate_data_key(models.GenerateDataKeyRequest(key_id="alias/missing")))
    assert (err.code, err.status_code) == ("Forbidden.AliasNotFound", 404)


def test_dry_run(admin: Client, key_id: str) -> None:
    err = sdk_error(lambda: admin.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id, dry_run="true")))
    assert (err.code, err.status_code) == ("DryRunOperationError", 400)
    admin.disable_key(models.DisableKeyRequest(key_id=key_id))
    err = sdk_error(lambda: admin.encrypt(models.EncryptRequest(key_id=key_id, plaintext="x", dry_run="true")))
    assert err.code == "Rejected.Disabled"


@pytest.mark.parametrize("algorithm", ["RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", "RSAES_PKCS1_V1_5"])
def test_bring_your_own_key(admin: Client, algorithm: str) -> None:
    meta = admin.create_key(models.CreateKeyRequest(origin="EXTERNAL")).body.key_metadata
    assert (meta.origin, meta.key_state) == ("EXTERNAL", "PendingImport")
    err = sdk_error(lambda: admin.generate_data_key(models.GenerateDataKeyRequest(key_id=meta.key_id)))
    assert (err.code, err.status_code) == ("Rejected.PendingImport", 409)
    params = admin.get_parameters_for_import(models.GetParametersForImportRequest(
        key_id=meta.key_id, wrapping_algorithm=algorithm, wrapping_key_spec="RSA_2048")).body  # fmt: skip
    assert params.key_id == meta.key_id and params.token_expire_time and params.import_token
    public = serialization.load_der_public_key(base64.b64decode(params.public_key))
    pad = padding.PKCS1v15() if algorithm.endswith("V1_5") else padding.OAEP(
        mgf=padding.MGF1(hashes.SHA256() if algorithm.endswith("256") else hashes.SHA1()),
        algorithm=hashes.SHA256() if algorithm.endswith("256") else hashes.SHA1(), label=None)  # fmt: skip
    wrapped = public.encrypt(os.urandom(32), pad)  # type: ignore[union-attr]
    err = sdk_error(lambda: admin.import_key_material(models.ImportKeyMaterialRequest(
        key_id=meta.key_id, encrypted_key_material=base64.b64encode(wrapped).decode(),
        import_token="wrong-token")))  # fmt: skip
    assert err.code == "InvalidParameter"
    admin.import_key_material(models.ImportKeyMaterialRequest(
        key_id=meta.key_id, encrypted_key_material=base64.b64encode(wrapped).decode(),
        import_token=params.import_token))  # fmt: skip
    described = admin.describe_key(models.DescribeKeyRequest(key_id=meta.key_id)).body.key_metadata
    assert described.key_state == "Enabled"
    dk = admin.generate_data_key(models.GenerateDataKeyRequest(key_id=meta.key_id)).body
    assert admin.decrypt(models.DecryptRequest(ciphertext_blob=dk.ciphertext_blob)).body.plaintext == dk.plaintext


def test_import_needs_an_external_key(admin: Client, key_id: str) -> None:
    err = sdk_error(lambda: admin.get_parameters_for_import(models.GetParametersForImportRequest(
        key_id=key_id, wrapping_algorithm="RSAES_OAEP_SHA_256", wrapping_key_spec="RSA_2048")))  # fmt: skip
    assert (err.code, err.status_code) == ("UnsupportedOperation", 400)
    err = sdk_error(lambda: admin.import_key_material(models.ImportKeyMaterialRequest(
        key_id=key_id, encrypted_key_material="%%%", import_token="t")))  # fmt: skip
    assert err.code == "InvalidParameter"
