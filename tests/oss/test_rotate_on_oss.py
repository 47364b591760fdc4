"""Issue 15 part 1 for rotation: a dataset copied to OSS is rotated into OSS (field, record and
cells datasets), with its journal, manifests, verify scratch and lock all on OSS; nothing is
written to a local folder named ``oss:``; an unknown scheme is one sentence."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kmsbeam.oss import oss_client
from kmsbeam.pipelines.cli import main

from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1, parse
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.rotation.journal import JournalWriter, read_journal
from kmsbeam.transforms.journal_fs import BeamJournalStore
from tests.pipelines.conftest import EXAMPLES, cli, shard_lines  # noqa: F401  (fixtures)
from tests.pipelines.test_roundtrip import SCHEMA, _parquet_rows

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from emulator_key import emulator_key  # noqa: E402


@pytest.fixture()
def emulator(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A kms-emulator with alias/pii that accepts the OSS account's access key (one account)."""
    with emulator_key(tmp_path / "kms", monkeypatch, "alias/pii", same_account=True) as (server, _):
        yield server


def _upload(local: Path, url: str) -> None:
    client = oss_client()
    for path in sorted(local.rglob("*")):
        if path.is_file():
            client.put(url + path.relative_to(local).as_posix(), path.read_bytes())


def _download(url: str, local: Path) -> list[str]:
    client = oss_client()
    names = []
    for info in client.list(url):
        name = info.url[len(url):]
        names.append(name)
        target = local / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(client.get(info.url))
    return sorted(names)


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The launcher's working directory: nothing may appear in it."""
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    return cwd


def _versions(directory: Path, field: str) -> set[str]:
    fmt = FIELD_V1 if field == "ssn" else RECORD_V1
    return {wrapped_key_version(parse(json.loads(line)[field], fmt).wrapped)
            for line in shard_lines(directory)}  # fmt: skip


@pytest.mark.parametrize("mode", ["fields", "record"])
def test_a_dataset_copied_to_oss_rotates_into_oss(
    mode: str, cli: Any, tmp_path: Path, emulator: Any, bucket: str, workdir: Path
) -> None:
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc = tmp_path / "enc"
    how = ["--fields", "ssn"] if mode == "fields" else ["--mode", "record"]
    assert cli("encrypt", EXAMPLES / "customers.jsonl", enc, *how, "--key", key).code == 0
    src, dst = f"oss://{bucket}/enc/", f"oss://{bucket}/rot/"
    _upload(enc, src)
    emulator.engine.update_alias("alias/pii", emulator.engine.create_key("CMK-B").key_id)

    r = cli("rotate", src, dst, "--dry-run")
    assert r.code == 0 and "data keys to move" in r.out, r.err
    assert not list(oss_client().list(dst))  # a dry run writes nothing, takes no lock
    r = cli("rotate", src, dst, "--verify")
    assert r.code == 0, r.err
    names = _download(dst, tmp_path / "rot")
    assert "_kmsbeam.json" in names and "_kmsbeam_rotation.json" in names
    assert any(n.startswith("part-") for n in names)
    # journal, key inventory, verify scratch and the lock are gone; no dead letters
    assert not [n for n in names if n.startswith(("_kmsbeam_rotation.journal", "_rotation_keys",
                                                   "_kmsbeam_verify", "_kmsbeam_rotation.lock",
                                                   "_dead_letters"))]  # fmt: skip
    rotation = json.loads((tmp_path / "rot" / "_kmsbeam_rotation.json").read_text())
    assert rotation["data_keys_moved"] >= 1 and rotation["counts"]["records"] == 1000
    assert rotation["verify"]["records_decrypted"] == 1000 and rotation["verify"]["dead_letters"] == 0
    field = "ssn" if mode == "fields" else "kmsbeam_record"
    assert _versions(tmp_path / "rot", field) == {rotation["target_version"]}
    assert _versions(enc, field) != {rotation["target_version"]}
    assert os.listdir(workdir) == []  # no ./oss: folder, nothing at all
    # and it decrypts to the input (locally, from the downloaded copy)
    assert cli("decrypt", tmp_path / "rot", tmp_path / "plain").code == 0
    canon = lambda line: json.dumps(json.loads(line), sort_keys=True)  # noqa: E731
    expect = sorted(canon(x) for x in (EXAMPLES / "customers.jsonl").read_text().splitlines())
    assert sorted(canon(x) for x in shard_lines(tmp_path / "plain")) == expect


def test_a_cells_dataset_on_oss_rotates_into_oss(
    cli: Any, tmp_path: Path, emulator: Any, bucket: str, workdir: Path
) -> None:
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(_parquet_rows(), schema=SCHEMA), source)
    enc = tmp_path / "enc"
    assert cli("encrypt", source, enc, "--parquet-mode", "cells", "--columns", "ssn",
               "--key", key).code == 0  # fmt: skip
    src, dst = f"oss://{bucket}/cells/", f"oss://{bucket}/cells-rot/"
    _upload(enc, src)
    emulator.engine.update_alias("alias/pii", emulator.engine.create_key("CMK-B").key_id)
    r = cli("rotate", src, dst)
    assert r.code == 0, r.err
    names = _download(dst, tmp_path / "rot")
    assert "_kmsbeam_rotation.json" in names and "_kmsbeam.json" in names
    assert not [n for n in names if "journal" in n or n.endswith(".lock")]
    rotation = json.loads((tmp_path / "rot" / "_kmsbeam_rotation.json").read_text())
    assert rotation["counts"]["values_rewrapped"] >= 1 and not rotation["failures"]
    table = pq.read_table(next((tmp_path / "rot").glob("part-*.parquet")))
    assert {wrapped_key_version(parse(v, FIELD_V1).wrapped) for v in table.column("ssn").to_pylist()
            if v is not None} == {rotation["target_version"]}  # fmt: skip
    assert os.listdir(workdir) == []
    assert cli("decrypt", tmp_path / "rot", tmp_path / "plain").code == 0
    back = pq.read_table(tmp_path / "plain")
    assert sorted(back.to_pylist(), key=lambda x: x["id"]) == _parquet_rows()


def test_the_journal_on_oss_is_one_object_per_entry(bucket: str) -> None:
    journal = f"oss://{bucket}/out/_kmsbeam_rotation.journal"
    store = BeamJournalStore()
    writer = JournalWriter(journal, store)
    writer.moved(b"\x01" * 16, "v1", "v2", b"wrapped-1")
    writer.moved(b"\x02" * 16, "v1", "v3", b"wrapped-2")
    assert len(store.shards(journal)) == 2  # no appends on an object store
    assert read_journal(journal, "v2", store) == {b"\x01" * 16: b"wrapped-1"}
    assert read_journal(f"oss://{bucket}/elsewhere", "v2", store) == {}


def test_an_unknown_scheme_is_one_sentence_and_writes_nothing(
    cli: Any, tmp_path: Path, workdir: Path
) -> None:
    enc = tmp_path / "enc"
    assert cli("encrypt", EXAMPLES / "customers.jsonl", enc, "--fields", "ssn").code == 0
    r = cli("rotate", enc, "nosuch://bucket/rot/")
    assert r.code == 2 and "no filesystem handles nosuch://" in r.err
    r = cli("rotate", "nosuch://bucket/enc/", tmp_path / "rot")
    assert r.code == 2 and "no filesystem handles nosuch://" in r.err
    assert os.listdir(workdir) == [] and not (tmp_path / "rot").exists()
    assert not list(tmp_path.glob("*.lock"))


def test_rotating_a_launcher_relative_path_works_from_the_absolute_path(
    cli: Any, tmp_path: Path, workdir: Path
) -> None:
    enc = workdir / "enc"
    assert main(["encrypt", str(EXAMPLES / "customers.jsonl"), str(enc), "--fields", "ssn"]) == 0
    r = cli("rotate", "enc", "rot", "--reencrypt")
    assert r.code == 0, r.err
    assert str(workdir / "rot") in r.out  # the absolute path, as workers see it
    assert sorted(os.listdir(workdir)) == ["enc", "rot"]


def test_an_unfinished_rotation_on_oss_resumes_from_its_journal_without_calls(
    cli: Any, tmp_path: Path, emulator: Any, bucket: str, workdir: Path
) -> None:
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc = tmp_path / "enc"
    assert cli("encrypt", EXAMPLES / "customers.jsonl", enc, "--fields", "ssn", "--key", key).code == 0
    src, dst = f"oss://{bucket}/enc/", f"oss://{bucket}/rot/"
    _upload(enc, src)
    emulator.engine.update_alias("alias/pii", emulator.engine.create_key("CMK-B").key_id)
    assert cli("rotate", src, dst).code == 0
    rotated = _download(dst, tmp_path / "rot")
    # the state a run that died after its rewraps leaves: a journal on OSS, no rotation manifest
    old = {parse(json.loads(x)["ssn"], FIELD_V1).commitment: wrapped_key_version(parse(json.loads(x)["ssn"], FIELD_V1).wrapped)
           for x in shard_lines(enc)}  # fmt: skip
    new = {parse(json.loads(x)["ssn"], FIELD_V1).commitment: parse(json.loads(x)["ssn"], FIELD_V1).wrapped
           for x in shard_lines(tmp_path / "rot")}  # fmt: skip
    journal = JournalWriter(dst + "_kmsbeam_rotation.journal", BeamJournalStore())
    for k, wrapped in new.items():
        journal.moved(k, old[k], wrapped_key_version(wrapped), wrapped)
    oss_client().delete(dst + "_kmsbeam_rotation.json")
    before = _rewraps(emulator)
    r = cli("rotate", src, dst)
    assert r.code == 0, r.err
    assert "resuming an unfinished rotation" in r.err
    assert _rewraps(emulator) == before  # every data key came from the journal on OSS
    again = _download(dst, tmp_path / "rot2")
    assert "_kmsbeam_rotation.json" in again and not [n for n in again if "journal" in n]
    assert sorted(shard_lines(tmp_path / "rot2")) == sorted(shard_lines(tmp_path / "rot"))
    assert json.loads((tmp_path / "rot2" / "_kmsbeam_rotation.json").read_text())["resumed"] is True
    assert rotated and os.listdir(workdir) == []


def _rewraps(emulator: Any) -> int:
    lines = emulator.audit.path.read_text().splitlines()
    return sum(json.loads(line)["eventName"] in ("ReEncrypt", "Decrypt") for line in lines)



def test_a_local_export_is_not_taken_for_a_dataset(cli: Any, tmp_path: Path, workdir: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.jsonl").write_bytes(b'{"id": 1}\n')
    assert cli("export", src, tmp_path / "exp", "-q").code == 0
    r = cli("rotate", tmp_path / "exp", "--in-place")
    assert r.code == 2 and "only exports on oss:// rotate in place" in r.err
    r = cli("rotate", tmp_path / "exp", tmp_path / "rot")
    assert r.code == 2 and "an export is rotated in place, not into an OUTPUT" in r.err
    assert not (tmp_path / "rot").exists() and os.listdir(workdir) == []


def test_a_pme_dataset_on_oss_is_refused_in_one_sentence(
    cli: Any, tmp_path: Path, bucket: str, workdir: Path
) -> None:
    source = tmp_path / "in.parquet"
    pq.write_table(pa.Table.from_pylist(_parquet_rows(), schema=SCHEMA), source)
    enc = tmp_path / "enc"
    assert cli("encrypt", source, enc, "--parquet-mode", "pme", "--columns", "ssn").code == 0
    _upload(enc, f"oss://{bucket}/pme/")
    for argv in (["rotate", f"oss://{bucket}/pme/", f"oss://{bucket}/pme-rot/"],
                 ["rotate", f"oss://{bucket}/pme/", "--in-place"]):  # fmt: skip
        r = cli(*argv)
        assert r.code == 2 and r.err.count("\n") == 1, r.err
        assert "local" in r.err
    assert not list(oss_client().list(f"oss://{bucket}/pme-rot/")) and os.listdir(workdir) == []
