"""``kmsbeam emulator serve``: a real process on a free port, config files, user mistakes."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alibabacloud_kms20160120 import models

from kmsbeam.pipelines.cli import build_parser, main
from kmsbeam.pipelines.emulator_cmd import _loopback, run_emulator
from tests.emulator.conftest import client_for, sdk_error

SECRET = "s3cr3t-never-printed"


def _key_file(path: Path, text: str = f"dev:{SECRET}\n", mode: int = 0o600) -> str:
    path.write_text(text)
    path.chmod(mode)
    return str(path)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serve_prints_the_endpoint_and_stops_cleanly(tmp_path: Path, sig: int) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "kmsbeam.pipelines", "emulator", "serve", "--port", "0",
         "--data", str(tmp_path / "kms"), "--access-key-file", _key_file(tmp_path / "keys")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        endpoint = re.search(r"http://(127\.0\.0\.1:\d+)", line)
        assert endpoint, line
        client = client_for(endpoint[1], "dev", SECRET)
        assert client.create_key(models.CreateKeyRequest()).body.key_metadata.key_state == "Enabled"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert SECRET not in line + out + err and "Traceback" not in err and not err.strip()
    assert (tmp_path / "kms" / "keystore.db").exists() and (tmp_path / "kms" / "audit.jsonl").exists()


def _serve_in_thread(argv: list[str]) -> tuple[str, threading.Event, threading.Thread]:
    args, extra = build_parser().parse_known_args(["emulator", "serve", "--port", "0", *argv])
    assert not extra
    out, ready, stop = io.StringIO(), threading.Event(), threading.Event()
    thread = threading.Thread(target=run_emulator, args=(args, out), kwargs={"ready": ready, "stop": stop})
    thread.start()
    assert ready.wait(30)
    endpoint = re.search(r"http://(\S+:\d+)", out.getvalue())
    assert endpoint and SECRET not in out.getvalue()
    return endpoint[1], stop, thread


def test_config_file_with_policies_env_secrets_and_faults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ingest.json").write_text(json.dumps({"Statement": [
        {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "*"}]}))  # fmt: skip
    monkeypatch.setenv("ADMIN_SECRET", SECRET)
    config = tmp_path / "emulator.json"
    config.write_text(json.dumps({"access_keys": [
        {"id": "admin", "secret_env": "ADMIN_SECRET"},
        {"id": "ingest", "secret": "i", "policy_file": "ingest.json"},
        {"id": "STS.x", "secret": "t", "security_token": "tok"}]}))  # fmt: skip
    config.chmod(0o600)  # it holds secrets
    endpoint, stop, thread = _serve_in_thread(["--data", str(tmp_path / "d"), "--config", str(config),
                                               "--region", "cn-shanghai"])  # fmt: skip
    try:
        admin = client_for(endpoint, "admin", SECRET)
        meta = admin.create_key(models.CreateKeyRequest()).body.key_metadata
        assert meta.arn.startswith("acs:kms:cn-shanghai:")
        ingest = client_for(endpoint, "ingest", "i")
        assert ingest.generate_data_key(models.GenerateDataKeyRequest(key_id=meta.key_id)).body.plaintext
        assert sdk_error(lambda: ingest.list_keys(models.ListKeysRequest())).code == "Forbidden.NoPermission"
        assert client_for(endpoint, "STS.x", "t", "tok").list_keys(models.ListKeysRequest()).body.total_count == 1
    finally:
        stop.set()
        thread.join(30)
    assert not thread.is_alive()


def test_fault_options_reach_the_server(tmp_path: Path) -> None:
    endpoint, stop, thread = _serve_in_thread(["--data", str(tmp_path / "d"), "--access-key-file",
                                               _key_file(tmp_path / "k"), "--throttle-rate", "1",
                                               "--seed", "1", "--workers", "2", "--max-connections", "4",
                                               "--request-timeout", "5", "--idle-timeout", "5"])  # fmt: skip
    try:
        err = sdk_error(lambda: client_for(endpoint, "dev", SECRET).list_keys(models.ListKeysRequest()))
        assert (err.code, err.status_code) == ("Rejected.Throttling", 429)
    finally:
        stop.set()
        thread.join(30)


def test_access_keys_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSBEAM_EMULATOR_ACCESS_KEYS", f"one:{SECRET} two:other")
    endpoint, stop, thread = _serve_in_thread(["--data", str(tmp_path)])
    try:
        assert client_for(endpoint, "two", "other").list_keys(models.ListKeysRequest()).body.request_id
    finally:
        stop.set()
        thread.join(30)


@pytest.mark.parametrize("argv, words", [
    ([], "at least one access key"),
    (["--access-key", SECRET], "AK:SECRET"),
    (["--access-key", f"dev:{SECRET}:missing-policy.json"], "policy file"),
    (["--access-key-file", "keys", "--acess-key", f"x:{SECRET}"], "unrecognized argument --acess-key"),
    (["--access-key-file", "keys", f"stray:{SECRET}"], "positional"),
    (["--access-key-file", "keys", "--throttle-rate", "2"], "fraction"),
    (["--access-key-file", "keys", "--throttle-rate", "0.7", "--drop-rate", "0.7"], "add up"),
    (["--access-key-file", "keys", "--config", "nope.json"], "config file"),
    (["--access-key-file", "loose"], "chmod 600 loose"),
    (["--access-key-file", "empty"], "names no access key"),
    (["--access-key-file", "nope"], "cannot read the access key file"),
    (["--access-key-file", "bad-line"], "AK:SECRET"),
    (["--config", "loose-config.json"], "chmod 600 loose-config.json"),
    (["--access-key-file", "keys", "--workers", "0"], "workers"),
    (["--access-key-file", "keys", "--workers", "8", "--max-connections", "7"], "max_connections"),
    (["--access-key-file", "keys", "--request-timeout", "0"], "timeouts"),
])  # fmt: skip
def test_user_mistakes_are_one_line_without_secrets(
    tmp_path: Path, argv: list[str], words: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.delenv("KMSBEAM_EMULATOR_ACCESS_KEYS", raising=False)
    monkeypatch.chdir(tmp_path)
    _key_file(tmp_path / "keys")
    _key_file(tmp_path / "loose", mode=0o644)
    _key_file(tmp_path / "empty", "# nothing but a comment\n\n")
    _key_file(tmp_path / "bad-line", f"{SECRET}\n")
    _key_file(tmp_path / "loose-config.json", json.dumps({"access_keys": [{"id": "a", "secret": SECRET}]}),
              mode=0o640)  # fmt: skip
    code = main(["emulator", "serve", "--port", "0", "--data", str(tmp_path / "d"), *argv])
    out, err = capsys.readouterr()
    assert code == 2 and words in err, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("kmsbeam: error: ")
    assert SECRET not in out + err


def test_bad_config_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "c.json"
    for document, words in (({"keys": []}, "access_keys"),
                             ({"access_keys": [{"id": "a", "secret": SECRET, "colour": 1}]}, "colour"),
                             ({"access_keys": [{"id": "a", "secret_env": "NOT_SET_ANYWHERE"}]}, "NOT_SET")):  # fmt: skip
        config.write_text(json.dumps(document))
        config.chmod(0o600)
        code = main(["emulator", "serve", "--data", str(tmp_path / "d"), "--config", str(config)])
        err = capsys.readouterr().err
        assert code == 2 and words in err and SECRET not in err, err


def test_only_loopback_hosts_pass_without_a_warning() -> None:
    assert _loopback("127.0.0.1") and _loopback("::1") and _loopback("localhost")
    assert not _loopback("0.0.0.0") and not _loopback("10.0.0.5") and not _loopback("kms.example")


def test_a_key_file_with_comments_and_a_relative_policy(tmp_path: Path) -> None:
    (tmp_path / "ingest.json").write_text(json.dumps({"Statement": [
        {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "*"}]}))  # fmt: skip
    keys = _key_file(tmp_path / "keys.txt", f"# the emulator's keys\nadmin:{SECRET}\n\n  ingest:i2:ingest.json\n")
    config = tmp_path / "c.json"
    config.write_text(json.dumps({"access_keys": [{"id": "env", "secret_env": "HOME"}]}))
    config.chmod(0o644)  # no secret inside: its mode does not matter
    endpoint, stop, thread = _serve_in_thread(["--data", str(tmp_path / "d"), "--access-key-file", keys,
                                               "--config", str(config)])  # fmt: skip
    try:
        key = client_for(endpoint, "admin", SECRET).create_key(models.CreateKeyRequest()).body.key_metadata.key_id
        ingest = client_for(endpoint, "ingest", "i2")
        assert ingest.generate_data_key(models.GenerateDataKeyRequest(key_id=key)).body.plaintext
        assert sdk_error(lambda: ingest.list_keys(models.ListKeysRequest())).code == "Forbidden.NoPermission"
    finally:
        stop.set()
        thread.join(30)


def test_a_secret_on_the_command_line_warns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    endpoint, stop, thread = _serve_in_thread(["--data", str(tmp_path), "--access-key", f"a:{SECRET}"])
    try:
        assert client_for(endpoint, "a", SECRET).list_keys(models.ListKeysRequest()).body.request_id
    finally:
        stop.set()
        thread.join(30)
    err = capsys.readouterr().err
    assert "warning: --access-key puts a secret on the command line" in err and "deprecated" in err
    assert "--access-key-file" in err and SECRET not in err
