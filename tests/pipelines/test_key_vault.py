"""Issue 18: datasets whose data keys live in a key vault (``--key-vault``), end to end through
the CLI with the emulator over HTTP (calls counted in its audit log, which no runner can
under-report): encrypt, decrypt, ``vault rotate`` (KMS calls = data keys, zero data bytes),
``vault check``, ``vault gc``, and the failure modes (a missing entry, no vault, a wrong one).
"""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kmsbeam.emulator import EmulatorServer
from kmsbeam.vault import KeyVault

from tests.pipelines.conftest import shard_lines

KEY_ALIAS = "alias/pii"


@pytest.fixture()
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "etl")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "etl-secret")
    with EmulatorServer(tmp_path / "kms", {"etl": "etl-secret"}) as server:
        server.engine.create_alias(KEY_ALIAS, server.engine.create_key("pii").key_id)
        monkeypatch.setenv("KMSBEAM_KEY_SOURCES", f"kms-emulator://{server.endpoint}/{KEY_ALIAS}")
        yield server


def _events(server: EmulatorServer) -> list[str]:
    return [json.loads(line)["eventName"] for line in server.audit.path.read_text().splitlines()]


def _entries(vault: Path) -> dict[str, list[str]]:
    return {d.name: sorted(f.name for f in d.iterdir()) for d in vault.iterdir() if d.is_dir()}


def _bytes(value: str) -> bytes:
    return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))


def _sorted_records(lines: list[str]) -> list[Any]:
    return sorted((json.loads(x) for x in lines), key=lambda r: json.dumps(r, sort_keys=True))


def _row(out: str, name: str) -> str:
    """The value of a summary row (``  name   value``)."""
    for line in out.splitlines():
        head, _, value = line.strip().rpartition("  ")
        if head.strip() == name:
            return value.strip()
    raise AssertionError(f"no row {name!r} in {out}")


def _files(directory: Path) -> dict[str, tuple[bytes, int]]:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in directory.iterdir() if p.is_file()}


def _encrypt(cli: Any, customers: Path, tmp_path: Path, key: str, *extra: str) -> tuple[Path, Path]:
    enc, vault = tmp_path / "enc", tmp_path / "vault"
    r = cli("encrypt", customers, enc, "--fields", "ssn,email", "--key", key, "--key-vault", vault,
            "--max-records-per-key", "100", *extra)  # fmt: skip
    assert r.code == 0, r.err + r.out
    return enc, vault


def test_a_vault_dataset_round_trips_with_one_entry_per_data_key(cli, customers: Path, tmp_path: Path,
                                                               emulator: EmulatorServer) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    key = f"kms-emulator://{emulator.endpoint}/{KEY_ALIAS}"
    enc, vault = _encrypt(cli, customers, tmp_path, key)
    manifest = json.loads((enc / "_kmsbeam.json").read_text())
    assert manifest["key_vault"] == str(vault)
    generated = _events(emulator).count("GenerateDataKey")
    entries = _entries(vault)
    assert generated == len(entries) >= 10  # 1,000 records, 100 per data key
    assert all(gens == ["00000001.json"] for gens in entries.values())
    assert (vault / "_kmsbeam_vault.json").is_file()
    lines = shard_lines(enc)
    ssn = json.loads(lines[0])["ssn"]
    raw = _bytes(ssn)
    assert raw[0] == 0x03 and raw[1:17].hex() in entries and raw[17] == 0  # field value v2: fmt || K || 0
    assert len(ssn) == 67  # an 11-character SSN: 18 + 4 + 12 + 16 bytes
    v1 = tmp_path / "v1"
    assert cli("encrypt", customers, v1, "--fields", "ssn,email", "--key", key).code == 0
    assert len(json.loads(shard_lines(v1)[0])["ssn"]) >= 3 * len(ssn)  # the same SSN as field value v1

    before = len(_events(emulator))
    r = cli("decrypt", enc, tmp_path / "plain")
    assert r.code == 0, r.err + r.out
    assert _sorted_records(shard_lines(tmp_path / "plain")) == _sorted_records(customers.read_text().splitlines())
    assert _events(emulator)[before:].count("Decrypt") == generated  # one unwrap per data key


def test_vault_rotate_rewraps_keys_only_and_readers_take_the_new_generation(
    cli, customers: Path, tmp_path: Path, emulator: EmulatorServer  # type: ignore[no-untyped-def]
) -> None:
    key = f"kms-emulator://{emulator.endpoint}/{KEY_ALIAS}"
    enc, vault = _encrypt(cli, customers, tmp_path, key)
    data_keys = len(_entries(vault))
    dataset = _files(enc)
    engine = emulator.engine
    old = engine.describe_key(KEY_ALIAS).key_id
    new = engine.create_key("pii-2026").key_id
    engine.create_alias("alias/pii-2026", new)
    target = f"kms-emulator://{emulator.endpoint}/alias/pii-2026"

    before = len(_events(emulator))
    r = cli("vault", "rotate", vault, "--to-key", target, "--verify")
    assert r.code == 0, r.err + r.out
    calls = _events(emulator)[before:]
    assert calls.count("ReEncrypt") == data_keys  # one rewrap per data key, no more
    assert calls.count("Decrypt") == data_keys  # --verify: each new entry unwrapped once
    assert calls.count("GenerateDataKey") == 0
    assert _files(enc) == dataset  # not one data byte read into a new file, nor rewritten
    assert all(gens == ["00000001.json", "00000002.json"] for gens in _entries(vault).values())
    second = json.loads(next(vault.glob("*/00000002.json")).read_text())
    assert second["master_key"] == target and second["generation"] == 2
    assert "rewrapped" in r.out and f"{data_keys:,}" in r.out

    before = len(_events(emulator))
    r = cli("vault", "rotate", vault, "--to-key", target)  # again: nothing to do, no call but one Describe
    assert r.code == 0, r.err + r.out
    assert "ReEncrypt" not in _events(emulator)[before:]
    assert all(len(gens) == 2 for gens in _entries(vault).values())

    engine.update_alias(KEY_ALIAS, new)  # the manifest's alias moves to the new key...
    engine.disable_key(old)  # ... and the old key is retired: generation 1 cannot unwrap any more
    r = cli("decrypt", enc, tmp_path / "plain")
    assert r.code == 0, r.err + r.out
    assert _sorted_records(shard_lines(tmp_path / "plain")) == _sorted_records(customers.read_text().splitlines())


def test_a_missing_entry_is_a_dead_letter_naming_the_key_id_and_the_vault(
    cli, customers: Path, tmp_path: Path, emulator: EmulatorServer  # type: ignore[no-untyped-def]
) -> None:
    key = f"kms-emulator://{emulator.endpoint}/{KEY_ALIAS}"
    enc, vault = _encrypt(cli, customers, tmp_path, key)
    r = cli("vault", "check", enc)
    assert r.code == 0 and _row(r.out, "data keys failed") == "0", r.out
    lost = sorted(_entries(vault))[0]
    shutil.rmtree(vault / lost)

    r = cli("vault", "check", enc)
    assert r.code == 1 and lost in r.out and "key-vault entry missing" in r.out, r.out
    KeyVault.forget()  # as a new process: the encrypting job (in this process) knew every key id
    r = cli("decrypt", enc, tmp_path / "plain", "--max-dead-letters", "1000")
    assert r.code == 0, r.err + r.out
    dead = [json.loads(x) for x in (tmp_path / "plain" / "_dead_letters").glob("part-*") for x in x.read_text().splitlines()]
    assert 0 < len(dead) <= 100 and len(dead) + len(shard_lines(tmp_path / "plain")) == 1000
    assert {d["reason"] for d in dead} == {
        f"key-vault entry missing: data key {lost} is not in the key vault {vault}"
    }


def test_a_vault_value_without_its_vault_is_a_usage_error(cli, customers: Path, tmp_path: Path,
                                                         emulator: EmulatorServer) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    key = f"kms-emulator://{emulator.endpoint}/{KEY_ALIAS}"
    enc, vault = _encrypt(cli, customers, tmp_path, key)
    r = cli("decrypt", enc, tmp_path / "p1", "--key-vault", tmp_path / "nowhere")
    assert r.code == 2 and "is not a key vault" in r.err, r.err
    manifest = json.loads((enc / "_kmsbeam.json").read_text())
    manifest["key_vault"] = None
    (enc / "_kmsbeam.json").write_text(json.dumps(manifest))
    r = cli("decrypt", enc, tmp_path / "p2")
    assert r.code == 2 and "--key-vault" in r.err and not (tmp_path / "p2").exists(), r.err
    r = cli("decrypt", enc, tmp_path / "p3", "--key-vault", vault)  # named by the caller: fine
    assert r.code == 0, r.err + r.out
    pq.write_table(pa.table({"id": [1, 2], "ssn": ["a", "b"]}), tmp_path / "in.parquet")
    r = cli("encrypt", tmp_path / "in.parquet", tmp_path / "pq", "--columns", "ssn", "--key", key,
            "--key-vault", vault, "--parquet-mode", "pme")  # fmt: skip
    assert r.code == 2 and "--key-vault" in r.err, r.err


def test_record_mode_with_a_vault(cli, customers: Path, tmp_path: Path, emulator: EmulatorServer) -> None:  # type: ignore[no-untyped-def]
    key = f"kms-emulator://{emulator.endpoint}/{KEY_ALIAS}"
    enc, vault = tmp_path / "enc", tmp_path / "vault"
    r = cli("encrypt", customers, enc, "--mode", "record", "--keep", "id", "--key", key,
            "--key-vault", vault)  # fmt: skip
    assert r.code == 0, r.err + r.out
    first = json.loads(shard_lines(enc)[0])
    assert _bytes(first["kmsbeam_record"])[0] == 0x04  # record v2
    assert cli("vault", "check", enc).code == 0
    r = cli("decrypt", enc, tmp_path / "plain")
    assert r.code == 0, r.err + r.out
    assert _sorted_records(shard_lines(tmp_path / "plain")) == _sorted_records(customers.read_text().splitlines())


def test_gc_lists_unused_entries_and_deletes_only_with_yes(cli, customers: Path, tmp_path: Path,
                                                          emulator: EmulatorServer) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    key = f"kms-emulator://{emulator.endpoint}/{KEY_ALIAS}"
    enc, vault = _encrypt(cli, customers, tmp_path, key)
    other = tmp_path / "enc2"
    r = cli("encrypt", customers, other, "--fields", "ssn", "--key", key, "--key-vault", vault)
    assert r.code == 0, r.err
    used = set(_entries(vault))
    r = cli("vault", "gc", vault, "--dataset", enc)  # enc2's keys are unused by the datasets named
    assert r.code == 0, r.err + r.out
    unused = [line.split()[1] for line in r.out.splitlines() if line.strip().startswith("unused ")]
    assert unused and set(_entries(vault)) == used  # listed, nothing deleted
    r = cli("vault", "gc", vault, "--dataset", enc, "--dataset", other)
    assert r.code == 0 and _row(r.out, "unused") == "0", r.out
    r = cli("vault", "gc", vault, "--dataset", enc, "--yes")  # entries of minutes ago: kept (a job may run)
    assert r.code == 0 and _row(r.out, "entries deleted") == "0" and set(_entries(vault)) == used, r.out
    r = cli("vault", "gc", vault, "--dataset", enc, "--yes", "--min-age", "0")
    assert r.code == 0, r.err + r.out
    assert set(_entries(vault)) == used - set(unused) and "has lost it" in r.out
    assert cli("decrypt", enc, tmp_path / "plain").code == 0  # the named dataset still reads
    r = cli("vault", "gc", tmp_path / "nowhere", "--dataset", enc)
    assert r.code == 2 and "is not a key vault" in r.err


def test_rotate_moves_a_dataset_into_a_vault_and_back_by_headers_only(
    cli, customers: Path, tmp_path: Path, emulator: EmulatorServer  # type: ignore[no-untyped-def]
) -> None:
    key = f"kms-emulator://{emulator.endpoint}/{KEY_ALIAS}"
    v1, v2, back, vault = tmp_path / "v1", tmp_path / "v2", tmp_path / "back", tmp_path / "vault"
    r = cli("encrypt", customers, v1, "--fields", "ssn,email", "--key", key, "--max-records-per-key", "250")
    assert r.code == 0, r.err
    before = len(_events(emulator))
    r = cli("rotate", v1, v2, "--key-vault", vault, "--verify")
    assert r.code == 0, r.err + r.out
    calls = _events(emulator)[before:]
    assert "ReEncrypt" not in calls and "GenerateDataKey" not in calls  # already under the key
    assert json.loads((v2 / "_kmsbeam.json").read_text())["key_vault"] == str(vault)
    old = {json.loads(x)["id"]: json.loads(x) for x in shard_lines(v1)}
    new = {json.loads(x)["id"]: json.loads(x) for x in shard_lines(v2)}
    assert old.keys() == new.keys()
    kids = set()
    for i, record in new.items():
        for field in ("ssn", "email"):
            a, b = _bytes(old[i][field]), _bytes(record[field])
            assert b[0] == 0x03 and b[18:] == a[-(len(b) - 18):]  # the same counter and ciphertext
            kids.add(b[1:17].hex())
    assert set(_entries(vault)) == kids and len(kids) == 4

    r = cli("rotate", v2, tmp_path / "again")
    assert r.code == 2 and "kmsbeam vault rotate" in r.err, r.err
    r = cli("rotate", v2, back, "--self-contained", "--verify")
    assert r.code == 0, r.err + r.out
    assert json.loads((back / "_kmsbeam.json").read_text())["key_vault"] is None
    assert {json.loads(x)["id"]: json.loads(x) for x in shard_lines(back)} == old  # byte for byte
    r = cli("decrypt", back, tmp_path / "plain")
    assert r.code == 0, r.err + r.out
    assert _sorted_records(shard_lines(tmp_path / "plain")) == _sorted_records(customers.read_text().splitlines())


@pytest.mark.parametrize("vault", ["oss://ak:topsecret@bucket/_keys/", "oss://bucket/_keys/?token=topsecret"])
def test_a_vault_uri_never_carries_a_secret(cli, customers: Path, tmp_path: Path, vault: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("encrypt", customers, tmp_path / "enc", "--fields", "ssn", "--key-vault", vault)
    assert r.code == 2 and "topsecret" not in r.err + r.out and not (tmp_path / "enc").exists(), r.err


def test_parquet_cells_with_a_vault(cli, tmp_path: Path, emulator: EmulatorServer) -> None:  # type: ignore[no-untyped-def]
    key = f"kms-emulator://{emulator.endpoint}/{KEY_ALIAS}"
    table = pa.table({"id": list(range(300)), "ssn": [f"123-45-{i:04d}" for i in range(300)]})
    pq.write_table(table, tmp_path / "in.parquet")
    enc, vault = tmp_path / "enc", tmp_path / "vault"
    r = cli("encrypt", tmp_path / "in.parquet", enc, "--parquet-mode", "cells", "--columns", "ssn",
            "--key", key, "--key-vault", vault, "--max-records-per-key", "100")  # fmt: skip
    assert r.code == 0, r.err + r.out
    part = next(enc.glob("part-*.parquet"))
    cells = pq.read_table(part).column("ssn").to_pylist()
    assert {c[0] for c in cells} == {0x03} and {c[1:17].hex() for c in cells} == set(_entries(vault))
    meta = json.loads(pq.read_schema(part).metadata[b"kmsbeam.cells"])
    assert meta["format"] == "field value v2" and meta["key_vault"] == str(vault)
    r = cli("inspect", part)
    assert r.code == 0 and "key vault" in r.out, r.out
    assert cli("vault", "check", enc).code == 0
    r = cli("decrypt", enc, tmp_path / "plain")
    assert r.code == 0, r.err + r.out
    back = pq.read_table(next((tmp_path / "plain").glob("part-*.parquet")))
    assert sorted(back.to_pylist(), key=lambda x: x["id"]) == table.to_pylist()


def test_mistakes_stop_before_the_job(cli, customers: Path, tmp_path: Path, emulator: EmulatorServer) -> None:  # type: ignore[no-untyped-def]
    key = f"kms-emulator://{emulator.endpoint}/{KEY_ALIAS}"
    enc, vault = _encrypt(cli, customers, tmp_path, key)
    other = tmp_path / "other"
    assert cli("encrypt", customers, tmp_path / "enc2", "--fields", "ssn", "--key", key, "--key-vault", other).code == 0
    r = cli("decrypt", enc, tmp_path / "p", "--key-vault", other)  # another dataset's vault
    assert r.code == 2 and "none of the data keys" in r.err and "--key-vault" in r.err, r.err
    assert not (tmp_path / "p").exists()
    r = cli("encrypt", customers, tmp_path / "o", "--fields", "ssn", "--key", key, "--key-vault", tmp_path / "o" / "_keys")
    assert r.code == 2 and "outside OUTPUT" in r.err and not (tmp_path / "o").exists(), r.err
    r = cli("rotate", enc, tmp_path / "r", "--reencrypt")
    assert r.code == 2 and "--self-contained" in r.err and "--reencrypt" in r.err, r.err
