"""``kmsbeam rotate``: resuming a crashed run from its journal, second runs that make no call,
and PME datasets rewritten under new PME keys (internal key material). On the emulator."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

import kmsbeam
from kmsbeam.formats.envelope import FIELD_V1, parse
from kmsbeam.formats.values import rewrap_paths
from kmsbeam.rotation.rewrap import Rewrapper, record_paths
from kmsbeam.rotation.journal import JournalWriter
from tests.pipelines.test_rotate_emulator import calls, data_calls, emulator, encrypted_values  # noqa: F401
from tests.pipelines.test_roundtrip import SCHEMA, _parquet_rows


def test_a_crashed_rotation_resumes_from_its_journal(cli: Any, customers: Path, tmp_path: Path, emulator: Any) -> None:
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc, out = tmp_path / "enc", tmp_path / "out"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", key,
               "--max-records-per-key", "100").code == 0  # fmt: skip
    before = encrypted_values(enc, "jsonl", ["ssn"])
    keys = {parse(v[0], FIELD_V1).commitment for v in before.values()}
    engine = emulator.engine
    cmk_a = engine.describe_key("alias/pii").key_id
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)

    # What a run killed half-way leaves: journal lines for the data keys it moved, a torn part.
    rw = Rewrapper(kmsbeam.open_key_source(key), on_moved=JournalWriter(out / "_kmsbeam_rotation.journal").moved)
    paths, fmt = record_paths("fields", ["ssn"], "")
    first = sorted(before)[:300]
    for rid in first:
        rewrap_paths({"ssn": before[rid][0]}, paths, fmt, rw)
    journaled = rw.calls
    assert 0 < journaled < len(keys)
    (out / "part-00000-of-00001.jsonl").write_text('{"id": 1, "ssn": "trunc', encoding="utf-8")

    start = calls(emulator)
    r = cli("rotate", enc, out)  # the same command again: no --overwrite needed
    assert r.code == 0, r.err
    assert "resuming" in r.err
    assert data_calls(start, calls(emulator)) == {"ReEncrypt": len(keys) - journaled,
                                                  "Decrypt": len(keys) - journaled}  # fmt: skip
    rotation = json.loads((out / "_kmsbeam_rotation.json").read_text())
    assert rotation["resumed"] is True and rotation["data_keys_moved"] == len(keys)
    assert rotation["counts"]["values_resumed"] > 0 and rotation["counts"]["dead_letters"] == 0
    assert not (out / "_kmsbeam_rotation.journal").exists()
    after = encrypted_values(out, "jsonl", ["ssn"])
    assert all(parse(before[i][0], fmt).body == parse(after[i][0], fmt).body for i in before)

    engine.disable_key(cmk_a)
    r = cli("decrypt", out, tmp_path / "plain")
    assert r.code == 0 and not (tmp_path / "plain" / "_dead_letters").exists(), r.err

    r = cli("rotate", enc, out)  # finished: a new run into it needs --overwrite again
    assert r.code == 2 and "--overwrite" in r.err


def test_pme_internal_key_material_is_rewritten(cli: Any, tmp_path: Path, emulator: Any) -> None:
    source = tmp_path / "people.parquet"
    pq.write_table(pa.Table.from_pylist(_parquet_rows(), schema=SCHEMA), source)
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc, out = tmp_path / "enc", tmp_path / "out"
    r = cli("encrypt", source, enc, "--parquet-mode", "pme", "--columns", "ssn,balance", "--key", key)
    assert r.code == 0, r.err
    engine = emulator.engine
    cmk_a = engine.describe_key("alias/pii").key_id
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    assert cli("rotate", enc, out, "--dry-run").code == 0 and not out.exists()
    r = cli("rotate", enc, out)
    assert r.code == 0, r.err
    assert "files rewritten" in r.out and "etl-secret" not in r.out + r.err
    rotation = json.loads((out / "_kmsbeam_rotation.json").read_text())
    assert rotation["method"] == "pme-rewrite" and rotation["counts"]["failed"] == 0
    engine.disable_key(cmk_a)
    r = cli("decrypt", out, tmp_path / "plain")
    assert r.code == 0, r.err
    back = pa.concat_tables(pq.read_table(s) for s in sorted((tmp_path / "plain").glob("part-*")))
    assert sorted(back.to_pylist(), key=lambda x: x["id"]) == _parquet_rows()


def test_pme_in_place_second_run_rewraps_nothing(cli: Any, tmp_path: Path, emulator: Any) -> None:
    source = tmp_path / "people.parquet"
    pq.write_table(pa.Table.from_pylist(_parquet_rows(), schema=SCHEMA), source)
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc = tmp_path / "enc"
    assert cli("encrypt", source, enc, "--parquet-mode", "pme", "--columns", "ssn", "--key", key,
               "--external-key-material").code == 0  # fmt: skip
    engine = emulator.engine
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    r = cli("rotate", enc, "--in-place", "--verify")
    assert r.code == 0, r.err
    rotation = json.loads((enc / "_kmsbeam_rotation.json").read_text())
    assert rotation["counts"]["files_rotated"] == rotation["counts"]["files"] >= 1
    assert rotation["verify"]["failed"] == 0 and rotation["verify"]["files_read"] >= 1
    materials = {f.name: f.read_text() for f in enc.glob("_KEY_MATERIAL_FOR_*")}
    start = calls(emulator)
    r = cli("rotate", enc, "--in-place")
    assert r.code == 0, r.err
    assert data_calls(start, calls(emulator)) == {}
    assert json.loads((enc / "_kmsbeam_rotation.json").read_text())["counts"]["files_rotated"] == 0
    start = calls(emulator)
    assert cli("rotate", enc, "--in-place", "--trust-manifest").code == 0
    assert calls(emulator) == start  # no KMS call at all
    assert {f.name: f.read_text() for f in enc.glob("_KEY_MATERIAL_FOR_*")} == materials


def test_only_key_rewraps_the_data_keys_of_one_source_key(cli: Any, customers: Path, tmp_path: Path,
                                                          emulator: Any) -> None:  # fmt: skip
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    engine = emulator.engine
    cmk_a = engine.describe_key("alias/pii").key_id
    a, b = tmp_path / "a", tmp_path / "b"
    assert cli("encrypt", customers, a, "--fields", "ssn", "--key", key, "--max-records-per-key", "250").code == 0
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    assert cli("encrypt", customers, b, "--fields", "ssn", "--key", key, "--max-records-per-key", "500").code == 0
    for part in b.glob("part-*"):  # one dataset whose data keys are under two master keys
        (a / part.name.replace("part-", "part-b-")).write_bytes(part.read_bytes())
    engine.update_alias("alias/pii", engine.create_key("CMK-C").key_id)
    start = calls(emulator)
    r = cli("rotate", a, tmp_path / "out", "--only-key", f"kms-emulator://{emulator.endpoint}/{cmk_a}")
    assert r.code == 0, r.err
    assert data_calls(start, calls(emulator)) == {"ReEncrypt": 4, "Decrypt": 4}  # CMK-A's 4 keys
    counts = json.loads((tmp_path / "out" / "_kmsbeam_rotation.json").read_text())["counts"]
    assert counts["values_rewrapped"] == 1000 and counts["values_filtered"] == 1000
    r = cli("rotate", a, tmp_path / "x", "--only-key", key, "--reencrypt")
    assert r.code == 2 and "--only-key" in r.err


def test_a_bad_verify_sample_is_refused_before_anything_runs(cli: Any, tmp_path: Path) -> None:
    for bad in ("0", "1.5", "-0.1", "half"):
        r = cli("rotate", tmp_path / "in", tmp_path / "out", "--verify-sample", bad)
        assert r.code == 2 and "0 < F <= 1" in r.err
    assert not (tmp_path / "out").exists()
