"""The wrapped keys of kind 0x02 (Alibaba Cloud KMS protocol: the emulator, Alibaba Cloud KMS).

::

    wrapped key = KIND_ALIBABA_KMS (0x02) || CiphertextBlob, base64-decoded (raw bytes)

The blob has the engine's layout (``docs/FORMAT.md``, ``kmsbeam.kms``): a 36-byte key version
id, IV, AES-GCM ciphertext of the base64 text of the DEK, tag; 108 bytes for a 32-byte DEK.
Decrypt needs no key id: the blob names its key version, which ``wrapped_key_version`` reads
without a call (rotation's version names). The KMS answers with the blob as base64 text; only
its canonical spelling is accepted, so a wrapped key has one byte form.
"""

from __future__ import annotations

import base64
import binascii

from kmsbeam.errors import AuthenticationError
from kmsbeam.keys.source import KIND_ALIBABA_KMS
from kmsbeam.kms import wrapped_blob_version

__all__ = ["blob_of", "invalid", "wrapped_from_text", "wrapped_key_version"]


def invalid() -> AuthenticationError:
    """The one error for a wrapped key that cannot be unwrapped (no detail)."""
    return AuthenticationError(code="InvalidCiphertext")


def wrapped_key_version(wrapped: bytes) -> str:
    """The key version id a wrapped key of kind 0x02 names (the blob's first 36 bytes).

    Raises:
        MalformedValueError: not a wrapped key of kind 0x02, or too short to name a version.
    """
    return wrapped_blob_version(wrapped, KIND_ALIBABA_KMS)


def blob_of(wrapped: bytes) -> bytes:
    """The CiphertextBlob of a wrapped key (what Decrypt and ReEncrypt send, base64-encoded).

    Raises:
        TypeError: not bytes. AuthenticationError: not a wrapped key of kind 0x02.
    """
    if not isinstance(wrapped, (bytes, bytearray, memoryview)):
        raise TypeError("a wrapped key is bytes")
    data = bytes(wrapped)
    if len(data) < 2 or data[0] != KIND_ALIBABA_KMS:
        raise invalid()
    return data[1:]


def wrapped_from_text(text: str) -> bytes | None:
    """The wrapped key of a CiphertextBlob as the KMS answers it (base64 text); ``None``
    unless the text is non-empty canonical base64."""
    try:
        blob = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None
    if not blob or base64.b64encode(blob).decode("ascii") != text:
        return None
    return bytes([KIND_ALIBABA_KMS]) + blob
