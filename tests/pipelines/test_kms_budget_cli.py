"""`--kms-qps` reaching the workers (multi_processing, 2 workers, a real kms-emulator), the
KMS-call rows and the estimated cost line of the summary table."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmsbeam.keys.budget import active_kms_budget, clear_kms_budgets
from kmsbeam.pipelines import summary
from tests.emulator.emulator_key import emulator_key
from tests.pipelines.conftest import table_value

MP = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
N = 30


@pytest.fixture(autouse=True)
def no_budget(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv(summary.KMS_PRICE_ENV, raising=False)
    clear_kms_budgets()
    yield
    clear_kms_budgets()


@pytest.fixture()
def key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    with emulator_key(tmp_path / "kms", monkeypatch, "alias/budget") as (_, uri):
        yield uri


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"id": i, "ssn": f"{i:09d}"}) + "\n" for i in range(N)))
    return path


def waits(table: str) -> tuple[int, int]:
    """(calls that waited, ms waited) from the ``KMS budget waits`` row."""
    words = table_value(table, "KMS budget waits").replace(",", "").split()
    return int(words[0]), int(words[3])


def test_the_limit_travels_to_multi_processing_workers(cli, data: Path, tmp_path: Path, key: str) -> None:  # type: ignore[no-untyped-def]
    # One data key per record: N GenerateDataKey calls, far more than the burst (1 at 10/s).
    r = cli("encrypt", data, tmp_path / "enc", "--fields", "ssn", "--key", key,
            "--max-records-per-key", "1", "--kms-qps", "10", *MP)  # fmt: skip
    assert r.code == 0, r.err + r.out
    assert table_value(r.out, "KMS calls: GenerateDataKey") == f"{N}"
    waited, ms = waits(r.out)
    # The driver never installs the limit: the waits happened in the worker processes.
    assert active_kms_budget() is None
    assert waited >= 1 and ms >= 1
    assert "--kms-qps 10 per worker" in table_value(r.out, "KMS budget waits")
    cost = table_value(r.out, "KMS cost (estimate)")
    assert cost.startswith("USD 0.000090  (30 calls x USD 0.03 per 10,000") and "estimate" in cost
    assert summary.KMS_PRICE_DATE in cost


def test_decrypt_with_a_limit_and_a_price_override(cli, data: Path, tmp_path: Path, key: str) -> None:  # type: ignore[no-untyped-def]
    enc = tmp_path / "enc"
    assert cli("encrypt", data, enc, "--fields", "ssn", "--key", key, "--max-records-per-key", "1").code == 0
    r = cli("decrypt", enc, tmp_path / "plain", "--kms-qps", "20", "--kms-price-per-10k", "1.5")
    assert r.code == 0, r.err + r.out
    assert table_value(r.out, "KMS calls: Decrypt") == f"{N}"  # one unwrap per data key
    waited, _ = waits(r.out)
    assert waited >= 1
    assert table_value(r.out, "KMS cost (estimate)").startswith("USD 0.004500  (30 calls x USD 1.50 per 10,000")
    assert active_kms_budget() is None  # the in-process workers uninstalled it in teardown()


def test_without_a_limit_no_budget_row_and_the_env_price(cli, data: Path, tmp_path: Path, key: str,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]  # fmt: skip
    monkeypatch.setenv(summary.KMS_PRICE_ENV, "100")
    r = cli("encrypt", data, tmp_path / "enc", "--fields", "ssn", "--key", key)
    assert r.code == 0, r.err + r.out
    assert "KMS budget waits" not in r.out
    assert table_value(r.out, "KMS cost (estimate)").startswith("USD 0.01  (1 call x USD 100.00 per 10,000")


def test_local_keys_show_no_cost(cli, data: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("encrypt", data, tmp_path / "enc", "--fields", "ssn", "--key", "local:alias/budget",
            "--kms-qps", "5")  # fmt: skip
    assert r.code == 0, r.err + r.out
    assert table_value(r.out, "KMS cost (estimate)") == "none (local: keys make no billed KMS calls)"
    assert waits(r.out) == (0, 0)  # local keys are not behind the budget


@pytest.mark.parametrize("argv", [["--kms-qps", "0"], ["--kms-qps", "-3"], ["--kms-qps", "x"],
                                  ["--kms-price-per-10k", "-1"], ["--kms-price-per-10k", "nan"]])  # fmt: skip
def test_bad_flags_are_one_sentence(cli, data: Path, tmp_path: Path, argv: list[str]) -> None:  # type: ignore[no-untyped-def]
    r = cli("encrypt", data, tmp_path / "enc", "--fields", "ssn", *argv)
    assert r.code == 2 and r.err.startswith("kmsbeam: error: argument --kms-") and "Traceback" not in r.err


def test_a_bad_price_in_the_environment(cli, data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setenv(summary.KMS_PRICE_ENV, "cheap")
    r = cli("encrypt", data, tmp_path / "enc", "--fields", "ssn")
    assert r.code == 2 and summary.KMS_PRICE_ENV in r.err and not (tmp_path / "enc").exists()


def test_export_takes_the_flag_and_reports_calls_and_cost(cli, data: Path, tmp_path: Path, key: str) -> None:  # type: ignore[no-untyped-def]
    src = tmp_path / "src"
    src.mkdir()
    for i in range(4):
        (src / f"f{i}.txt").write_text(f"object {i}\n")
    r = cli("export", src, tmp_path / "dest", "--key", key, "--kms-qps", "2")
    assert r.code == 0, r.err + r.out
    assert table_value(r.out, "KMS calls: GenerateDataKey") == "4"
    assert table_value(r.out, "KMS cost (estimate)").startswith("USD 0.000012  (4 calls x USD 0.03")
    assert waits(r.out)[0] >= 1  # 4 objects, burst 1 at 2 calls/s
    r = cli("decrypt", tmp_path / "dest", tmp_path / "back", "--kms-qps", "50")
    assert r.code == 0, r.err + r.out
    assert table_value(r.out, "KMS calls: Decrypt") == "4"
    assert (tmp_path / "back" / "f3.txt").read_text() == "object 3\n"


def test_summary_rows_by_operation_and_the_cost_record() -> None:
    counters = {"kmsbeam/kms_calls_generate_data_key": 10_000, "kmsbeam/kms_calls_rewrap": 20_000,
                "kmsbeam/kms_budget_waits": 3, "kmsbeam/kms_budget_wait_ms": 1_500}  # fmt: skip
    assert summary.kms_call_rows(counters) == [
        ("KMS calls: GenerateDataKey", "10,000"), ("KMS calls: Decrypt", "0"),
        ("KMS calls: ReEncrypt", "20,000")]  # fmt: skip
    row = summary.kms_cost_row(counters, ["alibaba-kms://cn-hangzhou/alias/pii"])
    assert row[1].startswith("USD 0.09  (30,000 calls x USD 0.03 per 10,000")
    assert summary.kms_cost(30_000, ["pkcs11:token=t;object=k"])["estimated_cost"] == 0.0
    record = summary.kms_cost(30_000, ["alibaba-kms://cn-hangzhou/alias/pii"], 0.08)
    assert record == {"kms_calls": 30_000, "billed": True, "price_per_10k": 0.08, "currency": "USD",
                      "price_date": summary.KMS_PRICE_DATE, "estimated_cost": pytest.approx(0.24)}  # fmt: skip
    assert json.dumps(summary.kms_cost(1, ["local:alias/x"]))  # machine-readable as is
    assert summary.kms_budget_rows(counters, None) == [
        ("KMS budget waits", "3 calls waited 1,500 ms in all (a KMS call budget)")]
    assert summary.kms_budget_rows({}, None) == []


@pytest.mark.parametrize("mode", ["pme", "cells"])
def test_parquet_jobs_take_the_flag(cli, tmp_path: Path, key: str, mode: str) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.parquet as pq

    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": list(range(N)), "ssn": [f"{i:09d}" for i in range(N)]}), src)
    enc = tmp_path / "enc"
    r = cli("encrypt", src, enc, "--parquet-mode", mode, "--columns", "ssn", "--key", key,
            "--kms-qps", "3")  # fmt: skip
    assert r.code == 0, r.err + r.out
    assert "--kms-qps 3 per worker" in table_value(r.out, "KMS budget waits")
    assert table_value(r.out, "KMS cost (estimate)").startswith("USD ")
    r = cli("decrypt", enc, tmp_path / "plain", "--kms-qps", "3")
    assert r.code == 0, r.err + r.out
    assert pq.read_table(tmp_path / "plain").column("ssn").to_pylist() == [f"{i:09d}" for i in range(N)]
    assert active_kms_budget() is None  # installed per file or DoFn, then uninstalled
