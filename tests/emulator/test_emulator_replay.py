"""A signed request captured on the wire cannot be replayed, not even after a restart."""

from __future__ import annotations

import socket
import stat
import threading
import time
from pathlib import Path

from alibabacloud_kms20160120 import models

from kmsbeam.emulator import EmulatorServer
from tests.emulator.conftest import client_for

AK, SECRET = "replay", "replay-secret-42"


def _capture_sdk_request() -> bytes:
    """The exact bytes the official SDK sends for one call (to a socket that never answers)."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(30)
    captured: list[bytes] = []

    def take() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            data = b""
            while b"\r\n\r\n" not in data:
                data += conn.recv(65536)
            head, _, body = data.partition(b"\r\n\r\n")
            length = [int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length:")]  # fmt: skip
            while length and len(body) < length[0]:
                body += conn.recv(65536)
            captured.append(data)

    thread = threading.Thread(target=take)
    thread.start()
    client = client_for(f"127.0.0.1:{listener.getsockname()[1]}", AK, SECRET)
    try:
        client.list_keys(models.ListKeysRequest(page_size=5))
    except Exception:  # the capturing socket closes without an answer
        pass
    thread.join(30)
    listener.close()
    assert captured and captured[0].startswith(b"POST /?PageSize=5 ") and b"x-acs-signature-nonce" in captured[0]
    return captured[0]


def _send(endpoint: str, raw: bytes) -> bytes:
    host, port = endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(raw)
        sock.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_captured_sdk_request_does_not_replay_after_a_restart(tmp_path: Path) -> None:
    raw = _capture_sdk_request()
    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None) as first:
        assert _send(first.endpoint, raw).startswith(b"HTTP/1.1 200 ")  # genuine the first time
        assert b'"Code":"SignatureNonceUsed"' in _send(first.endpoint, raw)
    nonces = tmp_path / "nonces.log"
    assert stat.S_IMODE(nonces.stat().st_mode) == 0o600
    assert b"x-acs-signature-nonce" not in nonces.read_bytes()  # digests, not nonces
    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None) as second:
        answer = _send(second.endpoint, raw)
        assert answer.startswith(b"HTTP/1.1 400 ") and b'"Code":"SignatureNonceUsed"' in answer
        assert client_for(second.endpoint, AK, SECRET).list_keys(models.ListKeysRequest()).body.request_id


def test_the_persisted_window_forgets_what_expired(tmp_path: Path) -> None:
    now = [time.time()]
    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None, clock=lambda: now[0]) as srv:
        for _ in range(3):
            assert client_for(srv.endpoint, AK, SECRET).list_keys(models.ListKeysRequest()).body.request_id
    assert len((tmp_path / "nonces.log").read_text().splitlines()) == 3
    now[0] += 16 * 60  # past the 15-minute window: those nonces could not be replayed anyway
    with EmulatorServer(tmp_path, {AK: SECRET}, rotation_check_seconds=None, clock=lambda: now[0]) as srv:
        assert srv._service.authenticator.remembered_nonces == 0  # noqa: SLF001
    assert (tmp_path / "nonces.log").read_text() == ""
