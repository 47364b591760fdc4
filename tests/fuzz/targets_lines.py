"""Fuzz target for JSONL input: the line reader (``read_lines``) and the JSON codec
(``parse_line``, ``dumps``), each against the plain reference it must agree with."""

from __future__ import annotations

import io
import json
from typing import Any

from fuzzlib import Target

from kmsbeam.pipelines._json import TOO_DEEP, Rejected, dumps, parse_line
from kmsbeam.pipelines._read import read_lines

RECORDS: list[dict[str, Any]] = [
    {"id": 1, "ssn": "930-55-5208", "score": 1.5, "ok": True, "none": None},
    {"name": "café ☕", "nested": {"a": [1, 2.0, {"b": "c"}]}, "big": 2**70, "neg": -0.0},
    {"small": 1e-07, "tiny": 5e-324, "exp": 1e300, "esc": "q\"\\\n\t\u0001", "emoji": "😀"},
]


def _reference_lines(data: bytes, limit: int | None) -> list[tuple[int, bytes | None]]:
    """What a reader of whole lines (``BytesIO`` iteration) sees: offset and line without its
    end, or None when the line (its ``\\r`` included) is longer than ``limit``."""
    out: list[tuple[int, bytes | None]] = []
    offset = 0
    for raw in io.BytesIO(data):
        body = raw.removesuffix(b"\n")
        out.append((offset, None if limit is not None and len(body) > limit else body.removesuffix(b"\r")))
        offset += len(raw)
    return out


def _ranged(data: bytes, size: int, limit: int | None, chunk: int) -> list[tuple[int, bytes | None]]:
    out: list[tuple[int, bytes | None]] = []
    for start in range(0, max(len(data), 1), size):
        end = -1 if start + size >= len(data) else start + size
        out += read_lines(io.BytesIO(data), start, end, limit, chunk=chunk)
    return out


class JsonlTarget(Target):
    """Any bytes as a JSONL file: every byte range reads every line once, as a plain split
    does; each line parses as ``json.loads`` reads it (same values, same types) or is refused
    with a reason; a parsed record dumps as ``json.dumps`` writes it."""

    name = "jsonl_lines"

    def seeds(self) -> list[bytes]:
        lines = [json.dumps(r, ensure_ascii=False).encode("utf-8") for r in RECORDS]
        return [b"\n".join(lines) + b"\n", b"\xef\xbb\xbf" + b"\r\n".join(lines),
                b'{"a":NaN}\n[1]\n\n {"b": 1e400}\n{"c":"\\ud800"}\n' + b"[" * 70 + b"]" * 70]  # fmt: skip

    def check(self, data: bytes) -> None:
        n = len(data)  # bounded work: at most ~16 ranges, tiny chunks only for small inputs
        small = n <= 4096
        for limit, chunk, size in ((None, 1 << 20, 1 << 20), (64, 5 if small else 4093, max(37, n // 16)),
                                   (None, 3 if small else 1021, max(11, n // 16))):  # fmt: skip
            got = _ranged(data, size, limit, chunk)
            assert got == _reference_lines(data, limit), f"read_lines (limit {limit}, chunk {chunk}, range {size})"
        for _, line in _reference_lines(data, None):
            assert line is not None
            parsed = parse_line(line)
            try:
                expected: Any = json.loads(line.decode("utf-8"))
            except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
                assert type(parsed) is Rejected, "parse_line took a line json.loads refuses"
                continue
            if type(parsed) is Rejected:
                assert type(expected) is not dict or parsed.reason in (TOO_DEEP,) or "surrogate" in parsed.reason, \
                    f"parse_line refused a record json.loads reads: {parsed.reason}"  # fmt: skip
                continue
            assert type(expected) is dict and repr(parsed) == repr(expected), "parse_line and json.loads disagree"
            reference = json.dumps(expected, ensure_ascii=False, separators=(",", ":"))
            try:
                reference.encode("utf-8")
            except UnicodeEncodeError:  # a lone surrogate: dumps writes the escape instead
                reference = json.dumps(expected, separators=(",", ":"))
            assert dumps(parsed) == reference, "dumps and json.dumps disagree"
