"""The emulator under slow and idle clients: bounded threads and connections, deadlines.

Hundreds of loopback connections are held open (silent, a partial head, a head dribbled a
byte at a time, a partial body) while an official SDK client calls the emulator; the SDK
client must be answered within a liveness bound, the emulator's threads stay within their
bound, and the slow connections are closed by the server's deadlines.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from alibabacloud_kms20160120 import models

from kmsbeam.emulator import EmulatorServer
from tests.emulator.conftest import client_for

LIVENESS_SECONDS = 10.0
AK, SECRET = "load", "load-secret-91"
HELD = 150  # connections of each kind of slow client (450 in all)
WORKERS = 8


def _threads() -> int:
    """Every thread of this process (the emulator serves from it)."""
    return threading.active_count()


def _connect(endpoint: str, stack: ExitStack) -> socket.socket:
    host, port = endpoint.rsplit(":", 1)
    sock = stack.enter_context(socket.create_connection((host, int(port)), timeout=LIVENESS_SECONDS))
    return sock


def _closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed this connection (EOF or reset), waiting at most the bound."""
    sock.settimeout(LIVENESS_SECONDS)
    try:
        while sock.recv(4096):
            pass
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False
    return True


@pytest.fixture()
def loaded(tmp_path: Path) -> Iterator[EmulatorServer]:
    """Deadlines of 2 s: slow clients are closed soon."""
    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None, workers=WORKERS,
                        request_timeout=2.0, idle_timeout=2.0) as srv:  # fmt: skip
        yield srv


def _slow_clients(endpoint: str, stack: ExitStack, n: int) -> dict[str, list[socket.socket]]:
    """``n`` connections of each kind: silent, a partial head, a partial body."""
    kinds = {"silent": b"", "partial head": b"POST /?Action=ListKeys HTTP/1.1\r\nHost: x\r\n",
             "partial body": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{"}  # fmt: skip
    groups: dict[str, list[socket.socket]] = {}
    for kind, data in kinds.items():
        groups[kind] = [_connect(endpoint, stack) for _ in range(n)]
        for sock in groups[kind] if data else ():
            sock.sendall(data)
    return groups


def test_slow_clients_do_not_starve_an_sdk_client(tmp_path: Path) -> None:
    before = _threads()
    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None, workers=WORKERS,
                        request_timeout=120.0) as srv, ExitStack() as stack:  # fmt: skip
        assert srv._http is not None  # noqa: SLF001
        _slow_clients(srv.endpoint, stack, HELD)
        assert srv._http.wait_for_connections(at_least=3 * HELD, timeout=LIVENESS_SECONDS)  # noqa: SLF001
        start = time.monotonic()
        client = client_for(srv.endpoint, AK, SECRET)
        key = client.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        assert client.generate_data_key(models.GenerateDataKeyRequest(key_id=key)).body.plaintext
        assert time.monotonic() - start < LIVENESS_SECONDS
        assert srv._http.open_connections >= 3 * HELD  # noqa: SLF001 - still held meanwhile
        assert _threads() - before <= WORKERS + 1  # the I/O thread and the pool, no more
        stack.close()  # the slow clients go away
        assert srv._http.wait_for_connections(at_most=1, timeout=LIVENESS_SECONDS)  # noqa: SLF001
        assert _threads() - before <= WORKERS + 1
        assert client.list_keys(models.ListKeysRequest()).body.total_count == 1


def test_slow_clients_are_closed_by_the_request_deadline(loaded: EmulatorServer) -> None:
    stop_dribbling = threading.Event()
    with ExitStack() as stack:
        groups = _slow_clients(loaded.endpoint, stack, 25)
        groups["dribbled"] = dribbled = [_connect(loaded.endpoint, stack) for _ in range(25)]

        def dribble() -> None:  # one byte per connection per round, until the server closes
            line = b"POST /?Action=ListKeys HTTP/1.1\r\nx-slow: " + b"a" * 10_000
            for i in range(len(line)):
                for sock in dribbled:
                    try:
                        sock.send(line[i : i + 1])
                    except OSError:
                        pass
                if stop_dribbling.wait(0.05):
                    return

        dribbler = threading.Thread(target=dribble, daemon=True)
        dribbler.start()
        try:
            for kind, group in groups.items():  # activity does not extend the deadline
                assert all(_closed_by_server(sock) for sock in group), kind
        finally:
            stop_dribbling.set()
            dribbler.join(LIVENESS_SECONDS)
    assert loaded._http is not None and loaded._http.wait_for_connections(at_most=0, timeout=LIVENESS_SECONDS)  # noqa: SLF001


def test_past_the_connection_cap_the_longest_waiting_is_closed(tmp_path: Path) -> None:
    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None, workers=4,
                        max_connections=20) as srv, ExitStack() as stack:  # fmt: skip
        held = [_connect(srv.endpoint, stack) for _ in range(20)]
        assert srv._http is not None  # noqa: SLF001
        assert srv._http.wait_for_connections(at_least=20, timeout=LIVENESS_SECONDS)  # noqa: SLF001
        start = time.monotonic()
        assert client_for(srv.endpoint, AK, SECRET).list_keys(models.ListKeysRequest()).body.request_id
        assert time.monotonic() - start < LIVENESS_SECONDS
        assert _closed_by_server(held[0])  # the oldest idle connection made room
        assert srv._http.open_connections <= 20  # noqa: SLF001


def test_an_idle_keep_alive_connection_is_closed(loaded: EmulatorServer) -> None:
    import http.client

    from tests.emulator.conftest import signed_headers

    host, port = loaded.endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=LIVENESS_SECONDS)
    try:
        conn.request("POST", "/?", body=b"", headers=signed_headers(loaded.endpoint, "ListKeys", {},
                                                                     ak=AK, secret=SECRET))  # fmt: skip
        assert conn.getresponse().read()
        assert conn.sock is not None and _closed_by_server(conn.sock)
    finally:
        conn.close()


def test_pipelined_requests_are_answered_in_order(loaded: EmulatorServer) -> None:
    from tests.emulator.conftest import signed_headers

    def request(page_size: str, close: bool) -> bytes:
        headers = signed_headers(loaded.endpoint, "ListKeys", {"PageSize": page_size}, ak=AK, secret=SECRET)
        lines = [f"POST /?PageSize={page_size} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items()),
                 "Content-Length: 0", *(["Connection: close"] if close else [])]  # fmt: skip
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    with ExitStack() as stack:
        sock = _connect(loaded.endpoint, stack)
        sock.sendall(request("1", False) + request("2", False) + request("3", True))  # one send
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.count(b"HTTP/1.1 200 OK") == 3
    assert data.index(b'"PageSize":1') < data.index(b'"PageSize":2') < data.index(b'"PageSize":3')


def test_slow_large_bodies_cannot_exhaust_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import kmsbeam.emulator._http as http_server

    monkeypatch.setattr(http_server, "MAX_BUFFERED", 300_000)  # the budget, made small
    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None, request_timeout=60.0) as srv, \
            ExitStack() as stack:  # fmt: skip
        senders = [_connect(srv.endpoint, stack) for _ in range(4)]
        for sock in senders:  # 4 x 100 KB of 1 MiB bodies that never finish
            sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1048576\r\n\r\n" + b"x" * 100_000)
        readable, _, _ = select.select(senders, [], [], LIVENESS_SECONDS)  # long before 60 s
        assert len(readable) == 1 and _closed_by_server(readable[0])  # the budget closed one
        assert client_for(srv.endpoint, AK, SECRET).list_keys(models.ListKeysRequest()).body.request_id


def test_when_every_connection_is_being_served_a_newcomer_gets_503(tmp_path: Path) -> None:
    from kmsbeam.emulator import Faults

    arrived, release = threading.Semaphore(0), threading.Event()

    def hold(_: float) -> None:  # the injected latency: a call waits here until released
        arrived.release()
        release.wait(LIVENESS_SECONDS)

    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None, workers=2, max_connections=2,
                        faults=Faults(latency_ms=1, sleep=hold)) as srv:  # fmt: skip
        callers = [threading.Thread(target=lambda: client_for(srv.endpoint, AK, SECRET).list_keys(
            models.ListKeysRequest())) for _ in range(2)]  # fmt: skip
        for caller in callers:
            caller.start()
        try:
            assert arrived.acquire(timeout=LIVENESS_SECONDS) and arrived.acquire(timeout=LIVENESS_SECONDS)
            with ExitStack() as stack:  # both connections are in calls: nothing to make room
                sock = _connect(srv.endpoint, stack)
                data = b""
                while chunk := sock.recv(65536):
                    data += chunk
            assert data.startswith(b"HTTP/1.1 503 ") and b'"Code":"ServiceUnavailableTemporary"' in data
        finally:
            release.set()
            for caller in callers:
                caller.join(LIVENESS_SECONDS)
        assert client_for(srv.endpoint, AK, SECRET).list_keys(models.ListKeysRequest()).body.request_id
