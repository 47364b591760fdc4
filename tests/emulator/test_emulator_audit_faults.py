"""The audit trail (every call, never a secret) and fault injection (before any change)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_tea_openapi.exceptions import ServerException, ThrottlingException
from darabonba.exceptions import UnretryableException

from kmsbeam import ConfigurationError
from kmsbeam.emulator import AccessKey, EmulatorServer, Faults
from tests.emulator.conftest import call_raw, client_for, sdk_error

DENY_DECRYPT = {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
                             {"Effect": "Deny", "Action": "kms:Decrypt", "Resource": "*"}]}  # fmt: skip


def _records(server: EmulatorServer) -> list[dict]:  # type: ignore[type-arg]
    return [json.loads(line) for line in server.audit.path.read_text().splitlines()]


def test_audit_records_every_call_and_no_secret(tmp_path: Path) -> None:
    keys = [AccessKey("root", "root-secret-1234"), AccessKey("limited", "limited-secret-9876", policy=DENY_DECRYPT)]
    with EmulatorServer(tmp_path / "data", keys, rotation_check_seconds=None) as srv:
        root, limited = client_for(srv.endpoint, "root", "root-secret-1234"), client_for(
            srv.endpoint, "limited", "limited-secret-9876")  # fmt: skip
        key = root.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        dk = root.generate_data_key(models.GenerateDataKeyRequest(key_id=key, encryption_context={"pii": "ssn-123-45"})).body
        enc = root.encrypt(models.EncryptRequest(key_id=key, plaintext="my plaintext")).body
        root.decrypt(models.DecryptRequest(ciphertext_blob=enc.ciphertext_blob))
        sdk_error(lambda: limited.decrypt(models.DecryptRequest(ciphertext_blob=enc.ciphertext_blob)))
        sdk_error(lambda: root.decrypt(models.DecryptRequest(ciphertext_blob=dk.ciphertext_blob)))
        call_raw(srv.endpoint, "ListKeys", {}, ak="root", secret="wrong")
        records = _records(srv)
        mode = stat.S_IMODE(srv.audit.path.stat().st_mode)
    assert mode == 0o600
    assert [(r["eventName"], r["outcome"], r.get("errorCode")) for r in records] == [
        ("CreateKey", "success", None), ("GenerateDataKey", "success", None),
        ("Encrypt", "success", None), ("Decrypt", "success", None),
        ("Decrypt", "error", "Forbidden.NoPermission"), ("Decrypt", "error", "InvalidCiphertext"),
        ("ListKeys", "error", "SignatureDoesNotMatch")]  # fmt: skip
    gdk = records[1]
    assert gdk["keyId"] == key and gdk["keyVersionId"] == dk.key_version_id
    assert gdk["userIdentity"] == {"type": "access-key", "accessKeyId": "root"}
    assert gdk["sourceIpAddress"] == "127.0.0.1" and gdk["requestId"] == dk.request_id
    assert gdk["httpStatus"] == 200 and gdk["eventTime"].endswith("Z")
    assert records[4]["userIdentity"]["accessKeyId"] == "limited" and records[4]["keyId"] == key
    assert records[6]["userIdentity"] == {"type": "unknown", "accessKeyId": "root"}
    text = srv.audit.path.read_text()
    for secret in ("root-secret-1234", "limited-secret-9876", "my plaintext", "ssn-123-45",
                   dk.plaintext, dk.ciphertext_blob, enc.ciphertext_blob, "bXkgcGxhaW50ZXh0"):  # fmt: skip
        assert secret not in text


def test_data_files_are_private(tmp_path: Path) -> None:
    with EmulatorServer(tmp_path / "data", {"a": "b"}, rotation_check_seconds=None) as srv:
        client_for(srv.endpoint, "a", "b").create_key(models.CreateKeyRequest())
        files = sorted(p for p in (tmp_path / "data").iterdir() if p.is_file())
        assert {p.name for p in files} >= {"keystore.db", "audit.jsonl"}
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700


@pytest.fixture()
def faulty(tmp_path: Path) -> EmulatorServer:
    srv = EmulatorServer(tmp_path, {"a": "b"}, rotation_check_seconds=None).start()
    yield srv  # type: ignore[misc]
    srv.stop()


def _count(srv: EmulatorServer) -> int:
    return len(srv.engine.list_keys())


def test_throttling(faulty: EmulatorServer) -> None:
    faulty.faults = Faults(throttle_rate=1.0, retry_after_ms=250)
    client = client_for(faulty.endpoint, "a", "b")
    err = sdk_error(lambda: client.create_key(models.CreateKeyRequest()))
    assert isinstance(err, ThrottlingException)
    assert (err.code, err.status_code, err.retry_after) == ("Rejected.Throttling", 429, 250)
    assert _count(faulty) == 0  # the throttled CreateKey changed nothing
    assert _records(faulty)[-1]["errorCode"] == "Rejected.Throttling"


def test_server_errors(faulty: EmulatorServer) -> None:
    faulty.faults = Faults(error_rate=1.0, seed=3)
    client = client_for(faulty.endpoint, "a", "b")
    seen = set()
    for _ in range(12):
        err = sdk_error(lambda: client.create_key(models.CreateKeyRequest()))
        assert isinstance(err, ServerException)
        seen.add((err.code, err.status_code))
    assert seen == {("ServiceUnavailableTemporary", 503), ("InternalFailure", 500)}
    assert _count(faulty) == 0


def test_dropped_connections(faulty: EmulatorServer) -> None:
    faulty.faults = Faults(drop_rate=1.0)
    client = client_for(faulty.endpoint, "a", "b")
    err = sdk_error(lambda: client.create_key(models.CreateKeyRequest()))
    assert isinstance(err, UnretryableException)
    assert _count(faulty) == 0 and _records(faulty)[-1]["outcome"] == "dropped"
    faulty.faults = None
    assert client.create_key(models.CreateKeyRequest()).body.key_metadata.key_id
    assert _count(faulty) == 1


def test_latency_is_waited_before_the_call(faulty: EmulatorServer) -> None:
    waits: list[tuple[float, int]] = []
    faulty.faults = Faults(latency_ms=250, sleep=lambda s: waits.append((s, _count(faulty))))
    client = client_for(faulty.endpoint, "a", "b")
    client.create_key(models.CreateKeyRequest())
    client.list_keys(models.ListKeysRequest())
    assert waits == [(0.25, 0), (0.25, 1)]  # each wait happened before its call did anything


def test_seeded_faults_repeat(faulty: EmulatorServer) -> None:
    def outcomes() -> list[str]:
        faulty.faults = Faults(throttle_rate=0.3, error_rate=0.3, seed=42)
        client, out = client_for(faulty.endpoint, "a", "b"), []
        for _ in range(20):
            try:
                client.list_keys(models.ListKeysRequest())
                out.append("ok")
            except Exception as exc:
                out.append(str(getattr(exc, "code", "")))
        return out

    first = outcomes()
    assert first == outcomes() and {"ok", "Rejected.Throttling"} <= set(first)


@pytest.mark.parametrize("kwargs", [{"throttle_rate": 1.5}, {"error_rate": -0.1},
                                    {"throttle_rate": 0.6, "drop_rate": 0.6}, {"latency_ms": -1},
                                    {"retry_after_ms": 0}])  # fmt: skip
def test_bad_fault_settings(kwargs: dict) -> None:  # type: ignore[type-arg]
    with pytest.raises(ConfigurationError):
        Faults(**kwargs)
