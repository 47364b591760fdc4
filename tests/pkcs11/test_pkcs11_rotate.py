"""Issue 8's acceptance scenario with a PKCS#11 KEK rotation: ``kmsbeam rotate`` in the HSM."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kmsbeam.pipelines.cli import main
from pkcs11_helpers import PIN, Hsm

from kmsbeam import open_key_source
from kmsbeam.formats.envelope import FIELD_V1, parse

CUSTOMERS = Path(__file__).resolve().parents[2] / "examples" / "customers.jsonl"


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def _values(directory: Path) -> dict[int, str]:
    rows = [json.loads(x) for f in sorted(directory.glob("part-*")) for x in f.read_text().splitlines()]
    return {r["id"]: r["ssn"] for r in rows}


def test_kek_rotation_rewraps_inside_the_hsm(hsm: Hsm, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kek_a, kek_b = hsm.new_kek(prefix="rot-a"), hsm.new_kek(prefix="rot-b")
    enc, rot, rot2 = tmp_path / "enc", tmp_path / "rot", tmp_path / "rot2"
    code, out = _run(capsys, "encrypt", CUSTOMERS, enc, "--fields", "ssn", "--key", kek_a,
                     "--max-records-per-key", "300")  # fmt: skip
    assert code == 0, out
    before = _values(enc)
    deks = {parse(v, FIELD_V1).commitment for v in before.values()}
    target = open_key_source(kek_b)
    rewraps = target.counts["rewrap"]  # type: ignore[attr-defined]
    code, out = _run(capsys, "rotate", enc, rot, "--to-key", kek_b, "--verify")
    assert code == 0, out
    assert PIN not in out
    assert target.counts["rewrap"] - rewraps == len(deks) == 4  # type: ignore[attr-defined]
    after = _values(rot)
    name_b = target.current_version()
    for rid, old in before.items():
        new = parse(after[rid], FIELD_V1)
        assert new.body == parse(old, FIELD_V1).body
        assert target.wrapped_key_version(new.wrapped) == name_b
    rotation = json.loads((rot / "_kmsbeam_rotation.json").read_text())
    assert rotation["verify"] == {"records_sampled": 1000, "records_decrypted": 1000,
                                  "dead_letters": 0, "sample_fraction": 1.0}  # fmt: skip
    assert json.loads((rot / "_kmsbeam.json").read_text())["key"] == kek_b
    code, out = _run(capsys, "rotate", rot, rot2, "--to-key", kek_b)  # again: no HSM rewrap
    assert code == 0, out
    assert target.counts["rewrap"] - rewraps == len(deks)  # type: ignore[attr-defined]
    assert _values(rot2) == after
