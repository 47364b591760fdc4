"""Server lifecycle: persistence across restarts, concurrency, stopping, nonce memory."""

from __future__ import annotations

import http.client
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client

from kmsbeam import ConfigurationError
from kmsbeam.emulator import AccessKey, EmulatorServer
from tests.emulator.conftest import call_raw, client_for, sdk_error, signed_headers


def test_keys_survive_a_restart(tmp_path: Path) -> None:
    with EmulatorServer(tmp_path, {"a": "b"}, rotation_check_seconds=None) as first:
        client = Client(first.sdk_config("a"))
        key = client.create_key(models.CreateKeyRequest(description="kept")).body.key_metadata.key_id
        client.create_alias(models.CreateAliasRequest(alias_name="alias/kept", key_id=key))
        dk = client.generate_data_key(models.GenerateDataKeyRequest(key_id="alias/kept", encryption_context={"a": "1"})).body
        old_port = first.port
    with pytest.raises(OSError):
        http.client.HTTPConnection("127.0.0.1", old_port, timeout=5).request("GET", "/")
    with EmulatorServer(tmp_path, {"a": "b"}, rotation_check_seconds=None) as second:
        client = Client(second.sdk_config())
        out = client.decrypt(models.DecryptRequest(ciphertext_blob=dk.ciphertext_blob, encryption_context={"a": "1"}))
        assert (out.body.plaintext, out.body.key_id) == (dk.plaintext, key)
        assert client.describe_key(models.DescribeKeyRequest(key_id="alias/kept")).body.key_metadata.description == "kept"


def test_concurrent_sdk_clients(server: EmulatorServer, key_id: str) -> None:
    errors: list[BaseException] = []
    done: list[int] = []

    def work(n: int) -> None:
        try:
            client = client_for(server.endpoint, "admin", "admin-secret-3f9a")
            for i in range(25):
                ctx = {"worker": str(n), "i": str(i)}
                dk = client.generate_data_key(models.GenerateDataKeyRequest(key_id=key_id, encryption_context=ctx)).body
                out = client.decrypt(models.DecryptRequest(ciphertext_blob=dk.ciphertext_blob, encryption_context=ctx))
                assert out.body.plaintext == dk.plaintext
            done.append(n)
        except BaseException as exc:  # collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(done) == list(range(8))


def test_stop_closes_open_connections(tmp_path: Path) -> None:
    srv = EmulatorServer(tmp_path, {"admin": "admin-secret-3f9a"}, rotation_check_seconds=None).start()
    host, port = srv.endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    headers = signed_headers(srv.endpoint, "ListKeys", {})
    conn.request("POST", "/?", body=b"", headers=headers)
    assert conn.getresponse().read()
    srv.stop()
    srv.stop()  # idempotent
    with pytest.raises((OSError, http.client.HTTPException)):
        conn.request("POST", "/?" + urlencode({}), body=b"", headers=signed_headers(srv.endpoint, "ListKeys", {}))
        conn.getresponse()
    conn.close()
    with pytest.raises(RuntimeError):
        srv.start()


def test_lifecycle_errors(tmp_path: Path, server: EmulatorServer) -> None:
    idle = EmulatorServer(tmp_path, {"a": "b"}, rotation_check_seconds=None)
    with pytest.raises(RuntimeError, match="not started"):
        _ = idle.endpoint
    assert "not started" in repr(idle)
    idle.stop()
    busy = EmulatorServer(tmp_path / "x", {"a": "b"}, port=server.port, rotation_check_seconds=None)
    with pytest.raises(ConfigurationError, match="cannot listen"):
        busy.start()
    busy.stop()
    for bad in ({}, {"a": ""}, [AccessKey("a", "b"), AccessKey("a", "c")]):
        with pytest.raises(ConfigurationError):
            EmulatorServer(tmp_path, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        EmulatorServer(tmp_path, {"a": "b"}, port=70000)


def test_secrets_stay_out_of_reprs() -> None:
    key = AccessKey("ak", "very-secret", security_token="token-value", policy={"Statement": []})
    assert "very-secret" not in repr(key) and "token-value" not in repr(key) and "ak" in repr(key)


def test_nonces_are_forgotten_after_the_window(tmp_path: Path) -> None:
    now = [time.time()]
    with EmulatorServer(tmp_path, {"admin": "admin-secret-3f9a"}, clock=lambda: now[0],
                        rotation_check_seconds=None, max_nonces=3) as srv:  # fmt: skip
        auth = srv._service.authenticator  # noqa: SLF001 - the memory bound is the point

        def call() -> int:
            date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now[0]))
            return call_raw(srv.endpoint, "ListKeys", {}, date=date).status

        assert [call(), call(), call()] == [200, 200, 200] and auth.remembered_nonces == 3
        raw_status = call()
        assert raw_status == 429  # at the bound: throttled, never forgetting a live nonce
        now[0] += 16 * 60
        assert call() == 200 and auth.remembered_nonces == 1


def test_sdk_config_helper(server: EmulatorServer) -> None:
    config = server.sdk_config("STS.temp")
    assert (config.endpoint, config.protocol, config.security_token) == (server.endpoint, "http", "sts-token-0a0a")
    assert Client(config).list_keys(models.ListKeysRequest()).body.request_id
    assert sdk_error(lambda: Client(server.sdk_config("ingest")).list_keys(models.ListKeysRequest())).code == (
        "Forbidden.NoPermission")  # fmt: skip


def test_pytest_plugin(tmp_path: Path) -> None:
    import subprocess
    import sys

    (tmp_path / "test_uses_plugin.py").write_text(
        "from alibabacloud_kms20160120 import models\n"
        "from alibabacloud_kms20160120.client import Client\n\n"
        "def test_it(kms_emulator):\n"
        "    client = Client(kms_emulator.sdk_config())\n"
        "    key = client.create_key(models.CreateKeyRequest()).body.key_metadata.key_id\n"
        "    assert kms_emulator.engine.describe_key(key).key_state == 'Enabled'\n"
    )  # fmt: skip
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "kmsbeam.emulator.pytest_plugin",
                          "-p", "no:cacheprovider", "test_uses_plugin.py"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert out.returncode == 0 and "1 passed" in out.stdout, out.stdout + out.stderr


def test_public_api_is_pinned() -> None:
    import kmsbeam.emulator

    assert set(kmsbeam.emulator.__all__) == {"AUDIT_FILENAME", "AccessKey", "EmulatorServer", "Faults", "Policy"}
    assert all(hasattr(kmsbeam.emulator, name) for name in kmsbeam.emulator.__all__)
