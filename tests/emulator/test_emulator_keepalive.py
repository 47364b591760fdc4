"""Persistent connections: several calls on one connection, clients that vanish mid-call,
idle keep-alive connections that must not hold the worker pool, and the request-size limits
on a connection that has already served a call."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from urllib.parse import urlencode

import pytest
from alibabacloud_kms20160120 import models

from kmsbeam.emulator import EmulatorServer
from kmsbeam.emulator._http import HTTPServer
from kmsbeam.emulator._http_parse import MAX_HEAD, MAX_LINE
from tests.emulator.conftest import client_for, signed_headers

LIVENESS_SECONDS = 10.0
AK, SECRET = "keepalive", "keepalive-secret-41"


@pytest.fixture()
def srv(tmp_path: Path) -> Iterator[EmulatorServer]:
    """One worker: a call that held it for good would starve every later call."""
    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None, workers=1) as server:
        yield server


def _http(server: EmulatorServer) -> HTTPServer:
    assert server._http is not None  # noqa: SLF001
    return server._http  # noqa: SLF001


def _connect(server: EmulatorServer, stack: ExitStack) -> socket.socket:
    host, port = server.endpoint.rsplit(":", 1)
    return stack.enter_context(socket.create_connection((host, int(port)), timeout=LIVENESS_SECONDS))


def _request(server: EmulatorServer, action: str = "ListKeys", close: bool = False) -> bytes:
    query = {"PageSize": "1"}
    headers = signed_headers(server.endpoint, action, query, ak=AK, secret=SECRET)
    lines = [f"POST /?{urlencode(query)} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()),
             "Content-Length: 0", *(["Connection: close"] if close else []), "", ""]  # fmt: skip
    return "\r\n".join(lines).encode()


def _response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One response from ``sock``: (head, body), read by its Content-Length."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection without an answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))  # fmt: skip
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "the server closed the connection mid-answer"
        body += chunk
    assert len(body) == length  # nothing after it: one answer per request
    return head, body


def _answered(server: EmulatorServer) -> None:
    """An SDK call on a new connection is answered within the liveness bound."""
    start = time.monotonic()
    client = client_for(server.endpoint, AK, SECRET)
    assert client.list_keys(models.ListKeysRequest()).body.request_id
    assert time.monotonic() - start < LIVENESS_SECONDS


def test_two_requests_on_one_connection_are_both_answered(srv: EmulatorServer) -> None:
    with ExitStack() as stack:
        sock = _connect(srv, stack)
        for _ in range(2):
            sock.sendall(_request(srv))
            head, body = _response(sock)
            assert head.startswith(b"HTTP/1.1 200 OK") and b'"PageSize":1' in body
            assert b"connection: close" not in head.lower()
        assert _http(srv).accepted == 1
        sock.sendall(_request(srv, close=True))  # the client may end it
        head, _ = _response(sock)
        assert head.startswith(b"HTTP/1.1 200 OK") and b"Connection: close" in head
        assert sock.recv(1) == b""


def test_an_sdk_client_reuses_its_connection(srv: EmulatorServer) -> None:
    client = client_for(srv.endpoint, AK, SECRET)
    for _ in range(10):
        client.list_keys(models.ListKeysRequest())
    assert _http(srv).accepted == 1


@pytest.mark.parametrize("cut", ["in the head", "in the body", "before the answer"])
def test_a_client_closing_mid_request_does_not_hold_the_worker(srv: EmulatorServer, cut: str) -> None:
    request = _request(srv)
    partial = {"in the head": request[:40],
               "in the body": request.replace(b"Content-Length: 0", b"Content-Length: 10") + b"{",
               "before the answer": request}[cut]  # fmt: skip
    with ExitStack() as stack:
        for _ in range(3):  # more than the one worker
            sock = _connect(srv, stack)
            sock.sendall(partial)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # reset
            sock.close()
    assert _http(srv).wait_for_connections(at_most=0, timeout=LIVENESS_SECONDS)
    _answered(srv)


def test_many_idle_keep_alive_connections_do_not_starve_the_pool(srv: EmulatorServer) -> None:
    with ExitStack() as stack:
        idle = [_connect(srv, stack) for _ in range(64)]
        for sock in idle:  # each served one call, then stays open and silent
            sock.sendall(_request(srv))
            assert _response(sock)[0].startswith(b"HTTP/1.1 200 OK")
        _answered(srv)
        assert _http(srv).open_connections >= 64  # still open meanwhile
        assert _http(srv).threads == 1


LINE = b"POST / HTTP/1.1\r\n"


@pytest.mark.parametrize("second, status", [  # each just past its limit, so all of it is read
    (LINE + b"Content-Length: 1048577\r\n\r\n", b"400"),
    (b"POST /" + b"a" * (MAX_LINE + 3 - 6), b"414"),
    (LINE + b"x-big: " + b"a" * (MAX_HEAD + 1 - 7), b"431"),
])  # fmt: skip
def test_size_limits_hold_on_a_kept_alive_connection(srv: EmulatorServer, second: bytes,
                                                     status: bytes) -> None:  # fmt: skip
    with ExitStack() as stack:
        sock = _connect(srv, stack)
        sock.sendall(_request(srv))
        assert _response(sock)[0].startswith(b"HTTP/1.1 200 OK")
        sock.sendall(second)
        head, body = _response(sock)
        assert head.startswith(b"HTTP/1.1 " + status) and b'"Code":"InvalidParameter"' in body
        assert b"Connection: close" in head
    _answered(srv)
