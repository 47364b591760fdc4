"""Object stream v1: the header, the chunk layout and the OSS metadata of an encrypted object.

::

    offset  size  field
    0       4     magic "KMSO"
    4       1     version 0x01
    5       1     nonce scheme 0x01 (below)
    6       4     C, plaintext bytes per chunk (16 .. 2**26), big-endian
    10      16    object id, random per object
    26      16    K, the DEK's key commitment (kmsbeam.formats.envelope.key_commitment)
    ---- bytes 0..41 are the *preamble*: the AAD of every chunk ----
    42      4     V, length of the key block that follows
    46      V     key block: u16 len || key URI (UTF-8) || u16 len || canonical context (UTF-8)
                             || u16 len || wrapped key (kind || blob)
    H = 46 + V    chunks 0 .. n-1, each AES-256-GCM(chunk key, nonce_i, plaintext_i, preamble)

    chunk key = HKDF-SHA256(IKM = DEK, salt = object id, info = "kmsbeam.object.v1", 32 bytes)
    nonce_i   = i (8 bytes, big-endian) || 1 (4 bytes) for the last chunk, else 0 (4 bytes)

Every chunk holds exactly C plaintext bytes except the last, which holds 1..C (an empty object
is one empty last chunk). The key block is outside the AAD: a rewrap replaces it (or the OSS
metadata) and leaves every chunk byte identical; K in the preamble binds the DEK instead.
"""

from __future__ import annotations

import hmac
import json
import os
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace

from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from kmsbeam.formats.envelope import from_text, key_commitment, to_text
from kmsbeam.errors import AuthenticationError, FormatError, MalformedValueError
from kmsbeam.keys.source import canonical_context

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAGIC",
    "MAX_CHUNK_SIZE",
    "META_PREFIX",
    "MIN_CHUNK_SIZE",
    "PREAMBLE_SIZE",
    "TAG_SIZE",
    "ObjectHeader",
    "chunk_key",
    "chunk_nonce",
    "ciphertext_size",
    "plaintext_size",
]

MAGIC = b"KMSO"
VERSION = 1
NONCE_SCHEME = 1
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 16
MAX_CHUNK_SIZE = 1 << 26
TAG_SIZE = 16
PREAMBLE_SIZE = 42
FIXED_SIZE = 46
MAX_KEY_BLOCK = 1 << 16
KDF_INFO = b"kmsbeam.object.v1"
#: the x-oss-meta- names (without that prefix) an encrypted object carries
META_PREFIX = "kmsbeam-"
_PRE = struct.Struct(">4sBBI16s16sI")
_U16 = struct.Struct(">H")
_NONCE = struct.Struct(">QI")


def chunk_key(dek: bytes, object_id: bytes) -> bytes:
    """The per-object chunk key: HKDF-SHA256(DEK, salt = object id, info = KDF_INFO)."""
    return HKDF(algorithm=SHA256(), length=32, salt=object_id, info=KDF_INFO).derive(dek)


def chunk_nonce(index: int, last: bool) -> bytes:
    return _NONCE.pack(index, 1 if last else 0)


def _unb64(text: str) -> bytes:
    """The bytes of a metadata value in text form (canonical spelling only, like values)."""
    if not isinstance(text, str):
        raise MalformedValueError()
    return from_text(text)


@dataclass(frozen=True)
class ObjectHeader:
    """The parsed header of an encrypted object (no key material: the DEK stays wrapped)."""

    chunk_size: int
    object_id: bytes
    commitment: bytes
    key_uri: str
    context: dict[str, str]
    wrapped: bytes

    def __post_init__(self) -> None:
        if not MIN_CHUNK_SIZE <= self.chunk_size <= MAX_CHUNK_SIZE:
            raise ValueError(f"chunk_size must be {MIN_CHUNK_SIZE} to {MAX_CHUNK_SIZE} bytes")
        if len(self.object_id) != 16 or len(self.commitment) != 16 or not self.wrapped:
            raise ValueError("object id and commitment are 16 bytes; a wrapped key is needed")

    @classmethod
    def new(
        cls, dek: bytes, wrapped: bytes, key_uri: str, context: Mapping[str, str] | None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> ObjectHeader:  # fmt: skip
        """A header for a new object with a fresh random object id."""
        return cls(chunk_size, os.urandom(16), key_commitment(dek), key_uri,
                   dict(sorted((context or {}).items())), wrapped)  # fmt: skip

    @property
    def preamble(self) -> bytes:
        """Bytes 0..41: the AAD of every chunk."""
        return _PRE.pack(MAGIC, VERSION, NONCE_SCHEME, self.chunk_size, self.object_id,
                         self.commitment, 0)[:PREAMBLE_SIZE]  # fmt: skip

    def key_block(self) -> bytes:
        parts = (self.key_uri.encode("utf-8"), canonical_context(self.context), self.wrapped)
        if any(len(p) > 0xFFFF for p in parts):
            raise ValueError("key URI, context and wrapped key are each limited to 65535 bytes")
        return b"".join(_U16.pack(len(p)) + p for p in parts)

    def to_bytes(self) -> bytes:
        block = self.key_block()
        return self.preamble + struct.pack(">I", len(block)) + block

    @property
    def size(self) -> int:
        return FIXED_SIZE + len(self.key_block())

    def with_wrapped(self, wrapped: bytes, key_uri: str | None = None) -> ObjectHeader:
        """This header after a rewrap: same preamble, another wrapped key (and key URI)."""
        return replace(self, wrapped=wrapped, key_uri=self.key_uri if key_uri is None else key_uri)

    def check_key(self, dek: bytes) -> None:
        """Raise AuthenticationError unless ``dek`` has this header's commitment K."""
        if not hmac.compare_digest(key_commitment(dek), self.commitment):
            raise AuthenticationError()

    @staticmethod
    def key_block_size(fixed: bytes) -> int:
        """V from the first 46 bytes of an object.

        Raises:
            MalformedValueError: not the start of an object stream v1.
        """
        if len(fixed) < FIXED_SIZE:
            raise MalformedValueError()
        magic, version, scheme, size, _, _, block = _PRE.unpack_from(fixed)
        if magic != MAGIC or version != VERSION or scheme != NONCE_SCHEME:
            raise MalformedValueError()
        if not MIN_CHUNK_SIZE <= size <= MAX_CHUNK_SIZE or not 6 < block <= MAX_KEY_BLOCK:
            raise MalformedValueError()
        return int(block)

    @classmethod
    def parse(cls, data: bytes) -> ObjectHeader:
        """Parse a whole header (exactly ``46 + V`` bytes).

        Raises:
            MalformedValueError: not a well-formed object stream v1 header.
        """
        block_size = cls.key_block_size(data)
        if len(data) != FIXED_SIZE + block_size:
            raise MalformedValueError()
        _, _, _, size, object_id, commitment, _ = _PRE.unpack_from(data)
        parts, pos = [], FIXED_SIZE
        for _ in range(3):
            if pos + 2 > len(data):
                raise MalformedValueError()
            n = _U16.unpack_from(data, pos)[0]
            parts.append(data[pos + 2 : pos + 2 + n])
            pos += 2 + n
        if pos != len(data) or not parts[2]:
            raise MalformedValueError()
        try:
            context = json.loads(parts[1].decode("utf-8"))
            header = cls(size, object_id, commitment, parts[0].decode("utf-8"), context, parts[2])
            if canonical_context(context) != parts[1]:
                raise ValueError("not canonical")
        except (ValueError, TypeError, RecursionError) as exc:  # deep JSON: RecursionError
            raise MalformedValueError() from exc
        return header

    def metadata(self) -> dict[str, str]:
        """The ``x-oss-meta-`` entries (names without that prefix) that describe this object.

        They repeat the key block, so a rotation can rewrap by replacing the metadata only.
        """
        out = {
            "kmsbeam-format": "object-v1",
            "kmsbeam-object-id": to_text(self.object_id),
            "kmsbeam-commitment": to_text(self.commitment),
            "kmsbeam-wrapped-key": to_text(self.wrapped),
            "kmsbeam-context": to_text(canonical_context(self.context)),
        }
        if self.key_uri.isascii():
            out["kmsbeam-key"] = self.key_uri
        return out

    def from_metadata(self, meta: Mapping[str, str], where: str = "the object") -> ObjectHeader:
        """This header with the key block given by object metadata (which wins after a rewrap).

        Raises:
            FormatError: the metadata has no kmsbeam entries (``where`` names the object).
            AuthenticationError: the metadata belongs to another object or another DEK.
            MalformedValueError: an entry is not in text form, or the wrapped key is empty.
        """
        meta = {k.lower(): v for k, v in meta.items()}
        if meta.get("kmsbeam-format") != "object-v1" or "kmsbeam-wrapped-key" not in meta:
            raise FormatError(
                f"{where} has no kmsbeam object metadata (x-oss-meta-kmsbeam-*): it was not "
                "written by kmsbeam, or its metadata was replaced"
            )
        same = hmac.compare_digest(_unb64(meta.get("kmsbeam-object-id", "")), self.object_id)
        same &= hmac.compare_digest(_unb64(meta.get("kmsbeam-commitment", "")), self.commitment)
        if not same:
            raise AuthenticationError()
        wrapped, key_uri = _unb64(meta["kmsbeam-wrapped-key"]), meta.get("kmsbeam-key", self.key_uri)
        if not wrapped or not isinstance(key_uri, str):
            raise MalformedValueError()
        return self.with_wrapped(wrapped, key_uri)

    def __repr__(self) -> str:
        return (f"ObjectHeader(chunk_size={self.chunk_size}, object_id={self.object_id.hex()}, "
                f"key_uri={self.key_uri!r})")  # fmt: skip


def ciphertext_size(plain: int, chunk_size: int, header_size: int) -> int:
    """The size of an encrypted object holding ``plain`` bytes."""
    chunks = max(1, -(-plain // chunk_size))
    return header_size + plain + chunks * TAG_SIZE


def plaintext_size(total: int, chunk_size: int, header_size: int) -> int:
    """The plaintext size of an encrypted object of ``total`` bytes.

    Raises:
        AuthenticationError: no object of that size exists (truncated or extended).
    """
    body = total - header_size
    full, rest = divmod(body, chunk_size + TAG_SIZE)
    if body < TAG_SIZE or 0 < rest < TAG_SIZE or (rest == TAG_SIZE and full > 0):
        raise AuthenticationError()
    return full * chunk_size + (rest - TAG_SIZE if rest else 0)
