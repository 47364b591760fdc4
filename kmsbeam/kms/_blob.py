"""The CiphertextBlob layout of the KMS engine (the same as Alibaba Cloud KMS's, raw bytes).

::

    blob = key_version_id (36 ASCII bytes) || iv (12) || AES-256-GCM ciphertext || tag (16)
    AAD  = key_version_id (36 ASCII bytes) || canonical_context(encryption context)

Every failure to open a blob raises the same ``AuthenticationError`` (code ``InvalidCiphertext``)
so that a failure never says which part was wrong. ``key_version`` names a blob's version for
the key sources of kinds 0x01 (``local:``) and 0x02 (emulator, Alibaba Cloud KMS), whose
wrapped keys are ``kind || blob`` (``wrapped_version``) and whose Decrypt answers carry the
data key as base64 text (``data_key``).
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.errors import AuthenticationError, MalformedValueError

__all__ = [
    "IV_LEN",
    "MIN_BLOB_LEN",
    "TAG_LEN",
    "VERSION_ID_LEN",
    "data_key",
    "invalid_ciphertext",
    "key_version",
    "open_blob",
    "seal",
    "split",
    "wrapped_version",
]

VERSION_ID_LEN = 36
IV_LEN = 12
TAG_LEN = 16
MIN_BLOB_LEN = VERSION_ID_LEN + IV_LEN + TAG_LEN


def invalid_ciphertext() -> AuthenticationError:
    """The one error for a blob that does not open (fixed message, no detail)."""
    return AuthenticationError(code="InvalidCiphertext")


def _version_bytes(key_version_id: str) -> bytes:
    raw = key_version_id.encode("ascii")
    if len(raw) != VERSION_ID_LEN:
        raise ValueError("a key version id is exactly 36 ASCII characters")
    return raw


def seal(
    key_version_id: str, material: bytes, iv: bytes, plaintext: bytes, context: bytes
) -> bytes:
    """Encrypt ``plaintext`` under one key version; ``context`` is the canonical context."""
    if len(iv) != IV_LEN:
        raise ValueError("the IV is 12 bytes")
    vid = _version_bytes(key_version_id)
    return vid + iv + AESGCM(material).encrypt(iv, plaintext, vid + context)


def split(blob: bytes) -> str:
    """The key version id a blob names (not yet authenticated).

    Raises:
        AuthenticationError: the blob is too short or its version id is not ASCII.
    """
    if len(blob) < MIN_BLOB_LEN:
        raise invalid_ciphertext()
    try:
        return blob[:VERSION_ID_LEN].decode("ascii")
    except UnicodeDecodeError:
        raise invalid_ciphertext() from None


def key_version(blob: bytes) -> str:
    """The key version id a blob names, read without opening it (rotation's version names).

    Raises:
        MalformedValueError: no more than the 36 bytes of a version id, or not ASCII.
    """
    if len(blob) <= VERSION_ID_LEN or not blob[:VERSION_ID_LEN].isascii():
        raise MalformedValueError()
    return blob[:VERSION_ID_LEN].decode("ascii")


def open_blob(blob: bytes, material: bytes, context: bytes) -> bytes:
    """Authenticate and decrypt a blob with its version's material (see ``split``)."""
    if len(blob) < MIN_BLOB_LEN:
        raise invalid_ciphertext()
    vid = blob[:VERSION_ID_LEN]
    iv = blob[VERSION_ID_LEN : VERSION_ID_LEN + IV_LEN]
    try:
        return AESGCM(material).decrypt(iv, blob[VERSION_ID_LEN + IV_LEN :], vid + context)
    except InvalidTag:
        raise invalid_ciphertext() from None


def wrapped_version(wrapped: bytes, kind: int) -> str:
    """The key version id a wrapped key (``kind`` byte || blob of this layout) names, read
    without a call.

    Raises:
        MalformedValueError: not a wrapped key of ``kind``, or too short to name a version.
    """
    if bytes(wrapped[:1]) != bytes((kind,)):
        raise MalformedValueError()
    return key_version(bytes(wrapped[1:]))


def data_key(plaintext: str | bytes) -> bytes:
    """The data key of a Decrypt answer (the base64 text of a 16-, 24- or 32-byte key).

    Raises:
        AuthenticationError: anything else (``InvalidCiphertext``: a blob of Encrypt, not of
            a data key).
    """
    try:
        dek = base64.b64decode(plaintext, validate=True)
    except (binascii.Error, ValueError):
        raise invalid_ciphertext() from None
    if len(dek) not in (16, 24, 32):
        raise invalid_ciphertext()
    return dek
