"""``kmsbeam encrypt|decrypt --parquet-mode pme|cells`` and ``kmsbeam inspect`` end to end."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmsbeam.keys.local import shared_engine
from kmsbeam.formats.parquet import crypto_factory, master_key_id
from tests.parquet.conftest import events, table_value


@pytest.fixture(autouse=True)
def fresh_pme_caches() -> None:
    crypto_factory().remove_cache_entries_for_all_tokens()


@pytest.fixture()
def source(tmp_path: Path) -> Path:
    path = tmp_path / "events.parquet"
    pq.write_table(events(2000), path, row_group_size=700)
    return path


def output(directory: Path) -> pa.Table:
    return pa.concat_tables(pq.read_table(f) for f in sorted(directory.glob("part-*.parquet")))


def test_pme_round_trip(cli: Any, keys: dict[str, str], source: Path, tmp_path: Path) -> None:
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    r = cli("encrypt", source, enc, "--columns", "ssn,card,contact.email", "--key", keys["pii"],
            "--parquet-mode", "pme", "--column-key", f"card={keys['pci']}", "--footer-key", keys["foot"],
            "--plaintext-footer", "--context", "dataset=events")  # fmt: skip
    assert r.code == 0, r.err
    assert "pme mode" in r.out and "2,000" in r.out
    manifest = json.loads((enc / "_kmsbeam.json").read_text())
    assert manifest["mode"] == "pme" and manifest["fields"] == ["ssn", "card", "contact.email"]
    assert manifest["column_keys"] == {"ssn": keys["pii"], "card": keys["pci"], "contact.email": keys["pii"]}
    assert manifest["footer_key"] == keys["foot"] and manifest["plaintext_footer"] is True
    files = sorted(enc.glob("part-*"))
    data = b"".join(f.read_bytes() for f in files)
    assert b"4111-1111-" not in data and b"@example.com" not in data
    r = cli("inspect", enc)
    assert r.code == 0, r.err
    assert "PME, plaintext footer" in r.out and master_key_id(keys["pci"]) in r.out
    r = cli("decrypt", enc, plain)
    assert r.code == 0, r.err
    assert output(plain).sort_by("id").equals(events(2000))


def test_cells_round_trip_and_bytes(cli: Any, keys: dict[str, str], source: Path, tmp_path: Path) -> None:
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    r = cli("encrypt", source, enc, "--columns", "ssn,contact.email", "--bind", "id",
            "--key", keys["pii"], "--parquet-mode", "cells")  # fmt: skip
    assert r.code == 0, r.err
    table = output(enc)
    assert table.schema.field("ssn").type == pa.binary()
    f = next(enc.glob("part-*"))
    meta = pq.ParquetFile(f).metadata  # a plain Parquet file: any reader opens it
    ssn = [meta.row_group(0).column(i) for i in range(meta.num_columns) if meta.row_group(0).column(i).path_in_schema == "ssn"][0]
    assert "DELTA_BYTE_ARRAY" in ssn.encodings
    r = cli("inspect", f)
    assert "cells (field value v1)" in r.out and "1 data key(s)" in r.out
    r = cli("decrypt", enc, plain)
    assert r.code == 0, r.err
    assert output(plain).sort_by("id").equals(events(2000))
    # the files alone, without the manifest: the cells metadata says what to do
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(f, alone / "cells.parquet")
    r = cli("decrypt", alone / "cells.parquet", tmp_path / "plain2", "--parquet-mode", "cells", "--key", keys["pii"])
    assert r.code == 0, r.err
    assert output(tmp_path / "plain2").sort_by("id").equals(events(2000))


def test_external_key_material_and_overwrite(cli: Any, keys: dict[str, str], source: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc"
    args = ("encrypt", source, enc, "--columns", "ssn", "--key", keys["pii"], "--parquet-mode", "pme",
            "--external-key-material")  # fmt: skip
    assert cli(*args).code == 0
    assert sorted(p.name for p in enc.iterdir()) == [
        "_KEY_MATERIAL_FOR_part-00000-of-00001.parquet.json", "_kmsbeam.json", "part-00000-of-00001.parquet"]
    assert cli(*args).code == 2
    assert cli(*args, "--overwrite").code == 0
    r = cli("decrypt", enc, tmp_path / "plain")
    assert r.code == 0, r.err
    assert output(tmp_path / "plain").sort_by("id").equals(events(2000))


def test_tampered_cells_go_to_dead_letters(cli: Any, keys: dict[str, str], source: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc"
    assert cli("encrypt", source, enc, "--columns", "ssn", "--key", keys["pii"], "--parquet-mode", "cells").code == 0
    f = next(enc.glob("part-*"))
    table = pq.read_table(f)
    ssn = table.column("ssn").to_pylist()
    ssn[10] = ssn[11][:-1] + bytes([ssn[11][-1] ^ 1])
    pq.write_table(table.set_column(1, table.schema.field("ssn"), pa.array(ssn, pa.binary())), f)
    r = cli("decrypt", enc, tmp_path / "plain")
    assert r.code == 3, r.err  # one dead letter, over the default budget (0)
    assert "1 of 2,000 records went to the dead letters" in r.err
    letters = [json.loads(line) for p in (tmp_path / "plain" / "_dead_letters").glob("part-*")
               for line in p.read_text().splitlines()]  # fmt: skip
    assert [d["record"]["id"] for d in letters] == [10]
    assert letters[0]["reason"].startswith("authentication failed")
    assert output(tmp_path / "plain").num_rows == 1999


def test_disabled_key_on_decrypt_is_one_clear_error(cli: Any, keys: dict[str, str], source: Path,
                                                     tmp_path: Path, kms_home: Path) -> None:  # fmt: skip
    enc = tmp_path / "enc"
    assert cli("encrypt", source, enc, "--columns", "ssn", "--key", keys["pii"], "--parquet-mode", "pme",
               "--footer-key", keys["foot"]).code == 0  # fmt: skip
    shared_engine(kms_home).disable_key("alias/pii")
    from kmsbeam import shared_cache

    shared_cache().clear()
    r = cli("decrypt", enc, tmp_path / "plain")
    assert r.code == 1
    assert "disabled" in r.err and "Traceback" not in r.err and len(r.err.strip().splitlines()) <= 2


@pytest.mark.parametrize("args, message", [
    (("--columns", "ssn"), "--parquet-mode pme or cells"),
    (("--columns", "nope", "--parquet-mode", "pme"), "unknown column 'nope'"),
    (("--columns", "nope", "--parquet-mode", "cells"), "unknown column 'nope'"),
    (("--parquet-mode", "pme"), "name the columns"),
    (("--columns", "ssn", "--parquet-mode", "cells", "--plaintext-footer"), "are for --parquet-mode pme"),
    (("--columns", "ssn", "--parquet-mode", "pme", "--bind", "id"), "--bind is for --parquet-mode cells"),
    (("--columns", "ssn", "--parquet-mode", "pme", "--column-key", "ssn"), "--column-key takes COLUMN=URI"),
    (("--columns", "ssn", "--parquet-mode", "pme", "--mode", "record"), "do not combine"),
])  # fmt: skip
def test_user_mistakes(cli: Any, keys: dict[str, str], source: Path, tmp_path: Path, args: tuple[str, ...],
                       message: str) -> None:  # fmt: skip
    r = cli("encrypt", source, tmp_path / "enc", "--key", keys["pii"], *args)
    assert r.code == 2 and message in r.err and "Traceback" not in r.err
    assert not (tmp_path / "enc").exists()  # found before anything was written


def test_parquet_mode_needs_parquet_input(cli: Any, keys: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"ssn": "1"}\n')
    r = cli("encrypt", tmp_path / "in.jsonl", tmp_path / "enc", "--columns", "ssn", "--parquet-mode", "cells")
    assert r.code == 2 and "Parquet input" in r.err


def test_inspect_mistakes(cli: Any, tmp_path: Path) -> None:
    r = cli("inspect", tmp_path / "missing.parquet")
    assert r.code == 2 and "does not exist" in r.err
    (tmp_path / "x.parquet").write_text("not parquet")
    r = cli("inspect", tmp_path / "x.parquet")
    assert r.code == 1 and "not a Parquet file" in r.out


def test_many_input_files_cost_one_wrap_per_master_key(cli: Any, keys: dict[str, str], tmp_path: Path) -> None:
    from tests.parquet.conftest import events as make

    for i in range(3):
        pq.write_table(make(500), tmp_path / f"in-{i}.parquet")
    r = cli("encrypt", str(tmp_path / "in-*.parquet"), tmp_path / "enc", "--columns", "ssn,card",
            "--key", keys["pii"], "--column-key", f"card={keys['pci']}", "--footer-key", keys["foot"],
            "--parquet-mode", "pme")  # fmt: skip
    assert r.code == 0, r.err
    assert table_value(r.out, "KMS calls: GenerateDataKey") == "3"
    assert table_value(r.out, "records in") == "1,500"
    r = cli("decrypt", tmp_path / "enc", tmp_path / "plain")
    assert r.code == 0, r.err
    assert table_value(r.out, "KMS calls: Decrypt") == "3"
    assert output(tmp_path / "plain").num_rows == 1500


def test_cells_encrypt_dead_letters_are_sealed(cli: Any, keys: dict[str, str], tmp_path: Path) -> None:
    deep: Any = "cleartext-marker"
    for _ in range(70):  # past the value codec's nesting limit (64): a record's failure
        deep = [deep]
    pq.write_table(pa.table({"id": [1, 2], "deep": [deep, deep], "ssn": ["123-45-6789", "987-65-4321"]}),
                   tmp_path / "deep.parquet")  # fmt: skip
    r = cli("encrypt", tmp_path / "deep.parquet", tmp_path / "enc", "--columns", "ssn,deep",
            "--key", keys["pii"], "--parquet-mode", "cells")  # fmt: skip
    assert r.code == 3, r.err
    files = list((tmp_path / "enc" / "_dead_letters").glob("part-*"))
    letters = [json.loads(line) for p in files for line in p.read_text().splitlines()]
    assert len(letters) == 2 and all(d["kmsbeam_dead_letter"] == 1 and "sealed" in d for d in letters)
    assert all(d["reason"].startswith("value too deep") for d in letters)
    raw = b"".join(p.read_bytes() for p in files)
    assert b"cleartext-marker" not in raw and b"123-45-6789" not in raw
