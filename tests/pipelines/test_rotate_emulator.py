"""Issue 8's acceptance scenario for ``kmsbeam rotate`` on a real emulator (official SDK).

alias/pii -> CMK-A; encrypt; create CMK-B and move the alias; rotate; disable CMK-A and
schedule its deletion; everything still decrypts, the bytes after each header are unchanged,
ReEncrypt calls = distinct data keys, and a second run makes no data-key call. Then the same
with an automatic rotation (a new version of CMK-B).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kmsbeam.emulator import EmulatorServer

from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1, parse
from tests.pipelines.conftest import shard_lines
from tests.pipelines.test_roundtrip import SCHEMA, _parquet_rows

DATA_CALLS = ("GenerateDataKey", "Decrypt", "ReEncrypt", "Encrypt")


@pytest.fixture()
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "etl")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "etl-secret")
    with EmulatorServer(tmp_path / "kms", {"etl": "etl-secret"}) as server:
        server.engine.create_alias("alias/pii", server.engine.create_key("CMK-A").key_id)
        # the caller's configuration: manifests naming this emulator resolve to it
        monkeypatch.setenv("KMSBEAM_KEY_SOURCES", f"kms-emulator://{server.endpoint}/alias/pii")
        yield server


def calls(emulator: Any) -> Counter[str]:
    lines = emulator.audit.path.read_text().splitlines()
    return Counter(json.loads(line)["eventName"] for line in lines)


def data_calls(before: Counter[str], after: Counter[str]) -> dict[str, int]:
    return {a: after[a] - before[a] for a in DATA_CALLS if after[a] - before[a]}


def encrypted_values(directory: Path, fmt: str, columns: list[str]) -> dict[Any, list[Any]]:
    """id -> the encrypted values of ``columns``, from every shard."""
    if fmt == "parquet":
        rows = pa.concat_tables(pq.read_table(s) for s in sorted(directory.glob("part-*"))).to_pylist()
    else:
        rows = [json.loads(line) for line in shard_lines(directory)]
    return {r["id"]: [r[c] for c in columns] for r in rows}


CASES = {  # name: (input kind, encrypt options, encrypted columns, envelope format)
    "jsonl-fields": ("jsonl", ["--fields", "ssn,email"], ["ssn", "email"], FIELD_V1),
    "jsonl-record": ("jsonl", ["--mode", "record", "--keep", "id"], ["kmsbeam_record"], RECORD_V1),
    "parquet-fields": ("parquet", ["--fields", "ssn,address.zip"], ["ssn"], FIELD_V1),
    "parquet-record": ("parquet", ["--mode", "record", "--keep", "id"], ["kmsbeam_record"], RECORD_V1),
}


@pytest.mark.parametrize("case", list(CASES))
def test_rotate_after_a_manual_and_an_automatic_rotation(
    cli: Any, customers: Path, tmp_path: Path, emulator: Any, case: str
) -> None:
    kind, options, columns, fmt = CASES[case]
    source = customers
    if kind == "parquet":
        source = tmp_path / "people.parquet"
        pq.write_table(pa.Table.from_pylist(_parquet_rows(), schema=SCHEMA), source)
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc, rot, rot2, rot3 = (tmp_path / n for n in ("enc", "rot", "rot2", "rot3"))
    r = cli("encrypt", source, enc, *options, "--key", key, "--max-records-per-key", "25")
    assert r.code == 0, r.err
    before = encrypted_values(enc, kind, columns)
    keys = {parse(v, fmt).commitment for vs in before.values() for v in vs if v is not None}
    assert len(keys) > 1
    engine = emulator.engine
    cmk_a = engine.describe_key("alias/pii").key_id
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)

    start = calls(emulator)
    r = cli("rotate", enc, rot, "--to-key", key)
    assert r.code == 0, r.err
    made = data_calls(start, calls(emulator))
    assert made == {"ReEncrypt": len(keys), "Decrypt": len(keys)}  # + one check per data key
    rotation = json.loads((rot / "_kmsbeam_rotation.json").read_text())
    assert rotation["data_keys_moved"] == len(keys) and rotation["counts"]["dead_letters"] == 0
    assert "values rewrapped" in r.out and "etl-secret" not in r.out + r.err

    engine.disable_key(cmk_a)
    engine.schedule_key_deletion(cmk_a, 7)
    after = encrypted_values(rot, kind, columns)
    assert after.keys() == before.keys()
    for rid, values in before.items():
        for old, new in zip(values, after[rid]):
            if old is None:
                assert new is None
                continue
            assert parse(old, fmt).body == parse(new, fmt).body and old != new
    plain = tmp_path / "plain"
    r = cli("decrypt", rot, plain)
    assert r.code == 0 and "dead letters" in r.out and not (plain / "_dead_letters").exists(), r.err
    r = cli("decrypt", enc, tmp_path / "old-plain")  # the old dataset needs the disabled key:
    assert r.code == 1 and "key disabled" in r.err  # the job fails; nothing is dead-lettered
    assert not (tmp_path / "old-plain" / "_dead_letters").exists()

    start = calls(emulator)  # a second run: everything is under the target already
    r = cli("rotate", rot, rot2)
    assert r.code == 0, r.err
    assert set(calls(emulator) - start) <= {"DescribeKey", "ListAliasesByKeyId"}  # the target only
    assert encrypted_values(rot2, kind, columns) == after
    start = calls(emulator)  # trusting the rotation manifest: no KMS call at all
    r = cli("rotate", rot, tmp_path / "rot2b", "--trust-manifest")
    assert r.code == 0 and "from _kmsbeam_rotation.json" in r.out, r.err
    assert calls(emulator) == start
    assert encrypted_values(tmp_path / "rot2b", kind, columns) == after

    engine.create_key_version("alias/pii")  # automatic rotation: a new version of CMK-B
    start = calls(emulator)
    r = cli("rotate", rot2, rot3, "--verify")
    assert r.code == 0, r.err
    assert data_calls(start, calls(emulator))["ReEncrypt"] == len(keys)
    assert json.loads((rot3 / "_kmsbeam_rotation.json").read_text())["verify"] == {
        "records_sampled": len(before), "records_decrypted": len(before), "dead_letters": 0,
        "sample_fraction": 1.0}  # fmt: skip


def test_dry_run_counts_and_changes_nothing(cli: Any, customers: Path, tmp_path: Path, emulator: Any) -> None:
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", key,
               "--max-records-per-key", "400").code == 0  # fmt: skip
    engine = emulator.engine
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    start = calls(emulator)
    r = cli("rotate", enc, tmp_path / "rot", "--dry-run")
    assert r.code == 0, r.err
    assert data_calls(start, calls(emulator)) == {} and not (tmp_path / "rot").exists()
    assert "data keys to move" in r.out and "3" in r.out.split("data keys to move")[1].splitlines()[0]


def test_a_disabled_or_unknown_target_fails_before_anything_is_written(
    cli: Any, customers: Path, tmp_path: Path, emulator: Any
) -> None:
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", key).code == 0
    r = cli("rotate", enc, tmp_path / "rot", "--to-key", f"kms-emulator://{emulator.endpoint}/alias/nope")
    assert r.code != 0 and "alias/nope" in r.err and "Traceback" not in r.err
    assert not (tmp_path / "rot").exists()
    emulator.engine.disable_key("alias/pii")
    r = cli("rotate", enc, tmp_path / "rot")
    assert r.code != 0 and "not Enabled" in r.err and not (tmp_path / "rot").exists()
    r = cli("rotate", enc, tmp_path / "rot", "--to-key", "local:alias/x")
    assert r.code == 2 and "--reencrypt" in r.err


def test_undecryptable_values_go_to_the_dead_letters(
    cli: Any, customers: Path, tmp_path: Path, emulator: Any
) -> None:
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", key).code == 0
    shard = sorted(enc.glob("part-*"))[0]
    lines = shard.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["ssn"] = bad["ssn"][:10] + ("A" if bad["ssn"][10] != "A" else "B") + bad["ssn"][11:]
    shard.write_text("\n".join([json.dumps(bad)] + lines[1:]) + "\n")
    engine = emulator.engine
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    r = cli("rotate", enc, tmp_path / "rot")
    assert r.code == 3, r.err  # one dead letter, over the default budget (0)
    rotation = json.loads((tmp_path / "rot" / "_kmsbeam_rotation.json").read_text())
    assert rotation["counts"]["dead_letters"] == 1 and rotation["counts"]["records_written"] == 999
    assert "dead letters" in r.err


def test_reencrypt_and_version_filter(cli: Any, customers: Path, tmp_path: Path, emulator: Any) -> None:
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", key).code == 0
    engine = emulator.engine
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    start = calls(emulator)  # a filter that matches no data key: everything is copied as is
    r = cli("rotate", enc, tmp_path / "none", "--only-version", "no-such-version")
    assert r.code == 0, r.err
    assert data_calls(start, calls(emulator)) == {}
    assert encrypted_values(tmp_path / "none", "jsonl", ["ssn"]) == encrypted_values(enc, "jsonl", ["ssn"])
    r = cli("rotate", enc, tmp_path / "new", "--reencrypt", "--verify-sample", "0.1")
    assert r.code == 0, r.err
    rotation = json.loads((tmp_path / "new" / "_kmsbeam_rotation.json").read_text())
    assert rotation["method"] == "reencrypt" and rotation["counts"]["values_reencrypted"] == 1000
    assert rotation["verify"] == {"records_sampled": 100, "records_decrypted": 100,
                                  "dead_letters": 0, "sample_fraction": 0.1}  # fmt: skip
    old, new = encrypted_values(enc, "jsonl", ["ssn"]), encrypted_values(tmp_path / "new", "jsonl", ["ssn"])
    assert all(parse(old[i][0], FIELD_V1).commitment != parse(new[i][0], FIELD_V1).commitment for i in old)


def test_pme_external_key_material_in_place(cli: Any, tmp_path: Path, emulator: Any) -> None:
    source = tmp_path / "people.parquet"
    pq.write_table(pa.Table.from_pylist(_parquet_rows(), schema=SCHEMA), source)
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc = tmp_path / "enc"
    r = cli("encrypt", source, enc, "--parquet-mode", "pme", "--columns", "ssn,balance",
            "--key", key, "--external-key-material")  # fmt: skip
    assert r.code == 0, r.err
    data = {f.name: f.read_bytes() for f in enc.glob("part-*")}
    materials = {f.name: f.read_text() for f in enc.glob("_KEY_MATERIAL_FOR_*")}
    assert data and materials
    engine = emulator.engine
    cmk_a = engine.describe_key("alias/pii").key_id
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    r = cli("rotate", enc, "--in-place")
    assert r.code == 0, r.err
    assert {f.name: f.read_bytes() for f in enc.glob("part-*")} == data  # data files untouched
    assert {f.name: f.read_text() for f in enc.glob("_KEY_MATERIAL_FOR_*")}.keys() == materials.keys()
    assert all(materials[n] != (enc / n).read_text() for n in materials)
    engine.disable_key(cmk_a)
    r = cli("decrypt", enc, tmp_path / "plain")
    assert r.code == 0, r.err
    back = pa.concat_tables(pq.read_table(s) for s in sorted((tmp_path / "plain").glob("part-*")))
    assert sorted(back.to_pylist(), key=lambda x: x["id"]) == _parquet_rows()
    r = cli("rotate", enc, tmp_path / "out")  # out of place: rewritten with new PME keys
    assert r.code == 0 and "PME rewritten" in r.out, r.err


def test_parquet_cells(cli: Any, tmp_path: Path, emulator: Any) -> None:
    source = tmp_path / "people.parquet"
    pq.write_table(pa.Table.from_pylist(_parquet_rows(), schema=SCHEMA), source)
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc, rot, rot2 = tmp_path / "enc", tmp_path / "rot", tmp_path / "rot2"
    r = cli("encrypt", source, enc, "--parquet-mode", "cells", "--columns", "ssn,address.zip",
            "--bind", "id", "--key", key, "--max-records-per-key", "20")  # fmt: skip
    assert r.code == 0, r.err

    def cells(directory: Path) -> dict[Any, list[Any]]:
        t = pa.concat_tables(pq.read_table(s) for s in sorted(directory.glob("part-*")))
        return {r["id"]: [r["ssn"], (r["address"] or {}).get("zip")] for r in t.to_pylist()}

    before = cells(enc)
    keys = {parse(v, FIELD_V1).commitment for vs in before.values() for v in vs if v is not None}
    engine = emulator.engine
    cmk_a = engine.describe_key("alias/pii").key_id
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    start = calls(emulator)
    r = cli("rotate", enc, rot)
    assert r.code == 0, r.err
    assert data_calls(start, calls(emulator)) == {"ReEncrypt": len(keys), "Decrypt": len(keys)}
    after = cells(rot)
    for rid, values in before.items():
        for old, new in zip(values, after[rid]):
            assert (old is None) == (new is None)
            if old is not None:
                assert parse(old, FIELD_V1).body == parse(new, FIELD_V1).body and old != new
    engine.disable_key(cmk_a)
    r = cli("decrypt", rot, tmp_path / "plain")
    assert r.code == 0 and not (tmp_path / "plain" / "_dead_letters").exists(), r.err
    back = pa.concat_tables(pq.read_table(s) for s in sorted((tmp_path / "plain").glob("part-*")))
    assert sorted(back.to_pylist(), key=lambda x: x["id"]) == _parquet_rows()
    start = calls(emulator)
    assert cli("rotate", rot, rot2, "--verify-sample", "0.5").code == 0
    assert "ReEncrypt" not in data_calls(start, calls(emulator)) and cells(rot2) == after
    verify = json.loads((rot2 / "_kmsbeam_rotation.json").read_text())["verify"]
    assert verify["records_decrypted"] == verify["records_sampled"] == 30 and verify["dead_letters"] == 0
    start = calls(emulator)
    assert cli("rotate", rot, tmp_path / "rot3", "--trust-manifest").code == 0
    assert calls(emulator) == start and cells(tmp_path / "rot3") == after
