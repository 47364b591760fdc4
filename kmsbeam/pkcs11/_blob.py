"""The PKCS#11 wrapped-key blob, layout v1, and the derivations that bind it to its context.

A wrapped key of this source is ``KIND_PKCS11 (0x03) || blob``::

    offset  size  field
    0       1     layout version, 0x01
    1       1     mechanism, 0x01: CKM_AES_KEY_WRAP (RFC 3394, default IV A6A6A6A6A6A6A6A6)
    2       1     t, length of the token label (1..32)
    3       t     token label, UTF-8 (CK_TOKEN_INFO.label, trailing spaces removed)
    3+t     1     l, length of the KEK label (0..255; 0: the KEK has no label)
    4+t     l     KEK label, UTF-8 (CKA_LABEL)
    4+t+l   1     i, length of the KEK id (0..255; 0: the KEK has no id)
    5+t+l   i     KEK id (CKA_ID)
    5+t+l+i 1     w, length of the wrapped seed (40 for the 32-byte seed)
    6+t+l+i w     RFC 3394 key wrap of the seed S under the KEK
    6+..+w  16    context tag T
    (nothing may follow)

The seed ``S`` is a 32-byte CKK_GENERIC_SECRET made by the HSM; it is never in host memory
unwrapped (the HSM computes both derivations below with CKM_SHA256_HMAC). With
``HKDF-Expand`` of RFC 5869 (SHA-256, ``S`` as the pseudorandom key)::

    DEK = HKDF-Expand(S, b"kmsbeam.pkcs11.v1/data-key", 32)
        = HMAC-SHA256(S, b"kmsbeam.pkcs11.v1/data-key" || 0x01)
    T   = HKDF-Expand(S, b"kmsbeam.pkcs11.v1/context/" || C, 16)
        = HMAC-SHA256(S, b"kmsbeam.pkcs11.v1/context/" || C || 0x01)[:16]

where ``C = kmsbeam.keys.source.canonical_context(context)`` (sorted-key compact UTF-8 JSON,
``{}`` when empty). Unwrapping checks ``T`` before deriving the DEK: the wrong context is
an ``AuthenticationError`` at ``decrypt_data_key``, not later. The DEK does not depend on
the context, so a rewrap may change the context (a new ``T``) while data stays readable.

Header integrity: the token, KEK label/id and mechanism are not covered by ``T``; they only
select the unwrapping key, and any change selects a key (or mechanism) under which RFC 3394's
integrity check fails. The envelope's AAD covers the whole wrapped key in every value.

The *version name* of a wrapped key (rotation's "already under the target" check) is its KEK:
``TOKEN/KEK-LABEL/KEK-ID-HEX`` (``wrapped_key_version``, ``version_name``, ``Blob.version``).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from kmsbeam.errors import MalformedValueError
from kmsbeam.keys.source import KIND_PKCS11

__all__ = [
    "DEK_INFO",
    "MECH_AES_KEY_WRAP",
    "SEED_BYTES",
    "TAG_BYTES",
    "VERSION",
    "Blob",
    "BlobError",
    "context_message",
    "dek_message",
    "derive_on_host",
    "version_name",
    "wrapped_key_version",
]

VERSION = 0x01
MECH_AES_KEY_WRAP = 0x01
SEED_BYTES = 32
TAG_BYTES = 16
DEK_INFO = b"kmsbeam.pkcs11.v1/data-key"
CONTEXT_INFO = b"kmsbeam.pkcs11.v1/context/"


class BlobError(ValueError):
    """The bytes are not a v1 blob (callers turn this into the opaque AuthenticationError)."""


def dek_message() -> bytes:
    """The HMAC input whose output is the DEK (HKDF-Expand, one block)."""
    return DEK_INFO + b"\x01"


def context_message(canonical_context: bytes) -> bytes:
    """The HMAC input whose first 16 output bytes are the context tag."""
    return CONTEXT_INFO + canonical_context + b"\x01"


def derive_on_host(seed: bytes, canonical_context: bytes) -> tuple[bytes, bytes]:
    """``(DEK, tag)`` from a seed in host memory (test vectors, cross-token copies only)."""
    dek = hmac.new(seed, dek_message(), hashlib.sha256).digest()
    tag = hmac.new(seed, context_message(canonical_context), hashlib.sha256).digest()
    return dek, tag[:TAG_BYTES]


def version_name(token: str, kek_label: str, kek_id: bytes) -> str:
    """The version name of a KEK: ``TOKEN/KEK-LABEL/KEK-ID-HEX``."""
    return f"{token}/{kek_label}/{kek_id.hex()}"


def wrapped_key_version(wrapped: bytes) -> str:
    """The version name of the KEK a wrapped key (``KIND_PKCS11 || blob``) names, read from the
    blob without the HSM.

    Raises:
        MalformedValueError: not a wrapped key of kind 0x03, or not a v1 blob.
    """
    if bytes(wrapped[:1]) != bytes((KIND_PKCS11,)):
        raise MalformedValueError()
    try:
        return Blob.decode(bytes(wrapped[1:])).version
    except BlobError:
        raise MalformedValueError() from None


@dataclass(frozen=True)
class Blob:
    """A parsed v1 blob (no kind byte)."""

    token: str
    kek_label: str
    kek_id: bytes
    wrapped_seed: bytes
    tag: bytes
    mechanism: int = MECH_AES_KEY_WRAP

    @property
    def version(self) -> str:
        """The version name of the KEK that wrapped this blob (``version_name``)."""
        return version_name(self.token, self.kek_label, self.kek_id)

    def encode(self) -> bytes:
        token = self.token.encode("utf-8")
        label = self.kek_label.encode("utf-8")
        if not 1 <= len(token) <= 32 or len(label) > 255 or len(self.kek_id) > 255:
            raise ValueError("token label 1..32 bytes, KEK label and id up to 255 bytes")
        if len(self.wrapped_seed) > 255 or len(self.tag) != TAG_BYTES:
            raise ValueError("wrapped seed up to 255 bytes and a 16-byte tag")
        return b"".join(
            (
                bytes((VERSION, self.mechanism, len(token))),
                token,
                bytes((len(label),)),
                label,
                bytes((len(self.kek_id),)),
                self.kek_id,
                bytes((len(self.wrapped_seed),)),
                self.wrapped_seed,
                self.tag,
            )
        )

    @classmethod
    def decode(cls, data: bytes) -> Blob:
        """Parse a blob; any deviation from the layout is a ``BlobError``."""
        if len(data) < 3 or data[0] != VERSION or data[1] != MECH_AES_KEY_WRAP:
            raise BlobError("not a v1 blob")
        pos = 2
        fields: list[bytes] = []
        for minimum in (1, 0, 0, 16):  # token, KEK label, KEK id, wrapped seed
            if pos >= len(data):
                raise BlobError("truncated")
            n = data[pos]
            if n < minimum or pos + 1 + n > len(data):
                raise BlobError("bad length")
            fields.append(data[pos + 1 : pos + 1 + n])
            pos += 1 + n
        token, label, kek_id, wrapped = fields
        if len(wrapped) % 8 or len(data) - pos != TAG_BYTES or len(token) > 32:
            raise BlobError("bad length")
        try:
            return cls(token.decode("utf-8"), label.decode("utf-8"), kek_id, wrapped, data[pos:])
        except UnicodeDecodeError:
            raise BlobError("bad label") from None
