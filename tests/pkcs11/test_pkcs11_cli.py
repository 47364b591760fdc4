"""The issue's user story: `kmsbeam keys create --key pkcs11:...`, then encrypt and decrypt."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kmsbeam.pipelines.cli import main
from pkcs11_helpers import PIN, Hsm

CUSTOMERS = Path(__file__).resolve().parents[2] / "examples" / "customers.jsonl"


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_keys_create_then_encrypt_and_decrypt(hsm: Hsm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    uri = hsm.uri(hsm.label("cli"))
    code, out = _run(capsys, "keys", "create", "--key", uri)
    assert code == 0 and "created KEK" in out, out
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    code, out = _run(capsys, "encrypt", CUSTOMERS, enc, "--fields", "ssn,email", "--key", uri)
    assert code == 0, out
    assert PIN not in out and PIN not in (enc / "_kmsbeam.json").read_text()
    code, out = _run(capsys, "decrypt", enc, plain)
    assert code == 2 and "KMSBEAM_KEY_SOURCES" in out, out  # data never picks the module
    code, out = _run(capsys, "decrypt", enc, plain, "--key", uri)
    assert code == 0, out
    lines = [json.loads(x) for f in sorted(plain.glob("part-*")) for x in f.read_text().splitlines()]
    original = [json.loads(x) for x in CUSTOMERS.read_text().splitlines()]
    assert sorted(lines, key=lambda r: r["id"]) == sorted(original, key=lambda r: r["id"])


def test_keys_create_refuses_other_schemes_and_an_existing_label(hsm: Hsm, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(capsys, "keys", "create", "--key", "local:alias/x")
    assert code == 2 and "pkcs11:" in out
    uri = hsm.new_kek()
    code, out = _run(capsys, "keys", "create", "--key", uri)
    assert code != 0 and "Traceback" not in out and PIN not in out
