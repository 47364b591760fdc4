"""The emulator's KMS 3.0 instance gateway, driven only through the official instance SDK
(``alibabacloud-dkms-gcs``) in its own virtualenv: one subprocess per test runs a list of
steps (a small program, ``SDK_SCRIPT``) and prints their outcomes as JSON."""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
import subprocess
import time
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsbeam.alikms import sdk_dir
from kmsbeam.emulator import EmulatorServer

PYTHON = sdk_dir() / "bin" / "python"  # .ci/install puts the SDK there: a missing one fails the tests
PASSWORD = "client-key-password-7d1e"


# Steps: {"op": "AdvanceGenerateDataKey" | ..., "client": NAME, "args": {...}} where an
# argument "b64:..." is bytes and "$I.Field" is field Field of step I's answer. Outcomes:
# {"ok": {field: value, bytes as "b64:..."}} | {"error": {"code", "message", "http"}} |
# {"exception": "TypeName"} (a failure before an answer: TLS, a wrong password, ...).
SDK_SCRIPT = r'''
import base64, json, sys
from Tea.exceptions import TeaException, UnretryableException
from openapi.models import Config
from openapi_util.models import RuntimeOptions
from sdk import models
from sdk.client import Client

spec = json.load(sys.stdin)
clients, outs = {}, []
REQUESTS = {
    "AdvanceGenerateDataKey": (models.AdvanceGenerateDataKeyRequest, "advance_generate_data_key_with_options"),
    "AdvanceEncrypt": (models.AdvanceEncryptRequest, "advance_encrypt_with_options"),
    "AdvanceDecrypt": (models.AdvanceDecryptRequest, "advance_decrypt_with_options"),
    "GenerateDataKey": (models.GenerateDataKeyRequest, "generate_data_key_with_options"),
    "Encrypt": (models.EncryptRequest, "encrypt_with_options"),
    "Decrypt": (models.DecryptRequest, "decrypt_with_options"),
    "GenerateRandom": (models.GenerateRandomRequest, "generate_random_with_options"),
}

def value(v):
    if isinstance(v, str) and v.startswith("b64:"):
        return base64.b64decode(v[4:])
    if isinstance(v, str) and v.startswith("$"):
        index, field = v[1:].split(".")
        return value(outs[int(index)]["ok"][field])
    return v

def plain(v):
    return "b64:" + base64.b64encode(v).decode() if isinstance(v, bytes) else v

for step in spec["steps"]:
    try:
        name = step["client"]
        if name not in clients:
            c = spec["clients"][name]
            if "sign_with" in c:  # one ClientKey's id, another's private key: a bad signature
                from openapi_util.client import Client as Util
                pem = lambda f: Util.get_private_pem_from_pk_12(base64.b64decode(
                    json.load(open(f))["PrivateKeyData"]), c["password"])
                config = Config(protocol="https", endpoint=c["endpoint"], ca_file_path=c["ca"],
                                access_key_id=json.load(open(c["key_file"]))["KeyId"],
                                private_key=pem(c["sign_with"]))
            else:
                config = Config(protocol="https", endpoint=c["endpoint"],
                                client_key_file=c["key_file"], password=c["password"],
                                ca_file_path=c["ca"])
            clients[name] = Client(config)
        request_type, method = REQUESTS[step["op"]]
        request = request_type(**{k: value(v) for k, v in step["args"].items()})
        answer = getattr(clients[name], method)(request, RuntimeOptions(autoretry=False))
        fields = {k: plain(v) for k, v in answer.to_map().items() if k != "responseHeaders"}
        outs.append({"ok": fields})
    except TeaException as exc:
        outs.append({"error": {"code": exc.code, "message": exc.message,
                               "http": (exc.data or {}).get("httpCode")}})
    except UnretryableException as exc:
        outs.append({"exception": type(exc.inner_exception).__name__})
    except Exception as exc:
        outs.append({"exception": type(exc).__name__})
print(json.dumps(outs))
'''


def b64(data: bytes) -> str:
    return "b64:" + base64.b64encode(data).decode()


def unb64(text: str) -> bytes:
    assert text.startswith("b64:")
    return base64.b64decode(text[4:])


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    data = tmp_path_factory.mktemp("gateway-data")
    with EmulatorServer(data, {"admin": "admin-secret-1"}, rotation_check_seconds=None,
                        instance_gateway=True) as server:  # fmt: skip
        yield server


@pytest.fixture(scope="module")
def keys(gateway: EmulatorServer) -> dict[str, str]:
    engine = gateway.engine
    names = ("main", "other", "off", "rot", "gone")
    out = {name: engine.create_key(name).key_id for name in names}
    engine.create_alias("alias/pii", out["main"])
    engine.disable_key(out["off"])
    engine.schedule_key_deletion(out["gone"], 7)
    return out


@pytest.fixture(scope="module")
def clients(gateway: EmulatorServer, keys: dict[str, str],
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, str]]:  # fmt: skip
    home = tmp_path_factory.mktemp("client-keys")
    base = {"endpoint": gateway.instance_endpoint, "ca": gateway.instance_ca_file,
            "password": PASSWORD}  # fmt: skip
    out: dict[str, dict[str, str]] = {}
    gateway.issue_client_key(home / "all.json", PASSWORD)
    out["all"] = {**base, "key_file": str(home / "all.json")}
    gateway.issue_client_key(home / "pii.json", PASSWORD, keys=["alias/pii"])
    out["pii"] = {**base, "key_file": str(home / "pii.json")}
    out["badpass"] = {**out["all"], "password": "not-the-password"}
    return out


def run_sdk(clients: dict[str, dict[str, str]], steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    spec = json.dumps({"clients": clients, "steps": steps})
    done = subprocess.run([str(PYTHON), "-c", SDK_SCRIPT], input=spec, capture_output=True,
                          text=True, timeout=60, env={**os.environ, "PYTHONWARNINGS": "ignore"})  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    outs: list[dict[str, Any]] = json.loads(done.stdout)
    return outs


def step(op: str, client: str = "all", **args: Any) -> dict[str, Any]:
    return {"op": op, "client": client, "args": args}


def audit(gateway: EmulatorServer) -> list[dict[str, Any]]:
    lines = gateway.audit.path.read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines]


def test_advance_round_trips_and_alias(gateway: EmulatorServer, keys: dict[str, str],
                                       clients: dict[str, dict[str, str]]) -> None:  # fmt: skip
    aad = b"table=users;column=email"
    outs = run_sdk(clients, [
        step("AdvanceGenerateDataKey", key_id="alias/pii", aad=b64(aad)),
        step("AdvanceDecrypt", ciphertext_blob="$0.CiphertextBlob", aad=b64(aad)),
        step("AdvanceEncrypt", key_id=keys["main"], plaintext=b64(b"hello"), aad=b64(aad)),
        step("AdvanceDecrypt", ciphertext_blob="$2.CiphertextBlob", aad=b64(aad)),
        step("AdvanceGenerateDataKey", key_id=keys["main"], number_of_bytes=16),
        step("AdvanceDecrypt", ciphertext_blob="$4.CiphertextBlob"),
        step("GenerateDataKey", key_id="alias/pii", aad=b64(aad)),
        step("Decrypt", key_id="alias/pii", ciphertext_blob="$6.CiphertextBlob", iv="$6.Iv",
             aad=b64(aad)),
        step("Encrypt", key_id="alias/pii", plaintext=b64(b"plain")),
        step("Decrypt", key_id="alias/pii", ciphertext_blob="$8.CiphertextBlob", iv="$8.Iv"),
    ])  # fmt: skip
    assert all("ok" in o for o in outs), outs
    gen, dec = outs[0]["ok"], outs[1]["ok"]
    assert gen["KeyId"] == keys["main"]  # resolved from the alias
    assert len(unb64(gen["Plaintext"])) == 32 and gen["Algorithm"] == "AES_GCM"
    assert unb64(dec["Plaintext"]) == unb64(gen["Plaintext"])
    assert dec["KeyId"] == keys["main"] and dec["KeyVersionId"] == gen["KeyVersionId"]
    assert len(unb64(gen["Iv"])) == 12 and gen["RequestId"]
    assert unb64(outs[3]["ok"]["Plaintext"]) == b"hello"
    assert outs[2]["ok"]["KeyVersionId"] == gen["KeyVersionId"]
    assert len(unb64(outs[4]["ok"]["Plaintext"])) == 16
    assert outs[5]["ok"]["Plaintext"] == outs[4]["ok"]["Plaintext"]
    assert outs[7]["ok"]["Plaintext"] == outs[6]["ok"]["Plaintext"]  # the plain actions too
    assert unb64(outs[9]["ok"]["Plaintext"]) == b"plain" and outs[8]["ok"]["KeyId"] == keys["main"]


def test_failures_answer_the_gateways_codes(gateway: EmulatorServer, keys: dict[str, str],
                                            clients: dict[str, dict[str, str]]) -> None:  # fmt: skip
    outs = run_sdk(clients, [
        step("AdvanceEncrypt", key_id=keys["main"], plaintext=b64(b"x" * 40), aad=b64(b"A")),
        step("AdvanceDecrypt", ciphertext_blob="$0.CiphertextBlob", aad=b64(b"B")),
        step("AdvanceDecrypt", ciphertext_blob="$0.CiphertextBlob"),
        step("AdvanceGenerateDataKey", key_id=keys["off"]),
        step("AdvanceGenerateDataKey", key_id="alias/nope"),
        step("AdvanceGenerateDataKey", key_id="key-" + "0" * 32),
        step("AdvanceGenerateDataKey", key_id=keys["main"], number_of_bytes=1025),
        step("GenerateRandom", length=16),
        step("AdvanceEncrypt", key_id=keys["gone"], plaintext=b64(b"x")),
    ])  # fmt: skip
    blob = unb64(outs[0]["ok"]["CiphertextBlob"])
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    more = run_sdk(clients, [step("AdvanceDecrypt", ciphertext_blob=b64(tampered), aad=b64(b"A"))])
    codes = [(o["error"]["code"], o["error"]["http"]) for o in outs[1:] + more]
    assert codes == [
        ("InvalidCiphertext", 400), ("InvalidCiphertext", 400), ("Rejected.Disabled", 409),
        ("Forbidden.AliasNotFound", 404), ("Forbidden.KeyNotFound", 404),
        ("InvalidParameter", 400), ("InvalidApiName", 400), ("Rejected.PendingDeletion", 409),
        ("InvalidCiphertext", 400),
    ]


def test_rotation_old_blobs_decrypt_and_new_name_new_version(
    gateway: EmulatorServer, keys: dict[str, str], clients: dict[str, dict[str, str]]
) -> None:
    before = run_sdk(clients, [step("AdvanceGenerateDataKey", key_id=keys["rot"])])[0]["ok"]
    new_version = gateway.engine.create_key_version(keys["rot"]).key_version_id
    outs = run_sdk(clients, [
        step("AdvanceDecrypt", ciphertext_blob=b64(unb64(before["CiphertextBlob"]))),
        step("AdvanceGenerateDataKey", key_id=keys["rot"]),
    ])  # fmt: skip
    assert outs[0]["ok"]["Plaintext"] == before["Plaintext"]
    assert outs[0]["ok"]["KeyVersionId"] == before["KeyVersionId"] != new_version
    assert outs[1]["ok"]["KeyVersionId"] == new_version


def test_client_keys_permissions_and_authentication(
    gateway: EmulatorServer, keys: dict[str, str], clients: dict[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    stranger = tmp_path / "stranger.json"  # a well-formed ClientKey the gateway never issued
    other = EmulatorServer(tmp_path / "elsewhere", {"x": "y"}, rotation_check_seconds=None)
    try:
        other.issue_client_key(stranger, PASSWORD)
    finally:
        other.stop()
    assert stat.S_IMODE(stranger.stat().st_mode) == 0o600
    wrong_ca = str(tmp_path / "elsewhere" / "gateway-ca.pem")
    EmulatorServer(tmp_path / "elsewhere", {"x": "y"}, rotation_check_seconds=None,
                   instance_gateway=True).start().stop()  # makes that dir's CA  # fmt: skip
    more = {**clients, "stranger": {**clients["all"], "key_file": str(stranger)},
            "forger": {**clients["all"], "sign_with": clients["pii"]["key_file"]},
            "wrongca": {**clients["all"], "ca": wrong_ca}}  # fmt: skip
    outs = run_sdk(more, [
        step("AdvanceGenerateDataKey", "pii", key_id="alias/pii"),
        step("AdvanceGenerateDataKey", "pii", key_id=keys["main"]),  # the alias's key: allowed
        step("AdvanceGenerateDataKey", "pii", key_id=keys["other"]),
        step("AdvanceEncrypt", "all", key_id=keys["other"], plaintext=b64(b"p")),
        step("AdvanceDecrypt", "pii", ciphertext_blob="$3.CiphertextBlob"),
        step("AdvanceGenerateDataKey", "stranger", key_id=keys["main"]),
        step("AdvanceGenerateDataKey", "badpass", key_id=keys["main"]),
        step("AdvanceGenerateDataKey", "forger", key_id=keys["main"]),
    ])  # fmt: skip
    # its own process: the SDK pools one session per endpoint, whatever the CA
    outs += run_sdk(more, [step("AdvanceGenerateDataKey", "wrongca", key_id=keys["main"])])
    assert "ok" in outs[0] and "ok" in outs[1] and "ok" in outs[3]
    assert outs[2]["error"]["code"] == outs[4]["error"]["code"] == "Forbidden.NoPermission"
    assert outs[2]["error"]["http"] == 403
    assert (outs[5]["error"]["code"], outs[5]["error"]["http"]) == ("Unauthorized", 404)
    assert outs[6] == {"exception": "Error"}  # OpenSSL.crypto.Error: the PKCS#12 did not open
    assert (outs[7]["error"]["code"], outs[7]["error"]["http"]) == ("SignatureNotMatch", 401)
    assert "CERTIFICATE_VERIFY_FAILED" in outs[8]["error"]["message"]  # the SDK's RetryError


def test_audit_records_each_call_without_secrets(
    gateway: EmulatorServer, keys: dict[str, str], clients: dict[str, dict[str, str]]
) -> None:
    start = len(audit(gateway))
    outs = run_sdk(clients, [
        step("AdvanceGenerateDataKey", key_id="alias/pii", aad=b64(b"secret-aad-1")),
        step("AdvanceDecrypt", ciphertext_blob="$0.CiphertextBlob", aad=b64(b"secret-aad-1")),
        step("AdvanceDecrypt", ciphertext_blob="$0.CiphertextBlob", aad=b64(b"wrong")),
        step("AdvanceGenerateDataKey", "pii", key_id=keys["other"]),
    ])  # fmt: skip
    records = audit(gateway)[start:]
    assert [r["eventName"] for r in records] == ["AdvanceGenerateDataKey", "AdvanceDecrypt",
                                                 "AdvanceDecrypt", "AdvanceGenerateDataKey"]  # fmt: skip
    assert [r["outcome"] for r in records] == ["success", "success", "error", "error"]
    assert [r.get("errorCode") for r in records] == [None, None, "InvalidCiphertext",
                                                     "Forbidden.NoPermission"]  # fmt: skip
    assert all(r["userIdentity"]["type"] == "client-key" for r in records)
    assert records[0]["keyId"] == keys["main"]
    assert records[0]["keyVersionId"] == outs[0]["ok"]["KeyVersionId"]
    text = json.dumps(records)
    gen = outs[0]["ok"]
    for secret in (gen["Plaintext"][4:], gen["CiphertextBlob"][4:], "secret-aad-1",
                   base64.b64encode(b"secret-aad-1").decode(), unb64(gen["Plaintext"]).hex()):
        assert secret not in text


def test_instance_blobs_and_2016_blobs_never_cross(gateway: EmulatorServer,
                                                    keys: dict[str, str]) -> None:  # fmt: skip
    engine = gateway.engine
    instance = engine.encrypt_with_aad(keys["main"], b"payload", b"").ciphertext_blob
    classic = engine.encrypt(keys["main"], b"payload").ciphertext_blob
    with pytest.raises(Exception) as first:
        engine.decrypt(instance)
    with pytest.raises(Exception) as second:
        engine.decrypt_with_aad(classic, b"")
    assert getattr(first.value, "code", None) == getattr(second.value, "code", None) == "InvalidCiphertext"
    assert engine.decrypt_with_aad(instance, b"").plaintext == b"payload"


def _closed_by_server(host: str, port: int, junk: bytes) -> bool:
    """Send ``junk`` (maybe nothing) and wait for the server to close: ``True`` if it did."""
    with socket.create_connection((host, port), timeout=10) as sock:
        try:
            sock.sendall(junk)
            while sock.recv(4096):
                pass
        except (TimeoutError, socket.timeout):
            return False
        except OSError:
            pass  # reset: closed as well
    return True


def test_garbage_and_silent_clients_do_not_wedge_it(
    gateway: EmulatorServer, keys: dict[str, str], clients: dict[str, dict[str, str]],
    tmp_path: Path,
) -> None:
    host, port = gateway.instance_endpoint.rsplit(":", 1)
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"\x16\x03\x01\x00\x05garbage"):
        assert _closed_by_server(host, int(port), junk)
    assert "ok" in run_sdk(clients, [step("AdvanceGenerateDataKey", key_id=keys["main"])])[0]
    ca_key = Path(gateway.data_dir / "gateway-ca.key")
    assert stat.S_IMODE(ca_key.stat().st_mode) == 0o600
    with EmulatorServer(tmp_path, {"a": "b"}, rotation_check_seconds=None, instance_gateway=True,
                        request_timeout=0.5, instance_max_connections=2) as small:  # fmt: skip
        host, port = small.instance_endpoint.rsplit(":", 1)
        assert _closed_by_server(host, int(port), b"")  # silent: closed at the deadline
        assert _closed_by_server(host, int(port), b"\x16\x03\x01")  # a stalled handshake


def test_client_keys_and_ca_survive_a_restart(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with EmulatorServer(data, {"a": "b"}, rotation_check_seconds=None,
                        instance_gateway=True) as first:  # fmt: skip
        key = first.engine.create_key().key_id
        first.issue_client_key(tmp_path / "ck.json", PASSWORD)
        ca = Path(first.instance_ca_file).read_bytes()
    with EmulatorServer(data, {"a": "b"}, rotation_check_seconds=None,
                        instance_gateway=True) as second:  # fmt: skip
        assert Path(second.instance_ca_file).read_bytes() == ca
        client = {"endpoint": second.instance_endpoint, "ca": second.instance_ca_file,
                  "password": PASSWORD, "key_file": str(tmp_path / "ck.json")}  # fmt: skip
        outs = run_sdk({"c": client}, [step("AdvanceGenerateDataKey", "c", key_id=key),
                                       step("AdvanceDecrypt", "c", ciphertext_blob="$0.CiphertextBlob")])
    assert outs[1]["ok"]["Plaintext"] == outs[0]["ok"]["Plaintext"]
    assert sys.executable  # kmsbeam's interpreter never imported the SDK
    assert "sdk" not in sys.modules


def test_connections_past_the_bound_are_closed(tmp_path: Path) -> None:
    with EmulatorServer(tmp_path / "d", {"a": "b"}, rotation_check_seconds=None,
                        instance_gateway=True, instance_max_connections=1,
                        request_timeout=30.0) as server:  # fmt: skip
        key = server.engine.create_key().key_id
        server.issue_client_key(tmp_path / "ck.json", PASSWORD)
        host, port = server.instance_endpoint.rsplit(":", 1)
        gateway = server._gateway
        assert gateway is not None
        with socket.create_connection((host, int(port)), timeout=10) as holder:
            while gateway.open_connections < 1:  # wait for the holder to be admitted
                time.sleep(0.01)
            assert _closed_by_server(host, int(port), b"")  # the one slot is taken
            assert holder.fileno() >= 0
        while gateway.open_connections:  # the holder left: its slot frees
            time.sleep(0.01)
        client = {"endpoint": server.instance_endpoint, "ca": server.instance_ca_file,
                  "password": PASSWORD, "key_file": str(tmp_path / "ck.json")}  # fmt: skip
        outs = run_sdk({"c": client}, [step("AdvanceGenerateDataKey", "c", key_id=key)])
    assert "ok" in outs[0]
