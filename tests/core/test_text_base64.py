"""The text form's base64 (kmsbeam.formats._layout, on pybase64) accepts and refuses exactly
what the stdlib decoder it replaced did, and gives the same bytes: a differential test over
seeded random values and mutations (characters outside the alphabet, "+" "/" "=", whitespace,
truncation, non-canonical last characters), one text at a time and many of one length."""

from __future__ import annotations

import base64
import binascii
import random
from collections.abc import Callable, Sequence

import pytest

from kmsbeam.errors import MalformedValueError
from kmsbeam.formats.envelope import (
    FIELD_V1, Sealer, from_text, from_text_joint, from_text_many, to_text,
)  # fmt: skip

# -- the stdlib decoder as it was (kmsbeam 1fca6d8, formats/_layout.py), the reference -------
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_UNUSED_BITS = {2: 0x0F, 3: 0x03}
_TO_STANDARD_OR_BAD = bytes(
    c if c in _ALPHABET[:62] else b"+/"[_ALPHABET.index(c) - 62] if c in _ALPHABET else ord("!")
    for c in range(256)
)


def old_to_text(value: bytes) -> str:
    return base64.urlsafe_b64encode(value).rstrip(b"=").decode("ascii")


def old_from_text(text: str) -> bytes:
    try:
        raw = text.encode("ascii")
        tail = len(raw) % 4
        if tail == 1 or raw.translate(None, _ALPHABET):
            raise ValueError
        if tail and _ALPHABET.index(raw[-1]) & _UNUSED_BITS[tail]:
            raise ValueError
        return binascii.a2b_base64(raw.translate(_TO_STANDARD) + b"=" * (-tail % 4), strict_mode=True)
    except (UnicodeEncodeError, binascii.Error, ValueError) as exc:
        raise MalformedValueError() from exc


def old_from_text_joint(texts: Sequence[str]) -> tuple[bytes, int, int] | None:
    size = len(texts[0]) if texts else 0
    if len(texts) < 8 or size < 2 or len(set(map(len, texts))) != 1 or size % 4 == 1:
        return None
    fill = "A" * (-size % 4)
    try:
        raw = (fill.join(texts) + fill).encode("ascii").translate(_TO_STANDARD_OR_BAD)
        data = binascii.a2b_base64(raw, strict_mode=True)
    except (UnicodeEncodeError, binascii.Error) as exc:
        raise MalformedValueError() from exc
    step = (size + len(fill)) // 4 * 3
    length = size * 3 // 4
    for extra in range(length, step):
        if any(data[extra::step]):
            raise MalformedValueError()
    return data, step, length


# -- inputs ------------------------------------------------------------------------------------
_ALPHA = _ALPHABET.decode("ascii")
_BAD = ["+", "/", "=", " ", "\n", "\t", "\r", "\x00", "!", ".", "*", "é", "\u00ff", "\ud800", "~"]


def _mutate(rng: random.Random, text: str, same_length: bool = False) -> str:
    """One random change of ``text`` (``same_length``: only changes that keep its length)."""
    kinds = ["bad", "last", "pad_swap", "alpha"]
    if not same_length:
        kinds += ["pad", "space", "truncate", "append", "drop", "prefix_pad"]
    kind = rng.choice(kinds)
    pos = rng.randrange(len(text)) if text else 0
    if kind == "bad" and text:
        return text[:pos] + rng.choice(_BAD) + text[pos + 1 :]
    if kind == "last" and text:  # another last character: non-canonical trailing bits, mostly
        return text[:-1] + rng.choice(_ALPHA)
    if kind == "pad_swap" and text:  # "=" where the padding would go
        n = rng.randint(1, min(2, len(text)))
        return text[:-n] + "=" * n
    if kind == "alpha" and text:
        return text[:pos] + rng.choice(_ALPHA) + text[pos + 1 :]
    if kind == "pad":
        return text + "=" * rng.randint(1, 3)
    if kind == "space":
        return text[:pos] + rng.choice([" ", "\n", "\r\n", "\t"]) + text[pos:]
    if kind == "truncate":
        return text[: max(0, len(text) - rng.randint(1, 3))]
    if kind == "append":
        return text + rng.choice(_ALPHA + "".join(_BAD))
    if kind == "drop" and text:
        return text[:pos] + text[pos + 1 :]
    if kind == "prefix_pad":
        return "=" + text
    return text


def _outcome(fn: Callable[[str], bytes], text: str) -> bytes | None:
    try:
        return fn(text)
    except MalformedValueError:
        return None


def test_to_text_is_the_stdlib_text() -> None:
    rng = random.Random(17)
    for n in list(range(70)) + [rng.randrange(70, 3000) for _ in range(50)]:
        value = rng.randbytes(n)
        assert to_text(value) == old_to_text(value)


def test_from_text_accepts_and_refuses_what_the_stdlib_decoder_did() -> None:
    rng = random.Random(1717)
    accepted = refused = 0
    for _ in range(6000):
        text = old_to_text(rng.randbytes(rng.randrange(0, 80)))
        for candidate in (text, _mutate(rng, text), _mutate(rng, _mutate(rng, text))):
            want = _outcome(old_from_text, candidate)
            assert _outcome(from_text, candidate) == want, repr(candidate)
            accepted += want is not None
            refused += want is None
    assert accepted > 6000 and refused > 3000  # both sides were exercised


@pytest.mark.parametrize(
    "text",
    ["", "A", "AA", "AB", "AQ", "AAA", "AAE", "AAB", "QUJD", "QUJ+", "QUJ/", "QUI=", "QQ==", "QR",
     "QUJD=", "QU JD", " QUJD", "QUJD\n", "QUJ\u00e9", "QUJ\ud800", "Q===", "=", "====", "-_-_"],
)  # fmt: skip
def test_from_text_edge_cases_as_before(text: str) -> None:
    assert _outcome(from_text, text) == _outcome(old_from_text, text)


def _joint_outcome(
    fn: Callable[[Sequence[str]], tuple[bytes, int, int] | None], texts: list[str]
) -> object:
    try:
        return fn(texts)
    except MalformedValueError:
        return "refused"


def test_from_text_joint_accepts_and_refuses_what_the_stdlib_decoder_did() -> None:
    rng = random.Random(4242)
    seen: set[str] = set()
    for _ in range(1500):
        n = rng.randrange(0, 60)
        texts = [old_to_text(rng.randbytes(n)) for _ in range(rng.choice([7, 8, 9, 16]))]
        if rng.random() < 0.8 and texts and texts[0]:
            j = rng.randrange(len(texts))
            texts[j] = _mutate(rng, texts[j], same_length=rng.random() < 0.8)
        want = _joint_outcome(old_from_text_joint, texts)
        assert _joint_outcome(from_text_joint, texts) == want, texts
        seen.add("none" if want is None else "refused" if want == "refused" else "ok")
        # from_text_many: per text when not joint, and the same bytes as one call per text
        outcomes = [_outcome(old_from_text, t) for t in texts]
        if want == "refused" or None in outcomes:
            with pytest.raises(MalformedValueError):
                from_text_many(texts)
        else:
            assert from_text_many(texts) == outcomes
    assert seen == {"none", "refused", "ok"}


def test_from_text_many_of_several_lengths_as_one_call_per_text() -> None:
    rng = random.Random(99)
    kinds: set[str] = set()
    for _ in range(1500):
        texts = [old_to_text(rng.randbytes(rng.randrange(0, 50))) for _ in range(rng.randrange(8, 40))]
        for _ in range(rng.choice([0, 0, 1, 2])):
            j = rng.randrange(len(texts))
            texts[j] = _mutate(rng, texts[j])
        want = [_outcome(old_from_text, t) for t in texts]
        if None in want:
            kinds.add("refused")
            with pytest.raises(MalformedValueError):
                from_text_many(texts)
        else:
            kinds.add("ok")
            assert from_text_many(texts) == want
    assert kinds == {"ok", "refused"}


@pytest.mark.parametrize("k", [1, 7, 8, 64])
def test_sealed_texts_of_several_lengths_are_the_text_of_the_binary_values(k: int) -> None:
    # the same key and counters: the text path of a column of mixed lengths (one base64 call,
    # each value filled to its own multiple of 3) gives to_text of each binary value
    rng = random.Random(k)
    dek, wrapped = rng.randbytes(32), b"\x01" + rng.randbytes(40)
    plaintexts = [rng.randbytes(rng.randrange(1, 60)) for _ in range(k)]
    binary = Sealer(FIELD_V1, dek, wrapped).seal_column("f", plaintexts)
    texts = Sealer(FIELD_V1, dek, wrapped).seal_column_text("f", plaintexts)
    assert texts == [old_to_text(v) for v in binary]
    record = Sealer(FIELD_V1, dek, wrapped).seal_many_text(["f"] * k, plaintexts)
    assert record == texts
