"""The instance gateway's HTTPS server: TLS on its own port, a bounded thread per connection.

One accept thread takes connections; each gets a thread (at most ``max_connections``
together: past it a newcomer is closed at once) that runs the TLS handshake and serves
HTTP/1.1 keep-alive requests to ``GatewayService``. Bounds:

- the handshake and each request (from the moment the server waits for it: so an idle
  keep-alive connection too) must complete within ``request_timeout`` seconds; a sweeper
  shuts down late connections, so a silent, slow or non-TLS client holds a thread for at
  most that long;
- a body is at most ``MAX_BODY`` bytes, a head at most 100 header lines of 8 KiB;
- ``stop`` closes the listener and every connection and waits for the threads.
"""

from __future__ import annotations

import http.server
import logging
import socket
import ssl
import threading
import time
from typing import Any

from kmsbeam.emulator._gateway_actions import PROTOBUF, GatewayService
from kmsbeam.emulator._gateway_wire import MESSAGES, encode
from kmsbeam.emulator._service import Request, Response

__all__ = ["GatewayServer", "MAX_BODY"]

MAX_BODY = 64 << 10
MAX_HEADERS = 100
SWEEP_SECONDS = 0.25
_log = logging.getLogger("kmsbeam.emulator")


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "kmsbeam-emulator-gateway"
    sys_version = ""
    server: Any  # the GatewayServer (not a socketserver)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
        pass  # the audit log records calls

    def handle_one_request(self) -> None:
        self.server.arm(self.connection)
        super().handle_one_request()

    def do_POST(self) -> None:  # noqa: N802 (the base class's naming)
        self._serve()

    def do_GET(self) -> None:  # noqa: N802
        self._serve()

    def do_PUT(self) -> None:  # noqa: N802
        self._serve()

    def _serve(self) -> None:
        if len(self.headers) > MAX_HEADERS:
            self._reply(self._error("InvalidParameter", 400, "too many headers"), close=True)
            return
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._reply(self._error("InvalidParameter", 400, "send a Content-Length"), close=True)
            return
        text = self.headers.get("Content-Length") or "0"
        if not text.isdecimal() or int(text) > MAX_BODY:
            status = 413 if text.isdecimal() else 400
            error = self._error("InvalidParameter", status, "the body's length is bad or too large")
            self._reply(error, close=True)
            return
        body = self.rfile.read(int(text))
        if len(body) != int(text):
            self.close_connection = True
            return
        headers: dict[str, list[str]] = {}
        for name, value in self.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        request = Request(self.command, self.path, headers, body, str(self.client_address[0]))
        self._reply(self.server.service.handle(request), close=self.server.closing)

    @staticmethod
    def _error(code: str, status: int, message: str) -> Response:
        body = encode({"StatusCode": status, "ErrorCode": code, "ErrorMessage": message},
                      MESSAGES["Error"])  # fmt: skip
        return Response(status, [PROTOBUF], body)

    def _reply(self, response: Response, *, close: bool) -> None:
        self.send_response(response.status)
        for name, value in response.headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(response.body)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(response.body)


class GatewayServer:
    """Serves ``service`` over TLS (``context``) on ``address``; ``start``/``stop``."""

    def __init__(self, address: tuple[str, int], service: GatewayService, context: ssl.SSLContext,
                 *, max_connections: int = 64, request_timeout: float = 10.0) -> None:  # fmt: skip
        self.service, self._context = service, context
        self.max_connections, self.request_timeout = max_connections, request_timeout
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._listener = socket.create_server(address, family=family, backlog=128)
        self._listener.settimeout(SWEEP_SECONDS)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self.closing = False
        self._lock = threading.Lock()
        self._deadlines: dict[socket.socket, float] = {}
        self._threads: set[threading.Thread] = set()
        self._main: threading.Thread | None = None

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._deadlines)

    def start(self) -> None:
        self._main = threading.Thread(target=self._serve, name="kms-gateway", daemon=True)
        self._main.start()

    def arm(self, sock: socket.socket) -> None:
        """Start the clock for the next request on ``sock``."""
        with self._lock:
            if sock in self._deadlines:
                self._deadlines[sock] = time.monotonic() + self.request_timeout

    def _serve(self) -> None:
        next_sweep = time.monotonic() + SWEEP_SECONDS
        while not self.closing:
            try:
                sock, address = self._listener.accept()
            except (TimeoutError, socket.timeout):
                sock = None
            except OSError:
                if self.closing:
                    return
                time.sleep(SWEEP_SECONDS)  # out of descriptors: try again
                sock = None
            if sock is not None:
                self._admit(sock, address)
            now = time.monotonic()
            if now >= next_sweep:
                self._sweep(now)
                next_sweep = now + SWEEP_SECONDS

    def _admit(self, sock: socket.socket, address: Any) -> None:
        with self._lock:
            full = len(self._deadlines) >= self.max_connections or self.closing
            if not full:
                self._deadlines[sock] = time.monotonic() + self.request_timeout
        if full:
            sock.close()
            return
        thread = threading.Thread(target=self._connection, args=(sock, address), daemon=True,
                                  name="kms-gateway-conn")  # fmt: skip
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _connection(self, sock: socket.socket, address: Any) -> None:
        tls: ssl.SSLSocket | None = None
        try:
            sock.settimeout(self.request_timeout)
            tls = self._context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
            with self._lock:  # ``sock`` is detached now: the sweeper shuts ``tls`` instead
                if sock not in self._deadlines:
                    return
                self._deadlines[tls] = self._deadlines.pop(sock)
            tls.do_handshake()  # within the deadline, however slowly the bytes come
            _Handler(tls, address, self)  # type: ignore[arg-type]  # serves until closed
        except (OSError, ssl.SSLError, ValueError):
            pass  # a failed handshake, a reset, a timeout: nothing to answer
        except Exception:
            _log.warning("a gateway connection from %s failed", address[0], exc_info=True)
        finally:
            with self._lock:
                self._deadlines.pop(sock, None)
                if tls is not None:
                    self._deadlines.pop(tls, None)
                self._threads.discard(threading.current_thread())
            for s in (tls, sock):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _sweep(self, now: float) -> None:
        with self._lock:
            late = [s for s, deadline in self._deadlines.items() if deadline <= now or self.closing]
        for sock in late:
            _shutdown(sock)

    def stop(self, timeout: float = 5.0) -> None:
        self.closing = True
        try:
            self._listener.close()
        except OSError:
            pass
        if self._main is not None:
            self._main.join(timeout)
        self._sweep(time.monotonic())
        end = time.monotonic() + timeout
        while True:
            with self._lock:
                threads = list(self._threads)
            if not threads or time.monotonic() >= end:
                return
            threads[0].join(max(0.0, end - time.monotonic()))


def _shutdown(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # no TLS close_notify: just stop
    except OSError:
        pass

