"""The reader of envelope v1 (kmsbeam.formats.envelope): ``KeyCipher``, ``Opener`` and
``open_value``, which check a value's key commitment and decrypt it."""

from __future__ import annotations

import hmac
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.errors import AuthenticationError, MalformedValueError
from kmsbeam.formats._lanes import openings
from kmsbeam.formats._layout import (
    COMMIT_SIZE, TAG, ParsedValue, from_text, key_commitment, name_prefix, split_header, to_text,
)  # fmt: skip


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


class Opener:
    """Decrypts values that share one header (one data key): the reader's twin of ``Sealer``.

    Values of one data key share their header, so a reader keeps the last ``Opener`` and
    checks each value's header against it (a prefix comparison) instead of parsing it again.
    Thread-safe.

    Args:
        fmt: FIELD_V1, RECORD_V1, FIELD_V2 or RECORD_V2 (the header's own format byte).
        header: a value header (v1: format byte, length, wrapped key, K, padding; v2: format
            byte, K, zero byte).
        key: the unwrapped data key of that header's wrapped key.

    Raises:
        AuthenticationError: the header's K is not the key's commitment (a swapped key).
        MalformedValueError: not a header of format ``fmt``.
    """

    __slots__ = ("_aead", "_fmt", "_prefixes", "_commitment", "header", "header_text")

    def __init__(self, fmt: int, header: bytes, key: KeyCipher) -> None:
        wlen, hlen = split_header(header, fmt)
        if hlen != len(header):
            raise MalformedValueError()
        kstart = 3 + wlen if wlen else 1  # v2: fmt || K || 0x00
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
        if len(body) < 4 + 1 + TAG:
            raise MalformedValueError()
        prefix = self._prefixes.get(name)
        if prefix is None:
            prefix = self._prefix(name)
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
        sizes = set(map(len, bodies))
        if min(sizes) < offset + 4 + 1 + TAG:
            raise MalformedValueError()
        if len(bodies) >= 8 and len(sizes) == 1:  # one length: joined, cut by views
            return self.open_joint(b"".join(bodies), len(bodies), sizes.pop(), name, bindings,
                                   offset=offset)  # fmt: skip
        prefix = self._prefix(name)
        start, end = offset, offset + 4
        nonces = [b"\0\0\0\0\0\0\0\0" + b[start:end] for b in bodies]
        sealed = [b[end:] for b in bodies]
        aads: Iterable[bytes] = repeat(prefix) if bindings is None else [prefix + b for b in bindings]
        try:
            return list(map(self._aead.decrypt, nonces, sealed, aads))
        except InvalidTag as exc:
            raise AuthenticationError() from exc

    def open_joint(
        self,
        data: bytes,
        k: int,
        stride: int,
        name: str,
        bindings: Iterable[bytes] | None = None,
        *,
        offset: int = 0,
        length: int | None = None,
    ) -> list[bytes]:
        """``open_many`` of ``k`` bodies laid out every ``stride`` bytes of ``data``, each
        starting ``offset`` bytes in and ``length`` long (default: to the stride's end).

        Raises:
            AuthenticationError: some value does not authenticate (which one is not said).
        """
        size = stride - offset if length is None else length
        if k <= 0 or size < 4 + 1 + TAG or offset + size > stride or len(data) != k * stride:
            raise MalformedValueError()
        nonces, sealed = openings(data, k, stride, offset, size)
        prefix = self._prefix(name)
        aads: Iterable[bytes] = repeat(prefix) if bindings is None else [prefix + b for b in bindings]
        try:
            opened = list(map(self._aead.decrypt, nonces, sealed, aads))
        except InvalidTag as exc:
            raise AuthenticationError() from exc
        if len(opened) != k:
            raise ValueError("one binding per body")
        return opened

    def _prefix(self, name: str) -> bytes:
        prefix = self._prefixes.get(name)
        if prefix is None:
            prefix = self._prefixes[name] = name_prefix(self._fmt, name) + self._commitment
        return prefix


def open_value(parsed: ParsedValue, key: KeyCipher, name: str, binding: bytes = b"") -> bytes:
    """Decrypt a parsed value with its unwrapped data key; returns the plaintext.

    Raises:
        AuthenticationError: the value does not authenticate (one fixed message).
    """
    return Opener(parsed.fmt, parsed.header, key).open(parsed.body, name, binding)
