"""The writer of envelope v1 (kmsbeam.formats.envelope): ``Sealer``, one data key's
AES-GCM encryption and the nonce counter."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import accumulate, chain, repeat
from typing import NoReturn, cast

from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from pybase64 import b64encode_as_string

from kmsbeam.formats._lanes import interleaved, nonces, slices
from kmsbeam.formats._layout import (
    LABELS, MAX_VALUES_PER_KEY, URLSAFE, ZERO_FILLS, key_commitment, make_header, name_prefix,
    to_text,
)  # fmt: skip


_Sealed = tuple[Sequence[bytes | memoryview], Sequence[memoryview] | None, list[bytes]]


class Sealer:
    """Encrypts values under one data key. Not thread-safe: one per worker thread and DEK.

    Args:
        fmt: FIELD_V1 or RECORD_V1; FIELD_V2 or RECORD_V2 for key-vault values (whose header
            names the data key by K only: the caller puts ``wrapped`` in the key vault first).
        dek: the plaintext data key (16, 24 or 32 bytes); kept only inside the cipher.
        wrapped: the wrapped data key (kind byte || blob).
    """

    __slots__ = (
        "_aead", "_count", "_fmt", "_header", "_prefixes", "commitment", "header_text", "wrapped",
    )  # fmt: skip

    def __init__(self, fmt: int, dek: bytes, wrapped: bytes) -> None:
        if fmt not in LABELS:
            raise ValueError(f"unknown envelope format {fmt:#x}")
        self._aead = AESGCM(dek)
        self._fmt = fmt
        self.commitment = key_commitment(dek)
        self._header = make_header(fmt, wrapped, self.commitment)
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
            prefix = self._prefixes[name] = name_prefix(self._fmt, name) + self.commitment
        return prefix

    def _sealed(
        self, aads: Iterable[bytes], plaintexts: Sequence[bytes | memoryview]
    ) -> _Sealed:
        """(nonces, their counters, AES-GCM(plaintext)) of the values, ``aads`` giving each
        AAD: the one place the nonce rule is kept. The counters for all values are reserved
        in one step, before anything is encrypted. A few values get nonces as bytes and no
        counters (None: ``nonce[8:]``); many, views valid until the next call."""
        k = len(plaintexts)
        n = self._count
        if n + k > MAX_VALUES_PER_KEY:
            raise OverflowError("this data key has sealed 2**32 values; a new one is needed")
        self._count = n + k
        if k < 8:  # a record's few values: plain bytes cost less than the shared buffers
            nonce_list: Sequence[bytes | memoryview]
            nonce_list, counters = [i.to_bytes(12, "big") for i in range(n, n + k)], None
        else:
            nonce_list, counters = nonces(n, k)  # 8 zero bytes || counter
        sealed = list(map(self._aead.encrypt, nonce_list, plaintexts, aads))
        if len(sealed) != k:
            raise ValueError("one AAD per plaintext")
        return nonce_list, counters, sealed

    def _record(
        self, names: Sequence[str], plaintexts: Sequence[bytes], binding: bytes
    ) -> _Sealed:
        if len(names) != len(plaintexts):
            raise ValueError("one name per plaintext")
        return self._sealed([self._prefix(name) + binding for name in names], plaintexts)

    def _column(
        self, name: str, plaintexts: Sequence[bytes | memoryview], bindings: Sequence[bytes] | None
    ) -> _Sealed:
        prefix = self._prefix(name)
        if bindings is None:
            return self._sealed(repeat(prefix, len(plaintexts)), plaintexts)
        if len(bindings) != len(plaintexts):
            raise ValueError("one binding per plaintext")
        return self._sealed([prefix + b for b in bindings], plaintexts)

    def _binary(self, sealed: _Sealed) -> list[bytes]:
        """The binary values: header || counter || ciphertext. Many values are joined into one
        bytes and cut, which costs less than a concatenation per value."""
        nonce_list, counters, cts = sealed
        head = self._header
        if counters is None:
            return [head + nonce[8:] + ct for nonce, ct in zip(nonce_list, cts)]
        data = interleaved(len(cts), head, counters, cts)
        size = len(head) + 4 + len(cts[0])
        if len(set(map(len, cts))) == 1:
            cuts: Iterable[slice] = slices(len(cts), size)
        else:
            extra = len(head) + 4
            ends = list(accumulate(len(ct) + extra for ct in cts))
            cuts = map(slice, chain((0,), ends), ends)
        return list(map(data.__getitem__, cuts))

    def _texts(self, sealed: _Sealed) -> list[str]:
        """The text values: header text || unpadded URL-safe base64 of counter || ciphertext.

        Many values are encoded in one base64 call, each as header || counter || ciphertext
        followed by zero bytes up to a multiple of 3: the header is a multiple of 3 bytes, so
        a value's characters in the joint text are exactly its own text followed by "A"s,
        which are cut off.
        """
        nonce_list, counters, cts = sealed
        head = self.header_text
        if counters is None:
            b2a = b64encode_as_string
            bodies = [nonce[8:] + ct for nonce, ct in zip(cast("list[bytes]", nonce_list), cts)]
            return [head + b2a(b, URLSAFE).rstrip("=") for b in bodies]
        k, h = len(cts), len(head)
        sizes = set(map(len, cts))
        if len(sizes) == 1:  # a column of one length: one fill, the cuts cached
            size = 4 + sizes.pop()
            fill = ZERO_FILLS[size % 3]
            text = b64encode_as_string(interleaved(k, self._header, counters, cts, fill), URLSAFE)
            return list(map(text.__getitem__, slices(k, h + (4 * size + 2) // 3,
                                                     h + (size + len(fill)) // 3 * 4)))  # fmt: skip
        lengths = [4 + len(ct) for ct in cts]
        fills = [ZERO_FILLS[n % 3] for n in lengths]
        text = b64encode_as_string(interleaved(k, self._header, counters, cts, fills), URLSAFE)
        starts = accumulate([h + (n + 2) // 3 * 4 for n in lengths], initial=0)
        return [text[at : at + h + (4 * n + 2) // 3] for at, n in zip(starts, lengths)]

    def seal_many(
        self, names: Sequence[str], plaintexts: Sequence[bytes], binding: bytes = b""
    ) -> list[bytes]:
        """Encrypt several values of one record (``plaintexts[i]`` is field ``names[i]``):
        the values ``seal`` would give, in one call."""
        return self._binary(self._record(names, plaintexts, binding))

    def seal_many_text(
        self, names: Sequence[str], plaintexts: Sequence[bytes], binding: bytes = b""
    ) -> list[str]:
        """``seal_many`` in text form: the values ``seal_text`` would give."""
        return self._texts(self._record(names, plaintexts, binding))

    def seal_column(
        self,
        name: str,
        plaintexts: Sequence[bytes | memoryview],
        bindings: Sequence[bytes] | None = None,
    ) -> list[bytes]:
        """Encrypt the values of field ``name`` in many records (``bindings[i]`` is record
        ``i``'s binding; None: nothing bound): the values ``seal`` would give."""
        return self._binary(self._column(name, plaintexts, bindings))

    def seal_column_text(
        self,
        name: str,
        plaintexts: Sequence[bytes | memoryview],
        bindings: Sequence[bytes] | None = None,
    ) -> list[str]:
        """``seal_column`` in text form."""
        return self._texts(self._column(name, plaintexts, bindings))

    def seal(self, plaintext: bytes, name: str, binding: bytes = b"") -> bytes:
        """Encrypt one encoded plaintext; returns the binary value."""
        return self._binary(self._record((name,), (plaintext,), binding))[0]

    def seal_text(self, plaintext: bytes, name: str, binding: bytes = b"") -> str:
        """Encrypt one encoded plaintext; returns the URL-safe base64 text value."""
        return self._texts(self._record((name,), (plaintext,), binding))[0]

