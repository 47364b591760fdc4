"""A PKCS#11 hint in data uses the CALLER's module and PIN source, never the data's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from kmsbeam.pipelines.cli import main
from pkcs11_helpers import PIN, Hsm

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.pipelines.untrusted_helpers import build_marker_module, evil_uri  # noqa: E402

CUSTOMERS = Path(__file__).resolve().parents[2] / "examples" / "customers.jsonl"


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_a_manifest_naming_another_module_on_a_configured_token(
    hsm: Hsm, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    kek = hsm.new_kek(prefix="trust")
    label = kek.split("object=")[1].split("?")[0]
    enc = tmp_path / "enc"
    code, out = _run(capsys, "encrypt", CUSTOMERS, enc, "--fields", "ssn", "--key", kek)
    assert code == 0, out
    marker = tmp_path / "LOADED"
    module = build_marker_module(enc, marker)  # shipped inside the dataset
    manifest = json.loads((enc / "_kmsbeam.json").read_text())
    manifest["key"] = evil_uri(module, token="etl", obj=label)
    (enc / "_kmsbeam.json").write_text(json.dumps(manifest))

    code, out = _run(capsys, "decrypt", enc, tmp_path / "p0")  # nothing configured
    assert code == 2 and "KMSBEAM_KEY_SOURCES" in out and "libevil" not in out, out
    # the caller configures the token (another KEK label on it): the data's KEK label is
    # used with the caller's module path and PIN source
    monkeypatch.setenv("KMSBEAM_KEY_SOURCES", hsm.uri("some-other-kek"))
    code, out = _run(capsys, "decrypt", enc, tmp_path / "p1")
    assert code == 0, out
    rows = [json.loads(x) for f in sorted((tmp_path / "p1").glob("part-*")) for x in f.read_text().splitlines()]
    assert sorted(r["ssn"] for r in rows) == sorted(json.loads(x)["ssn"] for x in CUSTOMERS.read_text().splitlines())
    code, out = _run(capsys, "rotate", enc, tmp_path / "rot", "--dry-run")
    assert code == 0, out
    # another token is not the configured one
    manifest["key"] = evil_uri(module, token="second", obj=label)
    (enc / "_kmsbeam.json").write_text(json.dumps(manifest))
    code, out = _run(capsys, "decrypt", enc, tmp_path / "p2")
    assert code == 2 and "libevil" not in out and "second" not in out, out
    assert PIN not in out
    assert not marker.exists()
