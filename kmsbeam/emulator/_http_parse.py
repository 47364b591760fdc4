"""The emulator's HTTP/1.1 request-head reader: a pure function over the bytes received so far.

``parse_head(buffer)`` returns ``None`` while the head is incomplete, the parsed ``Head`` and
the number of bytes it took once the blank line arrived, or raises ``BadRequest`` (status and
a one-sentence message) as soon as the bytes cannot become a valid request. It reads just
what the KMS API needs: a request line, header lines and a ``Content-Length`` body (no chunked
bodies, no header folding); lines may end in CRLF or a bare LF, and one empty line before the
request line is tolerated (RFC 9112 2.2).

Limits: a request line of at most ``MAX_LINE`` bytes (414), header lines of at most
``MAX_HEAD`` bytes together and at most ``MAX_HEADERS`` of them (431), a body of at most
``MAX_BODY`` bytes (400). A method that is not an HTTP token (a TLS ClientHello, binary noise)
is refused at its first byte, not after a timeout.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["MAX_BODY", "MAX_HEAD", "MAX_HEADERS", "MAX_LINE", "BadRequest", "Head", "parse_head"]

MAX_LINE = 65536
MAX_HEAD = 65536
MAX_HEADERS = 100
MAX_BODY = 1 << 20
_LINE_BREAK = re.compile(r"\r?\n")
_TOKEN = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


class BadRequest(Exception):
    """A request that cannot be served: answered with ``status`` and the connection closed."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Head:
    """One request head. ``headers`` maps lower-case names to their values, in order."""

    method: str
    target: str
    headers: dict[str, list[str]]
    keep_alive: bool
    length: int
    expect_continue: bool


def parse_head(buffer: bytes | bytearray) -> tuple[Head, int] | None:
    """The head at the start of ``buffer`` and its length in bytes; ``None`` if incomplete.

    Raises:
        BadRequest: the bytes received can never become a request this server serves.
    """
    start = 2 if buffer.startswith(b"\r\n") else 1 if buffer.startswith(b"\n") else 0
    line_end = buffer.find(b"\n", start)
    if line_end < 0:
        _check_partial_line(buffer, start)
        return None
    if line_end - start > MAX_LINE:
        raise BadRequest(414, "the request line is longer than 64 KiB")
    _check_partial_line(buffer[: line_end + 1], start)
    rest = line_end + 1
    if buffer.startswith(b"\r\n", rest) or buffer.startswith(b"\n", rest):  # no headers
        header_text, end = "", rest + (2 if buffer[rest] == 13 else 1)
    else:
        found = _blank_line(buffer, rest)
        if found is None:
            if len(buffer) - rest > MAX_HEAD:
                raise BadRequest(431, "the request headers are longer than 64 KiB")
            return None
        head_end, end = found
        if head_end - rest > MAX_HEAD:
            raise BadRequest(431, "the request headers are longer than 64 KiB")
        header_text = bytes(buffer[rest:head_end]).decode("latin-1")
    request_line = bytes(buffer[start:line_end]).decode("latin-1").rstrip("\r")
    return _head(request_line, header_text), end


def _blank_line(buffer: bytes | bytearray, rest: int) -> tuple[int, int] | None:
    """Where the first ``\\r?\\n\\r?\\n`` at or after ``rest`` starts and ends (``None`` if
    there is none): the first LF followed by ``\\r?\\n``, with the CR before it if any."""
    lf_lf, lf_crlf = buffer.find(b"\n\n", rest), buffer.find(b"\n\r\n", rest)
    if lf_lf < 0 and lf_crlf < 0:
        return None
    if lf_crlf < 0 or 0 <= lf_lf < lf_crlf:
        first, end = lf_lf, lf_lf + 2
    else:
        first, end = lf_crlf, lf_crlf + 3
    return (first - 1 if first > rest and buffer[first - 1] == 13 else first), end


def _check_partial_line(buffer: bytes | bytearray, start: int) -> None:
    """Refuse a request line whose method already cannot be a token, or that is too long."""
    space = buffer.find(b" ", start)
    method = buffer[start : space if space >= 0 else len(buffer)]
    if method.rstrip(b"\r\n").translate(None, _TOKEN) or len(method) > 32:
        raise BadRequest(400, "the request line is not METHOD TARGET HTTP/1.1")
    if len(buffer) - start > MAX_LINE + 2:
        raise BadRequest(414, "the request line is longer than 64 KiB")


def _head(request_line: str, header_text: str) -> Head:
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[0] or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
        raise BadRequest(400, "the request line is not METHOD TARGET HTTP/1.1")
    method, target, version = parts
    lines = _LINE_BREAK.split(header_text) if header_text else []
    if len(lines) > MAX_HEADERS:
        raise BadRequest(431, f"a request has at most {MAX_HEADERS} headers")
    headers: dict[str, list[str]] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon or not name or name[-1] in " \t" or name[0] in " \t" or "\r" in line:
            raise BadRequest(400, "a header line is malformed")
        headers.setdefault(name.lower(), []).append(value.strip())
    tokens = {t.strip().lower() for v in headers.get("connection", ()) for t in v.split(",")}
    keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
    if "transfer-encoding" in headers:
        raise BadRequest(400, "chunked bodies are not supported; send a Content-Length")
    lengths = headers.get("content-length", ["0"])
    if len(lengths) != 1 or not lengths[0].isdecimal() or not lengths[0].isascii():
        raise BadRequest(400, "the body needs one Content-Length of at most 1 MiB")
    if len(lengths[0]) > 8 or int(lengths[0]) > MAX_BODY:
        raise BadRequest(400, "the body needs one Content-Length of at most 1 MiB")
    expect = headers.get("expect", [""])[0].lower() == "100-continue"
    return Head(method, target, headers, keep_alive, int(lengths[0]), expect)
