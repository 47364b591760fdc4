"""Envelope v1: the byte layout shared by encrypted field values and encrypted records.

::

    offset      size   field
    0           1      format byte: 0x01 field value v1, 0x02 record v1
    1           2      L, length of the wrapped key, big-endian
    3           L      wrapped key: kind byte || key source blob   (kmsbeam.keys.source)
    3+L         16     K, the data key's commitment: HMAC-SHA256(DEK, COMMIT_LABEL)[:16]
    19+L        P      zero padding, P = (-(19 + L)) mod 3, so the header is 3k bytes long
    H = 19+L+P  4      counter C, big-endian; the AES-GCM nonce is 8 zero bytes || C
    H+4         n+16   AES-256-GCM ciphertext of the typed plaintext (kmsbeam.formats.codec), tag last

    AAD = label || len(name) (2 bytes, big-endian) || UTF-8 name || K || binding
      label   b"kmsbeam.field.v1" or b"kmsbeam.record.v1"
      name    the field path (field values) or the payload field name (records)
      K       the key commitment above: names the data key, whichever master key wraps it
      binding the record identity: codec encoding of a dict of the bound cleartext fields,
              keys sorted; empty when nothing is bound

The AAD names the data key by its commitment, not by its wrapped form, so rewrapping a data
key to another master key (rotation) replaces the header and leaves bytes H.. unchanged. A
reader checks K against the unwrapped key before decrypting: a wrapped key swapped for
another one fails, and no ciphertext opens under two keys (AES-GCM alone is not committing).

Text form: URL-safe base64 without ``=`` padding of the whole value. Because the header is a
multiple of 3 bytes, its base64 text is a fixed prefix computed once per data key.

Nonce rule: one ``Sealer`` per freshly generated data key, used from one thread; the counter
starts at 0 and the sealer refuses to go past 2**32 values, so a (key, nonce) pair never
repeats. Data keys are never persisted in plaintext, so a crashed worker cannot reuse one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import struct
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.errors import AuthenticationError, MalformedValueError

__all__ = [
    "COMMIT_LABEL",
    "FIELD_V1",
    "KeyCipher",
    "MAX_VALUES_PER_KEY",
    "Opener",
    "RECORD_V1",
    "ParsedValue",
    "Sealer",
    "from_text",
    "from_text_many",
    "key_commitment",
    "open_value",
    "parse",
    "reheader",
    "to_text",
]

FIELD_V1 = 0x01
RECORD_V1 = 0x02
LABELS = {FIELD_V1: b"kmsbeam.field.v1", RECORD_V1: b"kmsbeam.record.v1"}
MAX_VALUES_PER_KEY = 2**32
_TAG = 16
COMMIT_LABEL = b"kmsbeam.key-commitment.v1"
COMMIT_SIZE = 16


def key_commitment(dek: bytes) -> bytes:
    """K: the first 16 bytes of HMAC-SHA256(DEK, "kmsbeam.key-commitment.v1")."""
    return hmac.digest(dek, COMMIT_LABEL, hashlib.sha256)[:COMMIT_SIZE]


def _header(fmt: int, wrapped: bytes, commitment: bytes) -> bytes:
    if not 0 < len(wrapped) <= 0xFFFF:
        raise ValueError("a wrapped key is 1 to 65535 bytes")
    pad = -(3 + len(wrapped) + COMMIT_SIZE) % 3
    return bytes((fmt,)) + _U16.pack(len(wrapped)) + wrapped + commitment + b"\0" * pad
_U16 = struct.Struct(">H")


def _name_prefix(fmt: int, name: str) -> bytes:
    encoded = name.encode("utf-8")
    if len(encoded) > 0xFFFF:
        raise ValueError("field names are limited to 65535 bytes")
    return LABELS[fmt] + _U16.pack(len(encoded)) + encoded


def to_text(value: bytes) -> str:
    """URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")


_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_UNUSED_BITS = {2: 0x0F, 3: 0x03}


def from_text(text: str) -> bytes:
    """Inverse of ``to_text``. Only the canonical text of some bytes is accepted: characters
    outside the alphabet, ``=`` padding and non-zero trailing bits raise MalformedValueError,
    so every text value has exactly one spelling."""
    try:
        raw = text.encode("ascii")
        tail = len(raw) % 4
        if tail == 1 or raw.translate(None, _ALPHABET):  # a character outside the alphabet
            raise ValueError
        # The last character of a 2- or 3-character group carries 4 or 2 unused bits.
        if tail and _ALPHABET.index(raw[-1]) & _UNUSED_BITS[tail]:
            raise ValueError
        return binascii.a2b_base64(raw.translate(_TO_STANDARD) + b"=" * (-tail % 4), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise MalformedValueError() from exc


def from_text_many(texts: Sequence[str]) -> list[bytes]:
    """``from_text`` for many texts, with the same checks. Texts of one length (a column of
    same-size values) are decoded in one base64 call: each is followed by "A"s up to a
    multiple of 4, and the bytes those add must be zero (the canonical-trailing-bits rule).
    """
    size = len(texts[0]) if texts else 0
    if len(texts) < 8 or size < 2 or len(set(map(len, texts))) != 1 or size % 4 == 1:
        return [from_text(t) for t in texts]
    fill = "A" * (-size % 4)
    try:
        raw = (fill.join(texts) + fill).encode("ascii")
    except UnicodeEncodeError as exc:
        raise MalformedValueError() from exc
    if raw.translate(None, _ALPHABET):
        raise MalformedValueError()
    data = binascii.a2b_base64(raw.translate(_TO_STANDARD), strict_mode=True)
    step = (size + len(fill)) // 4 * 3
    length = size * 3 // 4
    for extra in range(length, step):  # the bytes the "A"s and unused bits make: all zero
        if any(data[extra::step]):
            raise MalformedValueError()
    return [data[i : i + length] for i in range(0, len(data), step)]


class Sealer:
    """Encrypts values under one data key. Not thread-safe: one per worker thread and DEK.

    Args:
        fmt: FIELD_V1 or RECORD_V1.
        dek: the plaintext data key (16, 24 or 32 bytes); kept only inside the cipher.
        wrapped: the wrapped data key (kind byte || blob).
    """

    __slots__ = (
        "_aead", "_commitment", "_count", "_fmt", "_header", "_prefixes", "header_text", "wrapped",
    )  # fmt: skip

    def __init__(self, fmt: int, dek: bytes, wrapped: bytes) -> None:
        if fmt not in LABELS:
            raise ValueError(f"unknown envelope format {fmt:#x}")
        self._aead = AESGCM(dek)
        self._fmt = fmt
        self._commitment = key_commitment(dek)
        self._header = _header(fmt, wrapped, self._commitment)
        self.header_text = to_text(self._header)
        self.wrapped = wrapped
        self._count = 0
        self._prefixes: dict[str, bytes] = {}

    @property
    def count(self) -> int:
        """How many values this data key has sealed."""
        return self._count

    def __repr__(self) -> str:
        return f"Sealer(format={self._fmt:#x}, count={self._count})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a Sealer holds a plaintext data key and never pickles")

    def _prefix(self, name: str) -> bytes:
        """label || len(name) || name || K: the AAD of a value of field ``name``, less the
        binding."""
        prefix = self._prefixes.get(name)
        if prefix is None:
            prefix = self._prefixes[name] = _name_prefix(self._fmt, name) + self._commitment
        return prefix

    def _bodies(
        self, aads: Iterable[bytes], plaintexts: Sequence[bytes], head: bytes = b""
    ) -> list[bytes]:
        """head || counter || AES-GCM(plaintext) for each value, ``aads`` giving each AAD:
        the one place the nonce rule is kept.

        The counters for all values are reserved in one step, before anything is encrypted.
        """
        k = len(plaintexts)
        n = self._count
        if n + k > MAX_VALUES_PER_KEY:
            raise OverflowError("this data key has sealed 2**32 values; a new one is needed")
        self._count = n + k
        nonces = [i.to_bytes(12, "big") for i in range(n, n + k)]  # 8 zero bytes || counter
        sealed = list(map(self._aead.encrypt, nonces, plaintexts, aads))
        if len(sealed) != k:
            raise ValueError("one AAD per plaintext")
        if head:
            return [head + nonce[8:] + ct for nonce, ct in zip(nonces, sealed)]
        return [nonce[8:] + ct for nonce, ct in zip(nonces, sealed)]

    def _record_bodies(
        self, names: Sequence[str], plaintexts: Sequence[bytes], binding: bytes, head: bytes = b""
    ) -> list[bytes]:
        if len(names) != len(plaintexts):
            raise ValueError("one name per plaintext")
        return self._bodies([self._prefix(name) + binding for name in names], plaintexts, head)

    def _column_bodies(
        self,
        name: str,
        plaintexts: Sequence[bytes],
        bindings: Sequence[bytes] | None,
        head: bytes = b"",
    ) -> list[bytes]:
        prefix = self._prefix(name)
        if bindings is None:
            return self._bodies(repeat(prefix, len(plaintexts)), plaintexts, head)
        if len(bindings) != len(plaintexts):
            raise ValueError("one binding per plaintext")
        return self._bodies([prefix + b for b in bindings], plaintexts, head)

    def _texts(self, bodies: list[bytes]) -> list[str]:
        """The text values of ``bodies``: header text || unpadded URL-safe base64 of a body.

        Bodies of one length (a column of same-size values) are encoded in one base64 call:
        each body is followed by zero bytes up to a multiple of 3, so its characters in the
        joint text are exactly its own unpadded base64 followed by "A"s, which are cut off.
        """
        head = self.header_text
        size = len(bodies[0]) if bodies else 0
        if len(bodies) < 8 or len(set(map(len, bodies))) != 1:
            b2a = binascii.b2a_base64
            return [
                head + b2a(b, newline=False).translate(_TO_URLSAFE).rstrip(b"=").decode("ascii")
                for b in bodies
            ]
        fill = b"\0" * (-size % 3)
        joint = binascii.b2a_base64(fill.join(bodies) + fill, newline=False)
        text = joint.translate(_TO_URLSAFE).decode("ascii")
        step = (size + len(fill)) // 3 * 4
        chars = (4 * size + 2) // 3
        return [head + text[i : i + chars] for i in range(0, len(text), step)]

    def seal_many(
        self, names: Sequence[str], plaintexts: Sequence[bytes], binding: bytes = b""
    ) -> list[bytes]:
        """Encrypt several values of one record (``plaintexts[i]`` is field ``names[i]``):
        the values ``seal`` would give, in one call."""
        return self._record_bodies(names, plaintexts, binding, self._header)

    def seal_many_text(
        self, names: Sequence[str], plaintexts: Sequence[bytes], binding: bytes = b""
    ) -> list[str]:
        """``seal_many`` in text form: the values ``seal_text`` would give."""
        return self._texts(self._record_bodies(names, plaintexts, binding))

    def seal_column(
        self, name: str, plaintexts: Sequence[bytes], bindings: Sequence[bytes] | None = None
    ) -> list[bytes]:
        """Encrypt the values of field ``name`` in many records (``bindings[i]`` is record
        ``i``'s binding; None: nothing bound): the values ``seal`` would give."""
        return self._column_bodies(name, plaintexts, bindings, self._header)

    def seal_column_text(
        self, name: str, plaintexts: Sequence[bytes], bindings: Sequence[bytes] | None = None
    ) -> list[str]:
        """``seal_column`` in text form."""
        return self._texts(self._column_bodies(name, plaintexts, bindings))

    def seal(self, plaintext: bytes, name: str, binding: bytes = b"") -> bytes:
        """Encrypt one encoded plaintext; returns the binary value."""
        return self._record_bodies((name,), (plaintext,), binding, self._header)[0]

    def seal_text(self, plaintext: bytes, name: str, binding: bytes = b"") -> str:
        """Encrypt one encoded plaintext; returns the URL-safe base64 text value."""
        return self._texts(self._record_bodies((name,), (plaintext,), binding))[0]


class KeyCipher:
    """An unwrapped data key as readers hold it: its AES-GCM cipher and its commitment K.

    The key bytes themselves are kept only inside the cipher; a KeyCipher never pickles.
    """

    __slots__ = ("aead", "commitment")

    def __init__(self, aead: AESGCM, commitment: bytes) -> None:
        self.aead = aead
        self.commitment = commitment

    @classmethod
    def from_dek(cls, dek: bytes) -> KeyCipher:
        return cls(AESGCM(dek), key_commitment(dek))

    def __repr__(self) -> str:
        return "KeyCipher(...)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyCipher holds a data key and never pickles")


class ParsedValue:
    """A value split into its parts (nothing decrypted yet)."""

    __slots__ = ("body", "commitment", "fmt", "header", "wrapped")

    def __init__(
        self, fmt: int, header: bytes, wrapped: bytes, commitment: bytes, body: bytes
    ) -> None:
        self.fmt = fmt
        self.header = header
        self.wrapped = wrapped
        self.commitment = commitment
        self.body = body


def _split_header(data: bytes, expected_fmt: int) -> tuple[int, int]:
    """(L, H) of a value's header; MalformedValueError if it is not a well-formed header."""
    if len(data) < 3 or data[0] != expected_fmt:
        raise MalformedValueError()
    wlen = _U16.unpack_from(data, 1)[0]
    kend = 3 + wlen + COMMIT_SIZE
    hlen = kend + (-kend % 3)
    if wlen == 0 or len(data) < hlen or any(data[kend:hlen]):
        raise MalformedValueError()
    return wlen, hlen


def parse(value: bytes | bytearray | memoryview | str, expected_fmt: int) -> ParsedValue:
    """Split a binary or text value into header, wrapped key, commitment and body.

    Raises:
        MalformedValueError: not a value of format ``expected_fmt``.
    """
    if isinstance(value, str):
        data = from_text(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise MalformedValueError()
    wlen, hlen = _split_header(data, expected_fmt)
    if len(data) < hlen + 4 + 1 + _TAG:
        raise MalformedValueError()
    kend = 3 + wlen + COMMIT_SIZE
    return ParsedValue(data[0], data[:hlen], data[3 : 3 + wlen], data[kend - COMMIT_SIZE : kend], data[hlen:])


def reheader(value: bytes | str, expected_fmt: int, wrapped: bytes) -> bytes | str:
    """``value`` with its wrapped key replaced (a rewrap): the same K, the same bytes after
    the header, in the same form (binary or text). The caller must have checked that
    ``wrapped`` unwraps to the data key with the value's commitment.

    Raises:
        MalformedValueError: not a value of format ``expected_fmt``.
    """
    parsed = parse(value, expected_fmt)
    new = _header(parsed.fmt, wrapped, parsed.commitment) + parsed.body
    return to_text(new) if isinstance(value, str) else new


class Opener:
    """Decrypts values that share one header (one data key): the reader's twin of ``Sealer``.

    Values of one data key share their header, so a reader keeps the last ``Opener`` and
    checks each value's header against it (a prefix comparison) instead of parsing it again.
    Thread-safe.

    Args:
        fmt: FIELD_V1 or RECORD_V1.
        header: a value header (format byte, length, wrapped key, K, padding).
        key: the unwrapped data key of that header's wrapped key.

    Raises:
        AuthenticationError: the header's K is not the key's commitment (a swapped key).
        MalformedValueError: not a header of format ``fmt``.
    """

    __slots__ = ("_aead", "_fmt", "_prefixes", "_commitment", "header", "header_text")

    def __init__(self, fmt: int, header: bytes, key: KeyCipher) -> None:
        wlen, hlen = _split_header(header, fmt)
        if hlen != len(header):
            raise MalformedValueError()
        kstart = 3 + wlen
        if not hmac.compare_digest(header[kstart : kstart + COMMIT_SIZE], key.commitment):
            raise AuthenticationError()
        self._fmt = fmt
        self._aead = key.aead
        self._commitment = key.commitment
        self._prefixes: dict[str, bytes] = {}
        self.header = header
        self.header_text = to_text(header)

    def __repr__(self) -> str:
        return f"Opener(format={self._fmt:#x})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("an Opener holds a data key's cipher and never pickles")

    def body_of(self, value: object) -> bytes | None:
        """The body of ``value`` (binary or text) if it carries this header, else None.

        Raises:
            MalformedValueError: the text after the header is not canonical base64.
        """
        if type(value) is str:
            head = self.header_text
            return from_text(value[len(head) :]) if value.startswith(head) else None
        if isinstance(value, (bytes, bytearray)) and value.startswith(self.header):
            return bytes(value[len(self.header) :])
        return None

    def open(self, body: bytes, name: str, binding: bytes = b"") -> bytes:
        """Decrypt a value's body (counter || ciphertext || tag) for field ``name``.

        Raises:
            AuthenticationError: the value does not authenticate (one fixed message).
        """
        if len(body) < 4 + 1 + _TAG:
            raise MalformedValueError()
        prefix = self._prefixes.get(name)
        if prefix is None:
            prefix = self._prefixes[name] = _name_prefix(self._fmt, name) + self._commitment
        try:
            return self._aead.decrypt(b"\0" * 8 + body[:4], body[4:], prefix + binding)
        except InvalidTag as exc:
            raise AuthenticationError() from exc


    def open_many(
        self,
        bodies: Sequence[bytes],
        name: str,
        bindings: Iterable[bytes] | None = None,
        *,
        offset: int = 0,
    ) -> list[bytes]:
        """``open`` for many bodies of field ``name`` (``bindings`` one per body, or None for
        values without a binding), in one AES-GCM ``map``. With ``offset``, each body starts
        that many bytes in (whole values whose header the caller has checked: no copies).

        Raises:
            AuthenticationError: some value does not authenticate (which one is not said).
        """
        if not bodies:
            return []
        if min(map(len, bodies)) < offset + 4 + 1 + _TAG:
            raise MalformedValueError()
        prefix = _name_prefix(self._fmt, name) + self._commitment
        start, end = offset, offset + 4
        nonces = [b"\0\0\0\0\0\0\0\0" + b[start:end] for b in bodies]
        sealed = [b[end:] for b in bodies]
        aads: Iterable[bytes] = repeat(prefix) if bindings is None else [prefix + b for b in bindings]
        try:
            return list(map(self._aead.decrypt, nonces, sealed, aads))
        except InvalidTag as exc:
            raise AuthenticationError() from exc


def open_value(parsed: ParsedValue, key: KeyCipher, name: str, binding: bytes = b"") -> bytes:
    """Decrypt a parsed value with its unwrapped data key; returns the plaintext.

    Raises:
        AuthenticationError: the value does not authenticate (one fixed message).
    """
    return Opener(parsed.fmt, parsed.header, key).open(parsed.body, name, binding)
