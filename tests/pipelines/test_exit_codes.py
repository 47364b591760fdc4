"""Exit codes a scheduler can trust: 0 good, 2 a mistake found before anything is written,
3 dead letters over ``--max-dead-letters`` (or every record failed); reasons counted exactly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.pipelines.conftest import shard_lines, table_value

MP = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]


def _with_holes(customers: Path, tmp_path: Path, every: int = 100) -> Path:
    """customers.jsonl with ``ssn`` removed from every ``every``-th record (10 of 1,000)."""
    rows = [json.loads(line) for line in customers.read_text().splitlines()]
    for row in rows[::every]:
        row.pop("ssn")
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _one_error(err: str) -> str:
    lines = [x for x in err.strip().splitlines() if x.startswith("kmsbeam: error: ")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_mistyped_field_is_a_usage_error_before_anything_is_written(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                      tmp_path: Path) -> None:  # fmt: skip
    out = tmp_path / "enc"
    r = cli("encrypt", customers, out, "--fields", "ssn,emial")
    assert r.code == 2, r.err
    line = _one_error(r.err)
    assert "'emial'" in line and "--fields" in line and "email" in line  # names, never values
    assert "930-55-5208" not in r.err and not out.exists()
    r = cli("encrypt", customers, out, "--fields", "ssn", "--bind", "idd")
    assert r.code == 2 and "--bind" in _one_error(r.err) and not out.exists()


def test_a_wrong_context_on_decrypt_is_a_usage_error(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--context", "dataset=a").code == 0
    plain.mkdir()
    (plain / "keep.txt").write_text("mine")
    r = cli("decrypt", enc, plain, "--context", "dataset=b", "--overwrite")
    assert r.code == 2, r.err
    line = _one_error(r.err)
    assert "--context" in line and "'dataset'" in line and "=b" not in line and "=a" not in line
    assert sorted(p.name for p in plain.iterdir()) == ["keep.txt"]
    r = cli("decrypt", enc, plain / "x", "--context", "dataset=a")  # the same context: fine
    assert r.code == 0, r.err


def test_decrypting_data_that_was_never_encrypted_is_a_usage_error(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:  # fmt: skip
    r = cli("decrypt", customers, tmp_path / "plain", "--fields", "ssn")
    assert r.code == 2, r.err
    assert "no kmsbeam encrypted values" in _one_error(r.err) and not (tmp_path / "plain").exists()
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn").code == 0
    (enc / "_kmsbeam.json").unlink()  # without the manifest, a cleartext field is found by sampling
    r = cli("decrypt", enc / "part-*", tmp_path / "plain", "--fields", "email")
    assert r.code == 2 and "no kmsbeam encrypted values" in _one_error(r.err), r.err


def test_dead_letters_over_the_budget_exit_3_with_counts_per_reason(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                    tmp_path: Path) -> None:  # fmt: skip
    source = _with_holes(customers, tmp_path)
    r = cli("encrypt", source, tmp_path / "a", "--fields", "ssn")
    assert r.code == 3, r.err
    line = _one_error(r.err)
    assert "10 of 1,000 records" in line and "missing field: ssn" in line and "--max-dead-letters 0" in line
    assert table_value(r.out, "dead letter reasons") == "10  missing field: ssn"
    assert table_value(r.out, "records out") == "990"
    for budget, code in (("10", 0), ("9", 3), ("0.01", 0), ("0.009", 3), ("1", 3)):
        r = cli("encrypt", source, tmp_path / f"b{budget}", "--fields", "ssn", "--max-dead-letters", budget, "-q")
        assert r.code == code, (budget, r.err)
        assert ("kmsbeam: warning: 10 of 1,000" in r.err) == (code == 0), r.err


def test_reasons_are_exact_on_multi_processing(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = _with_holes(customers, tmp_path, every=50)  # 20 records
    source.write_text(source.read_text() + '{"id": 1001, "ssn": \n')  # a line that is not JSON
    r = cli("encrypt", source, tmp_path / "enc", "--fields", "ssn", "--max-dead-letters", "21", *MP)
    assert r.code == 0, r.err
    assert table_value(r.out, "dead letter reasons") == "20  missing field: ssn", r.out
    rows = r.out.splitlines()
    after = rows[rows.index(next(x for x in rows if "dead letter reasons" in x)) + 1].strip()
    assert after.startswith("1  ") and "JSON" in after, r.out
    assert len(shard_lines(tmp_path / "enc" / "_dead_letters")) == 21


def test_every_record_failed_says_so_in_one_sentence(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--context", "dataset=a").code == 0
    (enc / "_kmsbeam.json").unlink()  # no manifest: the context cannot be checked up front
    r = cli("decrypt", enc / "part-*", tmp_path / "plain", "--fields", "ssn", "--context", "dataset=b",
            "--max-dead-letters", "1.0")  # fmt: skip
    assert r.code == 3, r.err
    line = _one_error(r.err)
    assert line.startswith("kmsbeam: error: every record (1,000) went to the dead letters (1,000 "
                           "authentication failed"), line  # fmt: skip
    assert "nothing was written" in line


def test_exit_codes_are_documented_and_a_bad_budget_is_a_usage_error(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                     tmp_path: Path) -> None:  # fmt: skip
    r = cli("--help")
    assert r.code == 0
    text = r.out + r.err
    for code in ("0", "1", "2", "3", "130"):
        assert f"\n  {code:<4} " in text, text
    from kmsbeam.pipelines import cli as cli_module

    assert "130  interrupted" in (cli_module.__doc__ or "")
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    assert "| 3 |" in readme and "--max-dead-letters" in readme
    for bad in ("-1", "1.5", "x", "nan"):
        r = cli("encrypt", customers, tmp_path / "o", "--fields", "ssn", "--max-dead-letters", bad)
        assert r.code == 2 and "--max-dead-letters" in r.err, (bad, r.err)


@pytest.mark.parametrize("budget, code", [("0", 3), ("0.5", 0)])
def test_rotate_applies_the_budget(cli, customers: Path, tmp_path: Path, budget: str, code: int) -> None:  # type: ignore[no-untyped-def]
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn").code == 0
    (shard,) = enc.glob("part-*")
    lines = shard.read_text().splitlines()
    first = json.loads(lines[0])
    first["ssn"] = "930-55-5208"  # not a kmsbeam value: a dead letter of the rotation
    shard.write_text("\n".join([json.dumps(first), *lines[1:]]) + "\n")
    assert cli("keys", "create", "--alias", "next").code == 0
    r = cli("rotate", enc, tmp_path / "rot", "--to-key", "local:alias/next", "--max-dead-letters", budget, "-q")
    assert r.code == code, r.err
    assert ("1 of 1,000 records" in r.err) and ("malformed value" in r.err), r.err


def test_unknown_kms_credentials_are_a_usage_error_before_anything_is_written(  # type: ignore[no-untyped-def]
    cli, customers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kmsbeam.alikms import clear_clients
    from kmsbeam.emulator import EmulatorServer
    from kmsbeam.keys.registry import clear_key_source_cache

    with EmulatorServer(tmp_path / "kms", {"etl": "etl-secret"}) as server:
        server.engine.create_alias("alias/pii", server.engine.create_key("pii").key_id)
        key = f"kms-emulator://{server.endpoint}/alias/pii"
        for ak, secret in (("nobody", "etl-secret"), ("etl", "wrong-secret")):
            monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", ak)
            monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret)
            clear_clients()
            clear_key_source_cache()
            r = cli("encrypt", customers, tmp_path / "enc", "--fields", "ssn", "--key", key)
            assert r.code == 2, r.err
            line = _one_error(r.err)
            assert "refused the credentials" in line and secret not in line, line
            assert not (tmp_path / "enc").exists()  # not even an empty OUTPUT
        actions = [json.loads(x)["eventName"] for x in server.audit.path.read_text().splitlines()]
        assert "GenerateDataKey" not in actions  # refused at DescribeKey, before the pipeline
