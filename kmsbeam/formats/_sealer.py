"""The writer of envelope v1 (kmsbeam.formats.envelope): ``Sealer``, one data key's
AES-GCM encryption and the nonce counter."""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import NoReturn

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.formats._layout import (
    LABELS, MAX_VALUES_PER_KEY, TO_URLSAFE, key_commitment, make_header, name_prefix, to_text,
)  # fmt: skip


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
        self._header = make_header(fmt, wrapped, self._commitment)
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
            prefix = self._prefixes[name] = name_prefix(self._fmt, name) + self._commitment
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
                head + b2a(b, newline=False).translate(TO_URLSAFE).rstrip(b"=").decode("ascii")
                for b in bodies
            ]
        fill = b"\0" * (-size % 3)
        joint = binascii.b2a_base64(fill.join(bodies) + fill, newline=False)
        text = joint.translate(TO_URLSAFE).decode("ascii")
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

