"""The wrapped keys of kind 0x04 (Alibaba Cloud KMS instance gateway, KMS 3.0).

::

    wrapped key = KIND_ALIBABA_KMS_INSTANCE (0x04) || 0x01 (layout version)
                  || n (1 byte, 1..255) || KeyVersionId (n bytes of ASCII)
                  || CiphertextBlob (the rest, 1 byte or more: raw bytes as the gateway sent them)

The CiphertextBlob is what ``AdvanceGenerateDataKey`` / ``AdvanceEncrypt`` returned; it names
its key, version, algorithm and IV itself, so ``AdvanceDecrypt`` needs only it and the AAD
(the canonical encryption context, ``kmsbeam.keys.source.canonical_context``). The blob's
inside is the instance's own and kmsbeam never reads it; the KeyVersionId beside it is the
gateway's answer, kept so rotation can name a wrapped key's version without a call. It is a
hint only: unwrapping never trusts it (the gateway decrypts by the blob).
"""

from __future__ import annotations

import re

from kmsbeam.errors import AuthenticationError, MalformedValueError
from kmsbeam.keys.source import KIND_ALIBABA_KMS_INSTANCE

__all__ = ["LAYOUT_VERSION", "instance_blob", "instance_wrapped", "instance_wrapped_key_version"]

LAYOUT_VERSION = 0x01
_VERSION_ID = re.compile(rb"^[A-Za-z0-9][A-Za-z0-9_.:/\-]{0,254}$")


def instance_wrapped(key_version_id: str, blob: bytes) -> bytes | None:
    """The wrapped key of a gateway answer; ``None`` if the answer cannot make one."""
    version = key_version_id.encode("ascii", "replace")
    if not _VERSION_ID.match(version) or not blob:
        return None
    return bytes([KIND_ALIBABA_KMS_INSTANCE, LAYOUT_VERSION, len(version)]) + version + bytes(blob)


def _split(wrapped: bytes) -> tuple[str, bytes] | None:
    data = bytes(wrapped)
    if len(data) < 5 or data[0] != KIND_ALIBABA_KMS_INSTANCE or data[1] != LAYOUT_VERSION:
        return None
    n = data[2]
    version, blob = data[3 : 3 + n], data[3 + n :]
    if n == 0 or len(version) != n or not blob or not _VERSION_ID.match(version):
        return None
    return version.decode("ascii"), blob


def instance_wrapped_key_version(wrapped: bytes) -> str:
    """The KeyVersionId a wrapped key of kind 0x04 carries; no call.

    Raises:
        MalformedValueError: not a wrapped key of kind 0x04 in layout 1.
    """
    if not isinstance(wrapped, (bytes, bytearray, memoryview)):
        raise MalformedValueError()
    parts = _split(bytes(wrapped))
    if parts is None:
        raise MalformedValueError()
    return parts[0]


def instance_blob(wrapped: bytes) -> bytes:
    """The CiphertextBlob of a wrapped key of kind 0x04 (what AdvanceDecrypt sends).

    Raises:
        TypeError: not bytes. AuthenticationError: not a wrapped key of kind 0x04.
    """
    if not isinstance(wrapped, (bytes, bytearray, memoryview)):
        raise TypeError("a wrapped key is bytes")
    parts = _split(bytes(wrapped))
    if parts is None:
        raise AuthenticationError(code="InvalidCiphertext")
    return parts[1]
