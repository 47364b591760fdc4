"""PME key text v1: how kmsbeam's ``KmsClient`` wraps a Parquet key under a key URI.

Parquet Modular Encryption hands its ``KmsClient`` a key (a KEK with double wrapping, else a
column or footer DEK) and a *master key id*, and stores the returned text in the file's key
material. kmsbeam wraps the key locally with a data key from the key source:

::

    key text = text form (URL-safe base64, no padding) of:

    offset      size   field
    0           1      version 0x01
    1           2      U, length of the key URI
    3           U      the writer's key URI, UTF-8 (a hint: readers choose their own URIs)
    3+U         2      L, length of the wrapped data key
    5+U         L      wrapped data key W (kind || blob, as in field values)
    5+U+L       12     nonce, random
    17+U+L      n+16   AES-256-GCM(DEK, nonce, PME key, AAD), tag last

    AAD = "kmsbeam.pme-key.v1" || len(id) (2 bytes) || id || U (2 bytes) || key URI
    id  = the master key id: "kmsbeam-" + first 16 hex digits of SHA-256(key URI, UTF-8)

Master key ids never contain ``:``, ``;``, ``,`` or spaces, which PME's ``"id: col; id2:
col"`` serialization cannot carry; key URIs do, hence the hashed id. A reader maps ids to key
URIs by hashing the URIs it trusts (``master_key_id``); the URI in the text only says which
one to bring. One data key may wrap many PME keys (random nonces, see ``_client``).
"""

from __future__ import annotations

import hashlib
import os
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.formats.envelope import from_text, to_text
from kmsbeam.errors import AuthenticationError, MalformedValueError
from kmsbeam.formats.values import wrapped_version

__all__ = ["KEY_TEXT_V1", "KeyText", "master_key_id", "parse_key_text", "seal_key_text"]

KEY_TEXT_V1 = 0x01
LABEL = b"kmsbeam.pme-key.v1"
ID_PREFIX = "kmsbeam-"
_U16 = struct.Struct(">H")
_NONCE = 12
_TAG = 16


def master_key_id(uri: str) -> str:
    """The PME master key id of a key URI: ``kmsbeam-`` + 16 hex digits of its SHA-256."""
    if not isinstance(uri, str) or not uri:
        raise TypeError("a key URI is a non-empty str")
    return ID_PREFIX + hashlib.sha256(uri.encode("utf-8")).hexdigest()[:16]


def _aad(key_id: str, uri: bytes) -> bytes:
    kid = key_id.encode("utf-8")
    return LABEL + _U16.pack(len(kid)) + kid + _U16.pack(len(uri)) + uri


@dataclass(frozen=True)
class KeyText:
    """A parsed key text (nothing decrypted). ``wrapped`` is the data key W."""

    uri: str
    wrapped: bytes
    nonce: bytes
    sealed: bytes

    @property
    def kind(self) -> int:
        return self.wrapped[0]

    @property
    def key_version(self) -> str | None:
        """The master key version that wrapped W (``KeySource.wrapped_key_version``), or None
        for a key of no known kind."""
        return wrapped_version(self.wrapped) or None

    def open(self, key_id: str, aead: AESGCM) -> bytes:
        """The PME key, given the unwrapped data key's cipher.

        Raises:
            AuthenticationError: the text was not sealed for ``key_id`` with that data key.
        """
        try:
            return aead.decrypt(self.nonce, self.sealed, _aad(key_id, self.uri.encode("utf-8")))
        except InvalidTag as exc:
            raise AuthenticationError() from exc


def seal_key_text(
    key: bytes, key_id: str, uri: str, wrapped: bytes, aead: AESGCM, nonce: bytes | None = None
) -> str:
    """Wrap PME key bytes with a data key (``aead`` over its plaintext, ``wrapped`` = W).

    ``nonce`` is for test vectors only; by default it is random.
    """
    if len(key) not in (16, 24, 32):
        raise ValueError("a PME key is 16, 24 or 32 bytes")
    raw_uri = uri.encode("utf-8")
    if not raw_uri or len(raw_uri) > 0xFFFF or not 0 < len(wrapped) <= 0xFFFF:
        raise ValueError("the key URI and the wrapped data key are 1 to 65535 bytes")
    nonce = os.urandom(_NONCE) if nonce is None else nonce
    if len(nonce) != _NONCE:
        raise ValueError("the nonce is 12 bytes")
    sealed = aead.encrypt(nonce, key, _aad(key_id, raw_uri))
    head = bytes((KEY_TEXT_V1,)) + _U16.pack(len(raw_uri)) + raw_uri
    return to_text(head + _U16.pack(len(wrapped)) + wrapped + nonce + sealed)


def parse_key_text(text: str) -> KeyText:
    """Split a key text into its parts.

    Raises:
        MalformedValueError: not a kmsbeam PME key text of version 1.
    """
    if not isinstance(text, str):
        raise MalformedValueError()
    data = from_text(text)
    if len(data) < 5 or data[0] != KEY_TEXT_V1:
        raise MalformedValueError()
    ulen = _U16.unpack_from(data, 1)[0]
    pos = 3 + ulen
    if ulen == 0 or len(data) < pos + 2:
        raise MalformedValueError()
    wlen = _U16.unpack_from(data, pos)[0]
    start = pos + 2
    if wlen == 0 or len(data) < start + wlen + _NONCE + 16 + _TAG:
        raise MalformedValueError()
    try:
        uri = data[3:pos].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MalformedValueError() from exc
    end = start + wlen
    return KeyText(uri, data[start:end], data[end : end + _NONCE], data[end + _NONCE :])
