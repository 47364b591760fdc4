"""Dead letters, the default key's notice, and user mistakes (exit 2, one line, no traceback)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipelines.conftest import shard_lines, table_value


def test_records_that_fail_go_to_dead_letters(cli, tmp_path: Path) -> None:
    records = [{"id": i, "ssn": f"900-00-{i:04d}"} for i in range(20)]
    records[3] = {"id": 3}  # no ssn
    source = tmp_path / "in.jsonl"
    lines = [json.dumps(r) if i != 7 else "{not json" for i, r in enumerate(records)]
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    enc = tmp_path / "enc"
    r = cli("encrypt", source, enc, "--fields", "ssn")
    assert r.code == 3  # dead letters over the default budget (0)
    assert table_value(r.out, "records in") == "20"
    assert table_value(r.out, "records out") == "18"
    assert table_value(r.out, "dead letters").startswith("2")
    assert str(enc / "_dead_letters") in table_value(r.out, "dead letters")
    errors = [line for line in r.err.splitlines() if line.startswith("kmsbeam: error: ")]
    assert len(errors) == 1 and "2 of 20 records" in errors[0]
    from kmsbeam.pipelines.sealed import unseal  # encrypt-side dead letters are sealed

    sealed = [json.loads(line) for line in shard_lines(enc / "_dead_letters")]
    assert all("record" not in d and "sealed" in d for d in sealed)
    letters = unseal(sealed, "local:alias/kmsbeam-default", {})
    by_reason = {d["reason"]: d for d in letters}
    assert set(by_reason) == {"missing field: ssn", "not valid JSON"}
    assert by_reason["missing field: ssn"]["record"] == {"id": 3}
    assert by_reason["missing field: ssn"]["transform"] == "EncryptFields"
    assert by_reason["not valid JSON"]["record"] == "{not json"
    assert len(shard_lines(enc)) == 18


def test_dead_letter_option_and_json_safe_records(cli, tmp_path: Path) -> None:
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    # a column named like the payload field: every record is a bad record (a dead letter)
    table = pa.table({"id": [1, 2], "blob": [b"\x00\x01", b"\x02"],
                      "day": [dt.date(2024, 1, 2), dt.date(2024, 1, 3)],
                      "kmsbeam_record": ["x", "y"]})  # fmt: skip
    source = tmp_path / "in.parquet"
    pq.write_table(table, source)
    dead = tmp_path / "dead"
    r = cli("encrypt", source, tmp_path / "enc", "--mode", "record", "--keep", "id",
            "--key", "local:alias/other", "--dead-letter", dead)
    assert r.code == 3 and "every record (2) went to the dead letters" in r.err, r.err
    from kmsbeam.pipelines.sealed import unseal  # encrypt-side dead letters are sealed

    letters = unseal([json.loads(line) for line in shard_lines(dead)], "local:alias/other", {})
    assert len(letters) == 2
    assert all(d["reason"] == "record already has a field named kmsbeam_record" for d in letters)
    assert {d["record"]["blob"] for d in letters} == {"AAE=", "Ag=="}  # base64 text
    assert {d["record"]["day"] for d in letters} == {"2024-01-02", "2024-01-03"}


def test_a_disabled_key_fails_the_job_and_dead_letters_nothing(cli, customers: Path, tmp_path: Path) -> None:
    """Dead letters are for bad records: a disabled key is the key source saying no (exit 1,
    one sentence), on encrypt and on decrypt, and no record is written anywhere."""
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", "local:alias/other").code == 0
    cli("keys", "disable", "alias/other")
    for argv in (("encrypt", customers, tmp_path / "enc2", "--fields", "ssn"),
                 ("decrypt", enc, tmp_path / "plain")):  # fmt: skip
        r = cli(*argv, "--key", "local:alias/other")
        assert r.code == 1, r.err
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and "key disabled" in lines[0] and "Traceback" not in r.err, r.err
        out = Path(argv[2])
        assert not list(out.glob("part-*")) and not (out / "_dead_letters").exists()
        assert not (out / "_kmsbeam.json").exists() or argv[0] == "decrypt"


def test_wrong_context_on_decrypt_dead_letters_every_record(cli, customers: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--context", "dataset=a").code == 0
    r = cli("decrypt", enc, tmp_path / "plain", "--context", "dataset=b")
    assert r.code == 2 and "--context differs" in r.err  # the manifest's context: checked first
    assert not (tmp_path / "plain").exists()
    (enc / "_kmsbeam.json").unlink()  # without a manifest, every record is a dead letter (exit 3)
    r = cli("decrypt", enc / "part-*", tmp_path / "plain", "--fields", "ssn", "--context", "dataset=b")
    assert r.code == 3 and "every record (1,000)" in r.err, r.err
    assert "Traceback" not in r.err
    assert table_value(r.out, "records out") == "0"
    letters = [json.loads(line) for line in shard_lines(tmp_path / "plain" / "_dead_letters")]
    assert len(letters) == 1000
    assert {d["reason"] for d in letters} == {
        "authentication failed (field ssn): tampered, moved, or wrong key or context"
    }


def test_default_key_notice_appears_on_first_use_only(cli, customers: Path, tmp_path: Path) -> None:
    r = cli("encrypt", customers, tmp_path / "a", "--fields", "ssn")
    notices = [line for line in r.err.splitlines() if "created key" in line]
    assert len(notices) == 1
    assert notices[0].startswith("kmsbeam: created key alias/kmsbeam-default in the local keystore")
    assert "back it up" in notices[0]
    r = cli("encrypt", customers, tmp_path / "b", "--fields", "ssn")
    assert r.code == 0 and "created key" not in r.err
    r = cli("decrypt", tmp_path / "a", tmp_path / "c")
    assert r.code == 0 and "created key" not in r.err


def test_decrypt_never_creates_a_key(cli, customers: Path, tmp_path: Path, kms_home: Path) -> None:
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn").code == 0
    r = cli("decrypt", enc, tmp_path / "plain", "--key", "local:alias/nope")
    assert r.code == 2
    assert r.err.startswith("kmsbeam: error: no key alias/nope")
    assert cli("keys", "describe", "alias/nope").code == 2


def _one_error_line(r) -> str:  # type: ignore[no-untyped-def]
    lines = r.err.strip().splitlines()
    assert r.code == 2, r.err
    assert len(lines) == 1, r.err
    assert lines[0].startswith("kmsbeam: error: ")
    assert "Traceback" not in r.err
    return lines[0]


@pytest.mark.parametrize(
    "args, expected",
    [
        (["encrypt", "{tmp}/missing.jsonl", "{tmp}/o", "--fields", "ssn"], "no input file matches"),
        (["encrypt", "{tmp}/data.txt", "{tmp}/o", "--fields", "ssn"], "--format"),
        (["encrypt", "{tmp}/data.txt", "{tmp}/o", "--format", "xml"], "invalid choice"),
        (["encrypt", "{cust}", "{tmp}/o"], "--fields"),
        (["encrypt", "{cust}", "{tmp}/o", "--fields", "ssn", "--key", "nope:alias/x"], "unknown key URI"),
        (["encrypt", "{cust}", "{tmp}/o", "--fields", "ssn", "--key", "local:alias/x?pin=1"], "secrets"),
        (["encrypt", "{cust}", "{tmp}/o", "--fields", "ssn", "--context", "novalue"], "NAME=VALUE"),
        (["encrypt", "{cust}", "{tmp}/o", "--fields", "ssn", "--direct_running_mode",
          "multi_threading"], "multi_threading loses records"),
        (["encrypt", "{cust}", "{tmp}/o", "--fields", "ssn", "--feilds", "x"], "unknown option --feilds"),
        (["encrypt", "{cust}", "{tmp}/o", "--mode", "record", "--fields", "ssn"], "--mode fields"),
        (["encrypt", "{cust}", "{tmp}/o", "--fields", "ssn", "--max-records-per-key", "0"], "positive"),
        (["encrypt", "{csv}", "{tmp}/o", "--fields", "social"], "unknown field 'social'"),
        (["decrypt", "{tmp}/empty", "{tmp}/o"], "no part-* data files"),
        (["encrypt"], "required"),
        (["frobnicate"], "invalid choice"),
    ],
)
def test_user_mistakes_exit_2_with_one_line(cli, tmp_path: Path, customers: Path, kms_home: Path,
                                            args: list[str], expected: str) -> None:  # fmt: skip
    (tmp_path / "data.txt").write_text("{}\n")
    (tmp_path / "empty").mkdir()
    fill = {"tmp": str(tmp_path), "cust": str(customers),
            "csv": str(customers.with_suffix(".csv"))}  # fmt: skip
    r = cli(*[a.format(**fill) for a in args])
    assert expected in _one_error_line(r)
    assert not (kms_home / "keystore.db").exists()  # a mistake creates no key


def test_manifest_mismatches_are_user_mistakes(cli, customers: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn,email").code == 0
    line = _one_error_line(cli("decrypt", enc, tmp_path / "p", "--fields", "phone"))
    assert "unknown field 'phone'" in line and "ssn, email" in line
    assert "fields mode" in _one_error_line(cli("decrypt", enc, tmp_path / "p", "--mode", "record"))
    assert "--bind" in _one_error_line(cli("decrypt", enc, tmp_path / "p", "--bind", "id"))
    (enc / "_kmsbeam.json").write_text("{broken")
    assert "not valid JSON" in _one_error_line(cli("decrypt", enc, tmp_path / "p"))
    (enc / "_kmsbeam.json").unlink()
    assert "--fields" in _one_error_line(cli("decrypt", enc, tmp_path / "p"))


def test_output_with_data_needs_overwrite(cli, customers: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    line = _one_error_line(cli("encrypt", customers, out, "--fields", "ssn"))
    assert "--overwrite" in line
    assert cli("encrypt", customers, out, "--fields", "ssn", "--overwrite").code == 0
    assert cli("encrypt", customers, out, "--fields", "ssn", "--overwrite").code == 0
    assert (out / "notes.txt").read_text() == "mine"  # only kmsbeam's own files are replaced
    assert len(shard_lines(out)) == 1000


def test_decrypt_subset_of_fields(cli, customers: Path, tmp_path: Path) -> None:
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn,email").code == 0
    assert cli("decrypt", enc, tmp_path / "p", "--fields", "email").code == 0
    original = {json.loads(x)["id"]: json.loads(x) for x in customers.read_text("utf-8").splitlines()}
    for line in shard_lines(tmp_path / "p"):
        record = json.loads(line)
        assert record["email"] == original[record["id"]]["email"]
        assert record["ssn"] != original[record["id"]]["ssn"]
