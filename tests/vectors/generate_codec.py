"""Writes tests/vectors/codec_v1.json: value codec encodings a reader must accept (with their
values) and byte strings it must refuse (with the rule they break). Checked by
tests/core/test_codec.py. The cases are fixed: extend them, never change one.

    python tests/vectors/generate_codec.py
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from generate import typed  # type: ignore[import-not-found]

from kmsbeam.formats.codec import encode_value

HERE = Path(__file__).parent

ACCEPT: list[Any] = [
    None, False, True, 0, 1, -1, 127, 128, -128, -129, 255, 256, 2**63, -(2**63),
    2**8191 - 1, -(2**8191), 0.0, -0.0, 1.5, float("inf"), "", "ünïcødé ✓", b"", b"\x00\xff",
    dt.date(1, 1, 1), dt.date(2026, 11, 23), dt.datetime(2026, 11, 23, 12, 30),
    dt.datetime(2026, 11, 23, 12, 30, 1, 5),
    dt.datetime(2026, 11, 23, 12, 30, tzinfo=dt.timezone(dt.timedelta(hours=-3, minutes=-30))),
    Decimal("12.50"), Decimal("-0"), Decimal("1E+10"), Decimal("NaN"), Decimal("-Infinity"),
    Decimal("1E+6111"), Decimal("1E-6176"), [], [None, [1]], {}, {"b": 1, "a": {"c": []}},
    [None] * 3,
]  # fmt: skip


def _nested(depth: int) -> str:
    """Hex of lists nested ``depth`` deep around None (each list: count 1, item length)."""
    enc = bytes([0x00])
    for _ in range(depth):
        enc = bytes([0x0A, 0x01]) + _varint(len(enc)) + enc
    return enc.hex()


def _varint(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    return bytes(out + bytes([n]))


def _text(tag: str, text: str) -> str:
    return tag + text.encode("utf-8").hex()


REFUSE: list[tuple[str, str, str]] = [  # (hex, error kind, what is wrong)
    ("", "invalid value encoding", "empty"),
    ("0d", "invalid value encoding", "unknown tag"),
    ("ff", "invalid value encoding", "unknown tag"),
    ("0000", "invalid value encoding", "None with a payload"),
    ("0101", "invalid value encoding", "False with a payload"),
    ("0c", "invalid value encoding", "the kept marker outside a record payload"),
    ("0a01010c", "invalid value encoding", "the kept marker inside a list"),
    ("0300", "invalid value encoding", "int 0 not empty"),
    ("03007f", "invalid value encoding", "int 127 with a leading 0x00"),
    ("03ff80", "invalid value encoding", "int -128 with a leading 0xff"),
    ("03" + "01" * 1025, "value too large", "an int of 1025 bytes"),
    ("04" + "00" * 7, "invalid value encoding", "a float of 7 bytes"),
    ("04" + "00" * 9, "invalid value encoding", "a float of 9 bytes"),
    ("05c3", "invalid value encoding", "truncated UTF-8"),
    ("05eda080", "invalid value encoding", "a UTF-8 encoded surrogate"),
    ("05c0af", "invalid value encoding", "overlong UTF-8"),
    (_text("07", "20261123"), "invalid value encoding", "date in basic format"),
    (_text("07", "2026-W48-1"), "invalid value encoding", "week date"),
    (_text("07", "2026-11-31"), "invalid value encoding", "no such day"),
    (_text("08", "2026-11-23 12:30:00"), "invalid value encoding", "datetime with a space"),
    (_text("08", "2026-11-23T12:30:00Z"), "invalid value encoding", "datetime with Z"),
    (_text("08", "2026-11-23T12:30"), "invalid value encoding", "datetime without seconds"),
    (_text("08", "2026-11-23T12:30:00.000000"), "invalid value encoding",
     "datetime with zero microseconds"),
    (_text("08", "2026-11-23T12:30:00.5"), "invalid value encoding", "datetime with 1 digit"),
    (_text("09", "1_000"), "invalid value encoding", "decimal with an underscore"),
    (_text("09", "+1"), "invalid value encoding", "decimal with a plus sign"),
    (_text("09", " 1"), "invalid value encoding", "decimal with a space"),
    (_text("09", "nan"), "invalid value encoding", "decimal nan in lower case"),
    (_text("09", "1e10"), "invalid value encoding", "decimal exponent in lower case"),
    (_text("09", "1E10"), "invalid value encoding", "decimal exponent without its sign"),
    (_text("09", "1E+6112"), "value too large", "decimal exponent over 6111"),
    (_text("09", "1E-6177"), "value too large", "decimal exponent under -6176"),
    (_text("09", "1" * 1025), "value too large", "decimal text of 1025 characters"),
    ("0a01", "invalid value encoding", "a list missing its item"),
    ("0a0100", "invalid value encoding", "a list item of length 0"),
    ("0a0000", "invalid value encoding", "a byte after the last list item"),
    ("0a8100", "invalid value encoding", "a non-minimal varint count"),
    ("0a01810000", "invalid value encoding", "a non-minimal varint length"),
    ("0a010200", "invalid value encoding", "a list item length past the end"),
    ("0a" + "80" * 9 + "01", "invalid value encoding", "a varint of 10 bytes"),
    ("0b02016101000161010" + "1", "invalid value encoding", "a duplicate map key"),
    ("0b0101ff0100", "invalid value encoding", "a map key that is not UTF-8"),
    ("0b01056101", "invalid value encoding", "a map key length past the end"),
    (_nested(65), "value too deep", "lists nested 65 deep"),
    ("0b01016106" + "0b010162010c", "invalid value encoding", "kept marker nested in a map"),
]


def _deep(depth: int) -> Any:
    value: Any = None
    for _ in range(depth):
        value = [value]
    return value


def codec_vectors() -> dict[str, Any]:
    accept = [{"value": typed(v), "hex": encode_value(v).hex()} for v in [*ACCEPT, _deep(64)]]
    refuse = [{"hex": h, "error": kind, "case": case} for h, kind, case in REFUSE]
    return {"format": "kmsbeam value codec (docs/FORMAT.md, Value codec)",
            "max_depth": 64, "accept": accept, "refuse": refuse}  # fmt: skip


if __name__ == "__main__":
    (HERE / "codec_v1.json").write_text(json.dumps(codec_vectors(), indent=1) + "\n")
    print("wrote", HERE / "codec_v1.json")
