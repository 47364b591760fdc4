"""The crypto and key-import actions: Encrypt, Decrypt, ReEncrypt, GenerateDataKey(...),
GetParametersForImport and ImportKeyMaterial.

Text conventions are Alibaba's: ``Plaintext`` of Encrypt is encrypted as its UTF-8 bytes and
Decrypt returns those bytes as text; a data key's ``Plaintext`` is its base64 (and the blob
holds that base64 text, so Decrypt of a data key's blob returns the same string). Blobs and
imported key material travel as base64. ``DryRun=true`` runs the whole call (crypto calls
change nothing) and then answers ``DryRunOperationError`` instead of the result.

Caveats: Decrypt authorizes the key that the blob names; a blob naming no key version of
this keystore is ``InvalidCiphertext`` for every caller, as is a wrong encryption context.
ReEncrypt needs ``kms:ReEncrypt`` on both the source key (from the blob) and the destination.
"""

from __future__ import annotations

import base64
from typing import Any

from kmsbeam.emulator._call import Call
from kmsbeam.emulator._errors import ApiError
from kmsbeam.emulator._params import invalid

__all__ = ["CRYPTO"]

_CONTEXT = "EncryptionContext"
_SIZES = {"AES_256": 32, "AES_128": 16}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _finish(call: Call, response: dict[str, Any]) -> dict[str, Any]:
    if call.params.boolean("DryRun"):
        raise ApiError(
            "DryRunOperationError", "the request would have succeeded, but DryRun is set"
        )
    return response


def _key(call: Call) -> str:
    """The request's ``KeyId``, which the caller must be allowed to use."""
    key = call.params.required("KeyId")
    call.allow_key(key)
    return key


def _sealed(call: Call, result: Any, **more: str) -> dict[str, Any]:
    """The answer of a call that made a blob (audited under its key version)."""
    call.note(result.key_id, result.key_version_id)
    return _finish(call, {"KeyId": result.key_id, "KeyVersionId": result.key_version_id,
                          "CiphertextBlob": _b64(result.ciphertext_blob), **more})  # fmt: skip


def _no_recipient(call: Call) -> None:
    if call.params.text("Recipient"):
        raise invalid("Recipient (enclave attestation) is not supported by the kmsbeam emulator")


def encrypt(call: Call) -> dict[str, Any]:
    plaintext = call.params.required("Plaintext").encode("utf-8")
    context = call.params.context(_CONTEXT)
    key = _key(call)
    return _sealed(call, call.engine.encrypt(key, plaintext, context))


def _data_key_size(call: Call) -> int:
    size = call.params.integer("NumberOfBytes", 1, 1024)
    spec = call.params.choice("KeySpec", _SIZES)
    return size or _SIZES[spec or "AES_256"]


def generate_data_key(call: Call) -> dict[str, Any]:
    _no_recipient(call)
    size, context = _data_key_size(call), call.params.context(_CONTEXT)
    key = _key(call)
    result = call.engine.generate_data_key(key, size, context)
    return _sealed(call, result, Plaintext=_b64(result.plaintext))


def generate_data_key_without_plaintext(call: Call) -> dict[str, Any]:
    size, context = _data_key_size(call), call.params.context(_CONTEXT)
    key = _key(call)
    return _sealed(call, call.engine.generate_data_key_without_plaintext(key, size, context))


def decrypt(call: Call) -> dict[str, Any]:
    _no_recipient(call)
    blob, context = call.params.blob(), call.params.context(_CONTEXT)
    call.allow_blob(blob)
    result = call.engine.decrypt(blob, context)
    call.note(result.key_id, result.key_version_id)
    try:
        text = result.plaintext.decode("utf-8")
    except UnicodeDecodeError:
        raise invalid("the plaintext is binary (not written through this API) and has no "
                      "text form; decrypt it with the local: key source") from None  # fmt: skip
    return _finish(call, {"KeyId": result.key_id, "KeyVersionId": result.key_version_id,
                          "Plaintext": text})  # fmt: skip


def re_encrypt(call: Call) -> dict[str, Any]:
    p = call.params
    for name in ("SourceEncryptionAlgorithm", "SourceKeyId", "SourceKeyVersionId"):
        if p.text(name):
            raise invalid(f"{name} (asymmetric ciphertext) is not supported by the emulator")
    blob = p.blob()
    source, destination = p.context("SourceEncryptionContext"), p.context(
        "DestinationEncryptionContext"
    )
    key = p.required("DestinationKeyId")
    call.allow_blob(blob)
    call.allow_key(key)
    return _sealed(call, call.engine.re_encrypt(blob, key, source, destination))


def get_parameters_for_import(call: Call) -> dict[str, Any]:
    algorithm = call.params.required("WrappingAlgorithm")
    spec = call.params.required("WrappingKeySpec")
    key = _key(call)
    result = call.engine.get_parameters_for_import(key, algorithm, spec)
    call.note(result.key_id)
    public_key = result.public_key
    return {
        "KeyId": result.key_id,
        "ImportToken": result.import_token,
        "PublicKey": _b64(public_key) if isinstance(public_key, bytes) else public_key,
        "TokenExpireTime": result.token_expire_time,
    }


def import_key_material(call: Call) -> dict[str, Any]:
    material = call.params.base64("EncryptedKeyMaterial")
    token = call.params.required("ImportToken")
    expire = call.params.integer("KeyMaterialExpireUnix", 0, 2**63 - 1) or 0
    key = _key(call)
    call.engine.import_key_material(key, material, token, expire)
    return {}


_CRYPTO_OPTIONAL = "EncryptionContext DryRun"
CRYPTO = {
    "Encrypt": (encrypt, "KeyId Plaintext", _CRYPTO_OPTIONAL),
    "GenerateDataKey": (generate_data_key, "KeyId",
                        f"{_CRYPTO_OPTIONAL} KeySpec NumberOfBytes Recipient"),  # fmt: skip
    "GenerateDataKeyWithoutPlaintext": (generate_data_key_without_plaintext, "KeyId",
                                        f"{_CRYPTO_OPTIONAL} KeySpec NumberOfBytes"),  # fmt: skip
    "Decrypt": (decrypt, "CiphertextBlob", f"{_CRYPTO_OPTIONAL} Recipient"),
    "ReEncrypt": (re_encrypt, "CiphertextBlob DestinationKeyId",
                  "SourceEncryptionContext DestinationEncryptionContext DryRun "
                  "SourceEncryptionAlgorithm SourceKeyId SourceKeyVersionId"),  # fmt: skip
    "GetParametersForImport": (get_parameters_for_import,
                               "KeyId WrappingAlgorithm WrappingKeySpec", ""),  # fmt: skip
    "ImportKeyMaterial": (import_key_material, "KeyId EncryptedKeyMaterial ImportToken",
                          "KeyMaterialExpireUnix"),  # fmt: skip
}
