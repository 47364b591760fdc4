"""A small HTTP/1.1 server for the emulator: one thread per connection, keep-alive.

``http.server.BaseHTTPRequestHandler`` parses headers with the ``email`` package, which cost
more CPU than the whole KMS call; this reads just what the KMS API needs: a request line,
header lines and a ``Content-Length`` body (no chunked bodies, no header folding). Each
response is written with one ``send`` and ``TCP_NODELAY``, so loopback clients never wait on
delayed ACKs. Malformed HTTP gets an Alibaba JSON error and the connection is closed.

Stopping (``close_connections``) shuts every open connection down and waits for the calls in
flight, so nothing runs against the keystore after the server closed it.
"""

from __future__ import annotations

import http
import io
import logging
import socket
import socketserver
import threading
import uuid
from typing import Any, cast

from kmsbeam.emulator._errors import ApiError, error_body
from kmsbeam.emulator._service import Request, Response, Service

__all__ = ["HTTPServer"]

MAX_LINE = 65536
MAX_HEADERS = 100
MAX_BODY = 1 << 20
JSON = ("Content-Type", "application/json;charset=utf-8")
_log = logging.getLogger("kmsbeam.emulator")


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class _Handler(socketserver.StreamRequestHandler):
    timeout = 120  # an idle keep-alive connection is closed after this many seconds
    disable_nagle_algorithm = True
    server: HTTPServer

    def handle(self) -> None:
        while not self.server.closing:
            try:
                parsed = self._read()
            except _BadRequest as exc:
                error = ApiError("InvalidParameter", str(exc), status=exc.status)
                body = error_body(error, str(uuid.uuid4()).upper(), "kms.aliyuncs.com")
                self._write(Response(error.status, [JSON], body), keep_alive=False)
                return
            except OSError:  # timeout, reset, or shut down by stop()
                return
            if parsed is None:
                return
            request, keep_alive = parsed
            response = self.server.service.handle(request)
            if response is None:  # an injected dropped connection
                try:
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            self._write(response, keep_alive=keep_alive and not self.server.closing)
            if not keep_alive:
                return

    def _read(self) -> tuple[Request, bool] | None:
        first = self.rfile.readline(MAX_LINE + 1)
        if first in (b"\r\n", b"\n"):  # tolerated before a request line (RFC 9112 2.2)
            first = self.rfile.readline(MAX_LINE + 1)
        if not first:
            return None
        if len(first) > MAX_LINE:
            raise _BadRequest(414, "the request line is longer than 64 KiB")
        parts = first.decode("latin-1").rstrip("\r\n").split(" ")
        if len(parts) != 3 or parts[2] not in ("HTTP/1.1", "HTTP/1.0"):
            raise _BadRequest(400, "the request line is not METHOD TARGET HTTP/1.1")
        method, target, version = parts
        headers: dict[str, list[str]] = {}
        for line in self._header_lines():
            name, colon, value = line.partition(":")
            if not colon or not name or name[-1] in " \t" or name[0] in " \t":
                raise _BadRequest(400, "a header line is malformed")
            headers.setdefault(name.lower(), []).append(value.strip())
        tokens = {t.strip().lower() for v in headers.get("connection", ()) for t in v.split(",")}
        keep_alive = "close" not in tokens if version == "HTTP/1.1" else "keep-alive" in tokens
        if "transfer-encoding" in headers:
            raise _BadRequest(400, "chunked bodies are not supported; send a Content-Length")
        lengths = headers.get("content-length", ["0"])
        if len(lengths) != 1 or not lengths[0].isdecimal() or int(lengths[0]) > MAX_BODY:
            raise _BadRequest(400, "the body needs one Content-Length of at most 1 MiB")
        if headers.get("expect", [""])[0].lower() == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        length = int(lengths[0])
        body = self.rfile.read(length) if length else b""
        if len(body) != length:
            return None  # the client went away mid-body
        return Request(method, target, headers, body, self.client_address[0]), keep_alive

    def _header_lines(self) -> list[str]:
        """The header lines after the request line, without their line ends."""
        rfile = cast(io.BufferedReader, self.rfile)  # buffered: StreamRequestHandler.rbufsize -1
        buffered = rfile.peek(MAX_LINE)
        if buffered.startswith(b"\r\n"):  # no headers at all
            self.rfile.read(2)
            return []
        end = buffered.find(b"\r\n\r\n")
        if end < 0:  # the head is not buffered whole: read it line by line
            return self._header_lines_one_by_one()
        text = self.rfile.read(end + 4)[:end].decode("latin-1")
        bare = text.replace("\r\n", "")
        if "\r" in bare or "\n" in bare:
            raise _BadRequest(400, "a header line is malformed")
        lines = text.split("\r\n")
        if len(lines) > MAX_HEADERS:
            raise _BadRequest(431, f"a request has at most {MAX_HEADERS} headers")
        return lines

    def _header_lines_one_by_one(self) -> list[str]:
        lines: list[str] = []
        for _ in range(MAX_HEADERS + 1):
            raw = self.rfile.readline(MAX_LINE + 1)
            if raw in (b"\r\n", b"\n", b""):
                return lines
            if len(raw) > MAX_LINE:
                raise _BadRequest(431, "a header line is longer than 64 KiB")
            lines.append(raw.decode("latin-1").rstrip("\r\n"))
        raise _BadRequest(431, f"a request has at most {MAX_HEADERS} headers")

    def _write(self, response: Response, *, keep_alive: bool) -> None:
        phrase = http.HTTPStatus(response.status).phrase
        lines = [f"HTTP/1.1 {response.status} {phrase}", "Server: kmsbeam-emulator",
                 f"Content-Length: {len(response.body)}"]  # fmt: skip
        lines += [f"{name}: {value}" for name, value in response.headers]
        if not keep_alive:
            lines.append("Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body
        try:
            self.wfile.write(data)
        except OSError:
            pass  # the client is gone; the call is audited all the same


class HTTPServer(socketserver.ThreadingTCPServer):
    """Serves ``service`` on ``address``; tracks connections so ``close_connections`` works."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], service: Service) -> None:
        self.service = service
        self.closing = False
        self._open: set[Any] = set()
        self._idle = threading.Condition()
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._idle:
            if self.closing:
                self.shutdown_request(request)
                return
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self._idle:
            self._open.discard(request)
            self._idle.notify_all()

    def handle_error(self, request: Any, client_address: Any) -> None:
        _log.warning("a connection from %s failed", client_address[0], exc_info=True)

    def close_connections(self, timeout: float) -> bool:
        """Shut every open connection down; wait up to ``timeout`` s for calls in flight."""
        with self._idle:
            self.closing = True
            connections = list(self._open)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        with self._idle:
            return self._idle.wait_for(lambda: not self._open, timeout)
