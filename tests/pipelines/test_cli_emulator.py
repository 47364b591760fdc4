"""`kmsbeam encrypt|decrypt --key kms-emulator://...` end to end against a real emulator."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kmsbeam.emulator import EmulatorServer

from tests.pipelines.conftest import shard_lines


@pytest.fixture()
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "etl")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "etl-secret")
    with EmulatorServer(tmp_path / "kms", {"etl": "etl-secret"}) as server:
        server.engine.create_alias("alias/pii", server.engine.create_key("pii").key_id)
        yield server


def test_encrypt_and_decrypt_through_the_emulator(cli, customers: Path, tmp_path: Path, emulator) -> None:  # type: ignore[no-untyped-def]
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    r = cli("encrypt", customers, enc, "--fields", "ssn,email", "--key", key)
    assert r.code == 0, r.err + r.out
    assert json.loads((enc / "_kmsbeam.json").read_text())["key"] == key
    assert "etl-secret" not in r.out + r.err
    r = cli("decrypt", enc, plain, "--key", key)  # the caller names the source (not the data)
    assert r.code == 0, r.err + r.out
    original = sorted(customers.read_text().splitlines())
    assert sorted(json.dumps(json.loads(x)) for x in shard_lines(plain)) == sorted(
        json.dumps(json.loads(x)) for x in original
    )
    actions = [json.loads(line)["eventName"] for line in emulator.audit.path.read_text().splitlines()]
    assert actions.count("GenerateDataKey") == 1 and actions.count("Decrypt") >= 1


def test_an_unknown_alias_is_one_clear_sentence(cli, customers: Path, tmp_path: Path, emulator) -> None:  # type: ignore[no-untyped-def]
    key = f"kms-emulator://{emulator.endpoint}/alias/nope"
    r = cli("encrypt", customers, tmp_path / "enc", "--fields", "ssn", "--key", key)
    assert r.code != 0
    assert "alias/nope" in r.err and "Traceback" not in r.err
