"""The envelopes' byte layout (kmsbeam.formats.envelope): the header, the AAD prefix, the
text form, parsing and reheadering a value. v1 headers carry the wrapped data key; v2 headers
(key-vault values) carry only its commitment K, the wrapped key living in a key vault."""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections.abc import Sequence
from itertools import accumulate

from pybase64 import b64decode, b64encode_as_string

from kmsbeam.errors import MalformedValueError

FIELD_V1 = 0x01
RECORD_V1 = 0x02
FIELD_V2 = 0x03
RECORD_V2 = 0x04
# The AAD label names what a value is (a field value or a record), not where its wrapped key
# is: v1 and v2 values share it, so a dataset moves between the two by rewriting headers only
# (``kmsbeam rotate --key-vault``). Both name the data key by K in the AAD; the plaintext is the
# same codec's. So a header swap gives the same value, never another one.
LABELS = {
    FIELD_V1: b"kmsbeam.field.v1",
    RECORD_V1: b"kmsbeam.record.v1",
    FIELD_V2: b"kmsbeam.field.v1",
    RECORD_V2: b"kmsbeam.record.v1",
}
V2_OF = {FIELD_V1: FIELD_V2, RECORD_V1: RECORD_V2}  # a family's key-vault format
V2 = frozenset(V2_OF.values())
V2_HEADER = 18  # format byte || K (16) || one zero byte
MAX_VALUES_PER_KEY = 2**32
TAG = 16
COMMIT_LABEL = b"kmsbeam.key-commitment.v1"
COMMIT_SIZE = 16

U16 = struct.Struct(">H")


def key_commitment(dek: bytes) -> bytes:
    """K: the first 16 bytes of HMAC-SHA256(DEK, "kmsbeam.key-commitment.v1")."""
    return hmac.digest(dek, COMMIT_LABEL, hashlib.sha256)[:COMMIT_SIZE]


def make_header(fmt: int, wrapped: bytes, commitment: bytes) -> bytes:
    """A value header: v1 ``fmt || L || wrapped || K || P zero bytes``; v2 ``fmt || K ||
    0x00`` (``wrapped`` is then not written: it goes to the key vault)."""
    if fmt in V2:
        return bytes((fmt,)) + commitment + b"\0"
    if not 0 < len(wrapped) <= 0xFFFF:
        raise ValueError("a wrapped key is 1 to 65535 bytes")
    pad = -(3 + len(wrapped) + COMMIT_SIZE) % 3
    return bytes((fmt,)) + U16.pack(len(wrapped)) + wrapped + commitment + b"\0" * pad


def name_prefix(fmt: int, name: str) -> bytes:
    encoded = name.encode("utf-8")
    if len(encoded) > 0xFFFF:
        raise ValueError("field names are limited to 65535 bytes")
    return LABELS[fmt] + U16.pack(len(encoded)) + encoded


URLSAFE = b"-_"  # pybase64's altchars for the URL-safe alphabet
_PAD = ("", "", "==", "=")
_TEXT_FILLS = ("", "!", "AA", "A")  # by length % 4 ("!": a length no text has, refused)
ZERO_FILLS = (b"", b"\0\0", b"\0")  # by length % 3: the zero bytes up to a multiple of 3


def to_text(value: bytes) -> str:
    """URL-safe base64 without padding."""
    return b64encode_as_string(value, URLSAFE).rstrip("=")


def from_text(text: str) -> bytes:
    """Inverse of ``to_text``. Only the canonical text of some bytes is accepted: characters
    outside the alphabet, ``=`` padding and non-zero trailing bits raise MalformedValueError,
    so every text value has exactly one spelling. The text is decoded strictly and must be
    ``to_text`` of what it decodes to (pybase64 takes any trailing bits: the comparison
    refuses them; it takes "+" and "/" with a warning: refused before)."""
    if "+" in text or "/" in text:
        raise MalformedValueError()
    try:
        data = b64decode(text + _PAD[len(text) & 3], URLSAFE, True)
    except ValueError as exc:
        raise MalformedValueError() from exc
    if b64encode_as_string(data, URLSAFE).rstrip("=") != text:
        raise MalformedValueError()
    return data


def from_text_many(texts: Sequence[str]) -> list[bytes]:
    """``from_text`` for many texts, with the same checks: texts of one length as
    ``from_text_joint``, of several lengths in one base64 call too, each followed by "A"s up
    to a multiple of 4 (and the result must be the base64 of the bytes each text decodes to,
    followed by zero bytes).

    Raises:
        MalformedValueError: some text is not canonical (which one is not said).
    """
    joint = from_text_joint(texts)
    if joint is not None:
        data, step, length = joint
        return [data[i : i + length] for i in range(0, len(data), step)]
    if len(texts) < 8:
        return [from_text(t) for t in texts]
    k = len(texts)
    lengths = list(map(len, texts))
    parts: list[str] = [""] * (2 * k)
    parts[0::2] = texts
    parts[1::2] = [_TEXT_FILLS[n & 3] for n in lengths]
    joined = "".join(parts)
    if "+" in joined or "/" in joined:
        raise MalformedValueError()
    try:
        data = b64decode(joined, URLSAFE, True)
    except ValueError as exc:
        raise MalformedValueError() from exc
    if len(data) * 4 != len(joined) * 3:  # no "=" padding at the end
        raise MalformedValueError()
    sizes = [n * 3 // 4 for n in lengths]
    starts = accumulate([(n + 3) // 4 * 3 for n in lengths], initial=0)
    bodies = [data[at : at + m] for at, m in zip(starts, sizes)]
    again: list[bytes] = [b""] * (2 * k)
    again[0::2] = bodies
    again[1::2] = [ZERO_FILLS[m % 3] for m in sizes]
    if b64encode_as_string(b"".join(again), URLSAFE) != joined:  # bits after a text: zero
        raise MalformedValueError()
    return bodies


def from_text_joint(texts: Sequence[str]) -> tuple[bytes, int, int] | None:
    """``from_text`` of many texts of one length, in one base64 call: ``(data, step,
    length)``, text ``i`` being ``data[i * step : i * step + length]``; None when the texts
    are too few or not of one length (then call ``from_text`` on each). Each text is followed
    by "A"s up to a multiple of 4; the joint text must be the padding-free base64 of what it
    decodes to (as in ``from_text``), and the bytes the "A"s add must be zero (the
    canonical-trailing-bits rule).

    Raises:
        MalformedValueError: some text is not canonical (which one is not said).
    """
    size = len(texts[0]) if texts else 0
    if len(texts) < 8 or size < 2 or len(set(map(len, texts))) != 1 or size % 4 == 1:
        return None
    fill = "A" * (-size % 4)
    joined = fill.join(texts) + fill
    if "+" in joined or "/" in joined:  # pybase64 would take them (with a warning)
        raise MalformedValueError()
    try:
        data = b64decode(joined, URLSAFE, True)
    except ValueError as exc:
        raise MalformedValueError() from exc
    step = (size + len(fill)) // 4 * 3
    length = size * 3 // 4
    if len(data) != len(texts) * step or b64encode_as_string(data, URLSAFE) != joined:
        raise MalformedValueError()
    for extra in range(length, step):  # the bytes the "A"s and unused bits make: all zero
        if any(data[extra::step]):
            raise MalformedValueError()
    return data, step, length


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


def split_header(data: bytes, expected_fmt: int, *, vault: bool = False) -> tuple[int, int]:
    """(L, H) of a value's header; MalformedValueError if it is not a well-formed header.

    A v1 ``expected_fmt`` with ``vault`` also takes its family's v2 header (L = 0, H = 18,
    its last byte zero), as does a v2 ``expected_fmt`` itself."""
    if len(data) < 3:
        raise MalformedValueError()
    if data[0] in V2 and (data[0] == expected_fmt or (vault and V2_OF.get(expected_fmt) == data[0])):
        if len(data) < V2_HEADER or data[V2_HEADER - 1]:
            raise MalformedValueError()
        return 0, V2_HEADER
    if data[0] != expected_fmt:
        raise MalformedValueError()
    wlen = U16.unpack_from(data, 1)[0]
    kend = 3 + wlen + COMMIT_SIZE
    hlen = kend + (-kend % 3)
    if wlen == 0 or len(data) < hlen or any(data[kend:hlen]):
        raise MalformedValueError()
    return wlen, hlen


def parse(
    value: bytes | bytearray | memoryview | str, expected_fmt: int, *, vault: bool = False
) -> ParsedValue:
    """Split a binary or text value into header, wrapped key, commitment and body. With
    ``vault`` a v1 ``expected_fmt`` also takes its family's v2 values, whose ``wrapped`` is
    ``b""`` (the key is in a key vault, named by the commitment).

    Raises:
        MalformedValueError: not a value of format ``expected_fmt``.
    """
    if isinstance(value, str):
        data = from_text(value)
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
    else:
        raise MalformedValueError()
    wlen, hlen = split_header(data, expected_fmt, vault=vault)
    if len(data) < hlen + 4 + 1 + TAG:
        raise MalformedValueError()
    if wlen == 0:  # v2
        return ParsedValue(data[0], data[:hlen], b"", data[1 : 1 + COMMIT_SIZE], data[hlen:])
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
    new = make_header(parsed.fmt, wrapped, parsed.commitment) + parsed.body
    return to_text(new) if isinstance(value, str) else new

