"""``kmsbeam decrypt --require-key``: strict decryption, and the master keys actually used."""

from __future__ import annotations

import json
from pathlib import Path

from kmsbeam import open_key_source
from tests.pipelines.conftest import shard_lines, table_value


def _encrypt(cli, customers: Path, out: Path, key: str) -> None:  # type: ignore[no-untyped-def]
    r = cli("encrypt", customers, out, "--fields", "ssn,email", "--key", key)
    assert r.code == 0, r.err


def _version(uri: str) -> str:
    (version,) = open_key_source(uri).key_versions()
    return version


def test_decrypt_names_the_key_actually_used_and_strict_mode_refuses_others(
    cli, customers: Path, tmp_path: Path  # type: ignore[no-untyped-def]
) -> None:
    enc_b = tmp_path / "enc-b"
    _encrypt(cli, customers, enc_b, "local:alias/b")
    open_key_source("local:alias/a", create=True)
    # --key a without strict mode: decrypts (a local: source opens every key of the keystore),
    # and the summary says the data was under another master key, not a
    r = cli("decrypt", enc_b, tmp_path / "p1", "--key", "local:alias/a")
    assert r.code == 0, r.err
    used = table_value(r.out, "master keys used")
    assert used == f"another master key (version {_version('local:alias/b')})"
    # strict: every record refused before any Decrypt call
    r = cli("decrypt", enc_b, tmp_path / "p2", "--key", "local:alias/a", "--require-key", "alias/a")
    assert r.code == 3, r.err  # every record is a dead letter: the table and one sentence
    assert table_value(r.out, "KMS calls: Decrypt") == "0"
    assert table_value(r.out, "required keys") == "local:alias/a"
    letters = [json.loads(x) for x in shard_lines(tmp_path / "p2" / "_dead_letters")]
    assert len(letters) == len(customers.read_text().splitlines())
    assert {x["reason"] for x in letters} == {
        "key not allowed: the value's data key is wrapped under a master key that --require-key "
        "(require_keys=) does not list"}  # fmt: skip
    assert shard_lines(tmp_path / "p2") == []


def test_a_mixed_dataset_on_two_worker_processes(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc_a, enc_b = tmp_path / "enc-a", tmp_path / "enc-b"
    _encrypt(cli, customers, enc_a, "local:alias/a")
    _encrypt(cli, customers, enc_b, "local:alias/b")
    for i, shard in enumerate(sorted(enc_b.glob("part-*"))):  # b's values join a's dataset
        (enc_a / f"part-9999{i}-of-99999.jsonl").write_text(shard.read_text())
    n = len(customers.read_text().splitlines())
    plain = tmp_path / "plain"
    r = cli("decrypt", enc_a, plain, "--require-key", "local:alias/a",
            "--direct_running_mode", "multi_processing", "--direct_num_workers", "2")  # fmt: skip
    assert r.code == 3 and f"{n:,} of {2 * n:,} records" in r.err, r.err  # over the budget (0)
    assert len(shard_lines(plain)) == n and len(shard_lines(plain / "_dead_letters")) == n
    assert table_value(r.out, "master keys used") == f"local:alias/a (version {_version('local:alias/a')})"
    r = cli("decrypt", enc_a, tmp_path / "all", "--direct_running_mode", "multi_processing",
            "--direct_num_workers", "2")  # fmt: skip
    assert r.code == 0, r.err
    used = table_value(r.out, "master keys used")
    assert f"local:alias/a (version {_version('local:alias/a')})" in used
    assert f"another master key (version {_version('local:alias/b')})" in used


def test_cat_and_rotate_refuse_other_master_keys(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import io

    from kmsbeam.formats.objects import ObjectWriter

    buf = io.BytesIO()
    with ObjectWriter(buf, open_key_source("local:alias/b", create=True), close_raw=False) as w:
        w.write(b"rows\n")
    obj = tmp_path / "o.kmsb"
    obj.write_bytes(buf.getvalue())
    open_key_source("local:alias/a", create=True)
    r = cli("cat", obj, "--key", "local:alias/a", "--require-key", "alias/a")
    assert r.code == 1 and "key not allowed" in r.err and "rows" not in r.out, r.err
    r = cli("cat", obj, "--require-key", "local:alias/b")
    assert r.code == 0 and r.out == "rows\n", r.err

    enc = tmp_path / "enc"
    _encrypt(cli, customers, enc, "local:alias/b")
    open_key_source("local:alias/c", create=True)
    n = len(customers.read_text().splitlines())
    r = cli("rotate", enc, tmp_path / "r1", "--to-key", "local:alias/c", "--require-key", "alias/a")
    assert r.code == 3 and "every record" in r.err, r.err
    assert table_value(r.out, "KMS calls: ReEncrypt") == "0"
    letters = [json.loads(x) for x in shard_lines(tmp_path / "r1" / "_dead_letters")]
    assert len(letters) == n and all(x["reason"].startswith("key not allowed") for x in letters)
    r = cli("rotate", enc, tmp_path / "dry", "--to-key", "local:alias/c", "--require-key", "alias/a",
            "--dry-run")  # fmt: skip
    assert r.code == 0, r.err
    assert table_value(r.out, "data keys to move") == "0"
    assert table_value(r.out, "data keys not allowed (--require-key)") == table_value(r.out, "data keys")
    r = cli("rotate", enc, tmp_path / "r2", "--to-key", "local:alias/c", "--require-key", "alias/b")
    assert r.code == 0, r.err
    rotation = json.loads((tmp_path / "r2" / "_kmsbeam_rotation.json").read_text())
    assert rotation["counts"]["dead_letters"] == 0 and rotation["required_keys"] == ["local:alias/b"]


def test_parquet_cells_refuse_other_master_keys(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(50)), "ssn": [f"s{i}" for i in range(50)]}), src)
    enc = tmp_path / "enc"
    r = cli("encrypt", src, enc, "--columns", "ssn", "--parquet-mode", "cells", "--key", "local:alias/b")
    assert r.code == 0, r.err
    open_key_source("local:alias/a", create=True)
    r = cli("decrypt", enc, tmp_path / "p1", "--key", "local:alias/a", "--require-key", "alias/a")
    assert r.code == 3, r.err  # every record is a dead letter
    assert table_value(r.out, "KMS calls: Decrypt") == "0"
    letters = [json.loads(x) for x in shard_lines(tmp_path / "p1" / "_dead_letters")]
    assert len(letters) == 50 and all(x["reason"].startswith("key not allowed") for x in letters)
    r = cli("decrypt", enc, tmp_path / "p2", "--require-key", "local:alias/b")
    assert r.code == 0, r.err
    assert table_value(r.out, "master keys used") == f"local:alias/b (version {_version('local:alias/b')})"
