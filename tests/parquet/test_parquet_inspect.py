"""``inspect_parquet`` / ``kmsbeam inspect``: what is protected, how and under which keys,
without keys, without decrypting, and without ever aborting the process."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from kmsbeam import FormatError, open_key_source
from kmsbeam.keys.local import shared_engine
from kmsbeam.formats.parquet import CellEncryptor, PmeEncryption, crypto_factory, inspect_parquet, master_key_id
from kmsbeam.formats.parquet._thrift import read_struct
from tests.parquet.conftest import cli_subprocess, events


@pytest.fixture(autouse=True)
def fresh_pme_caches() -> None:
    crypto_factory().remove_cache_entries_for_all_tokens()


def pme_file(path: Path, keys: dict[str, str], **options: object) -> Path:
    enc = PmeEncryption(keys["foot"], {"ssn": keys["pii"], "card": keys["pci"]}, **options)  # type: ignore[arg-type]
    table = events()
    pq.write_table(table, path, encryption_properties=enc.properties(table.schema, str(path)), row_group_size=300)
    return path


def test_plaintext_footer_pme(keys: dict[str, str], tmp_path: Path, kms_home: Path) -> None:
    r = inspect_parquet(pme_file(tmp_path / "f.parquet", keys, plaintext_footer=True))
    assert r.encryption == "PME, plaintext footer" and r.algorithm == "AES_GCM_V1"
    assert r.rows == 1000 and r.row_groups == 4 and r.columns is not None
    by = {c.path: c for c in r.columns}
    assert by["id"].protection == "plaintext" and by["contact.email"].protection == "plaintext"
    assert by["ssn"].protection == "PME, column key" and by["card"].protection == "PME, column key"
    assert by["ssn"].key is not None and by["ssn"].key.master_key_id == master_key_id(keys["pii"])
    assert by["ssn"].key.key_uri == keys["pii"] and by["ssn"].key.double_wrapping
    primary = open_key_source(keys["pii"]).describe_key().primary_version
    assert by["ssn"].key.key_version == primary
    assert r.footer_key is not None and r.footer_key.key_uri == keys["foot"]
    assert "key_bytes" not in json.dumps(r.to_dict())


def test_encrypted_footer_shows_the_footer_key_only(keys: dict[str, str], tmp_path: Path) -> None:
    r = inspect_parquet(pme_file(tmp_path / "f.parquet", keys, double_wrapping=False))
    assert r.encryption == "PME, encrypted footer" and r.columns is None and r.rows is None
    assert r.footer_key is not None and r.footer_key.key_uri == keys["foot"]
    assert r.footer_key.double_wrapping is False


def test_external_key_material(keys: dict[str, str], tmp_path: Path) -> None:
    path = pme_file(tmp_path / "f.parquet", keys, external_key_material=True, plaintext_footer=True)
    r = inspect_parquet(path)
    assert r.footer_key is not None and r.footer_key.key_material == "external: _KEY_MATERIAL_FOR_f.parquet.json"
    assert r.footer_key.key_uri == keys["foot"]
    (tmp_path / "_KEY_MATERIAL_FOR_f.parquet.json").unlink()
    assert "missing" in inspect_parquet(path).footer_key.key_material  # type: ignore[union-attr]


def test_cells_and_rotated_key_versions(keys: dict[str, str], tmp_path: Path, kms_home: Path) -> None:
    source = open_key_source(keys["pii"])
    first = CellEncryptor(["ssn", "contact.email"], source).encrypt_table(events(500))
    shared_engine(kms_home).create_key_version("alias/pii")
    second = CellEncryptor(["ssn", "contact.email"], source).encrypt_table(events(500))
    with pq.ParquetWriter(tmp_path / "c.parquet", first.schema) as w:
        w.write_table(first)
        w.write_table(second)
    r = inspect_parquet(tmp_path / "c.parquet")
    assert r.encryption == "none" and r.cells_key == keys["pii"] and r.columns is not None
    by = {c.path: c for c in r.columns}
    assert by["ssn"].protection == "cells (field value v1)" and by["ssn"].data_keys == 2
    assert len(by["ssn"].key_versions) == 2 and by["ssn"].key_kinds == ["local keystore"]
    assert by["card"].protection == "plaintext" and by["id"].protection == "plaintext"


def test_plain_parquet_and_binary_columns_that_are_not_cells(tmp_path: Path) -> None:
    import pyarrow as pa

    table = pa.table({"h": [bytes([i % 256]) * 20 for i in range(5000)], "s": ["x"] * 5000})
    pq.write_table(table, tmp_path / "p.parquet")
    r = inspect_parquet(tmp_path / "p.parquet")
    assert r.encryption == "none" and r.columns is not None
    assert {c.protection for c in r.columns} == {"plaintext"}


def test_not_parquet_and_truncated(keys: dict[str, str], tmp_path: Path) -> None:
    good = pme_file(tmp_path / "f.parquet", keys, plaintext_footer=True).read_bytes()
    for content in (b"", b"PAR1", b"hello world, not parquet", good[: len(good) // 2], good[:-1]):
        (tmp_path / "x").write_bytes(content)
        with pytest.raises(FormatError):
            inspect_parquet(tmp_path / "x")


def test_the_thrift_reader_never_fails_other_than_format_error() -> None:
    rng = random.Random(7)
    for _ in range(3000):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        try:
            read_struct(blob)
        except FormatError:
            pass


def test_cli_inspect_in_a_child_process(keys: dict[str, str], tmp_path: Path, kms_home: Path) -> None:
    """The plaintext-footer file whose column metadata aborts pyarrow: the CLI shows it."""
    pme_file(tmp_path / "f.parquet", keys, plaintext_footer=True)
    (tmp_path / "bad.parquet").write_bytes(b"nope")
    run = cli_subprocess("inspect", tmp_path / "f.parquet", home=kms_home)
    assert run.code == 0, run.err
    assert "PME, plaintext footer" in run.out and "PME, column key" in run.out
    assert master_key_id(keys["pci"]) in run.out and keys["pci"] in run.out
    run = cli_subprocess("inspect", tmp_path, "--json", home=kms_home)
    assert run.code == 1
    lines = [json.loads(line) for line in run.out.splitlines()]
    assert "error" in lines[0] and lines[1]["encryption"] == "PME, plaintext footer"
    assert "Traceback" not in run.err


def test_inspect_is_generic_over_file_formats(keys: dict[str, str], tmp_path: Path, cli: Any) -> None:
    """``kmsbeam inspect`` (``inspect_file``) shows an object stream's one data key from its
    header, and Parquet files as before (their JSON has no ``data_key``)."""
    from kmsbeam.formats.inspect import inspect_file
    from kmsbeam.formats.objects import ObjectFormat

    source = open_key_source(keys["pii"])
    obj = tmp_path / "x.kmsb"
    obj.write_bytes(ObjectFormat(chunk_size=1024).encryptor(source).encrypt(b"rows\n" * 1000))
    report = inspect_file(obj)
    version = source.describe_key().primary_version
    assert report.encryption == "object stream v1" and report.columns is None
    assert report.data_key is not None and report.data_key.key_uri == keys["pii"]
    assert report.data_key.key_version == version and report.data_key.key_kind == "local keystore"
    run = cli("inspect", obj)
    assert run.code == 0 and "object stream v1" in run.out and f"version {version}" in run.out
    pme = pme_file(tmp_path / "f.parquet", keys, plaintext_footer=True)
    run = cli("inspect", obj, pme, "--json")
    first, second = (json.loads(line) for line in run.out.splitlines())
    assert first["data_key"]["key_uri"] == keys["pii"] and "data_key" not in second
    (tmp_path / "bad.kmsb").write_bytes(b"KMSO" + bytes(10))
    with pytest.raises(FormatError, match="not a kmsbeam object"):
        inspect_file(tmp_path / "bad.kmsb")
