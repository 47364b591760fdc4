"""The parts of the emulator's HTTP server that hold no logic of their own: its bounds
(``Limits``), one connection's state (``Conn``), response bytes, and closing a socket."""

from __future__ import annotations

import http
import socket
import uuid
from dataclasses import dataclass

from kmsbeam.emulator._errors import ApiError, error_body
from kmsbeam.emulator._http_parse import Head
from kmsbeam.emulator._service import Response
from kmsbeam.errors import ConfigurationError

__all__ = ["Conn", "Limits", "error_bytes", "response_bytes", "send_and_close", "shut"]

JSON = ("Content-Type", "application/json;charset=utf-8")


@dataclass(frozen=True)
class Limits:
    """Connection, thread and time bounds of the emulator's HTTP server."""

    max_connections: int = 1024
    workers: int = 16
    request_timeout: float = 10.0
    idle_timeout: float = 120.0

    def __post_init__(self) -> None:
        if not 1 <= self.workers <= 1024:
            raise ConfigurationError("the emulator's workers are 1 to 1024 threads")
        if not self.workers <= self.max_connections <= 1_000_000:
            raise ConfigurationError("max_connections is at least the number of workers")
        if not 0 < self.request_timeout <= 3600 or not 0 < self.idle_timeout <= 86400:
            raise ConfigurationError("the emulator's timeouts are positive seconds")


def response_bytes(response: Response, keep_alive: bool) -> bytes:
    phrase = http.HTTPStatus(response.status).phrase
    lines = [f"HTTP/1.1 {response.status} {phrase}", "Server: kmsbeam-emulator",
             f"Content-Length: {len(response.body)}"]  # fmt: skip
    lines += [f"{name}: {value}" for name, value in response.headers]
    if not keep_alive:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + response.body


def error_bytes(code: str, status: int, message: str) -> bytes:
    error = ApiError(code, message, status=status)
    body = error_body(error, str(uuid.uuid4()).upper(), "kms.aliyuncs.com")
    return response_bytes(Response(status, [JSON], body), keep_alive=False)


class Conn:
    """One connection's state; touched by the I/O thread, or by one worker while BUSY."""

    __slots__ = ("sock", "peer", "buffer", "out", "head", "state", "deadline", "waiting_since",
                 "keep_alive", "served")  # fmt: skip

    def __init__(self, sock: socket.socket, peer: str, now: float, timeout: float) -> None:
        self.sock, self.peer = sock, peer
        self.buffer = bytearray()
        self.out = b""
        self.head: Head | None = None
        self.state = "reading"  # reading -> busy -> (writing ->) reading | closed
        self.deadline = now + timeout
        self.waiting_since = now
        self.keep_alive = False
        self.served = 0


def shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def send_and_close(sock: socket.socket, data: bytes) -> None:
    try:
        sock.send(data)
    except OSError:
        pass
    shut(sock)
