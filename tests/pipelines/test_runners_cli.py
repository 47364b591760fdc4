"""The runner policy through the CLI: a refused runner is one sentence (exit 2), another
runner's options reach Beam untouched, and a summary without metrics says where its counts
came from."""

from __future__ import annotations

from pathlib import Path

from kmsbeam.pipelines.jobs import JobResult, pipeline_options, run_plan
from kmsbeam.pipelines.plan import JobSpec, plan_encrypt
from kmsbeam.pipelines.runners import output_counts
from kmsbeam.pipelines.summary import summary_table

from tests.pipelines.conftest import EXAMPLES, table_value


def test_the_dask_runner_is_refused_before_anything_runs(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("encrypt", EXAMPLES / "customers.jsonl", tmp_path / "enc", "--fields", "ssn",
            "--runner", "DaskRunner", "--dask_client_address", "tcp://127.0.0.1:1")  # fmt: skip
    assert r.code == 2 and r.out == ""
    assert r.err.startswith("kmsbeam: error: the DaskRunner is refused: ") and "finish_bundle" in r.err
    assert len(r.err.splitlines()) == 1 and not (tmp_path / "enc").exists()


def test_multi_threading_is_refused_through_the_cli(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("encrypt", EXAMPLES / "customers.jsonl", tmp_path / "enc", "--fields", "ssn",
            "--direct_running_mode", "multi_threading")  # fmt: skip
    assert r.code == 2 and "multi_threading loses records" in r.err


def test_options_of_other_runners_pass_through_untouched() -> None:
    args = ["--runner", "FlinkRunner", "--flink_master", "h:8081", "--flink_version", "1.20",
            "--a_future_runner_option", "7"]  # fmt: skip
    options, runner = pipeline_options(args)
    assert runner is None  # Beam builds the runner itself
    kept = options.get_all_options(retain_unknown_options=True)
    assert kept["a_future_runner_option"] == "7" and kept["flink_master"] == "h:8081"


def test_a_local_runner_typo_is_still_refused(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("encrypt", EXAMPLES / "customers.jsonl", tmp_path / "enc", "--fields", "ssn",
            "--direct_num_worker", "2")  # fmt: skip
    assert r.code == 2 and "unknown option --direct_num_worker" in r.err


def test_a_summary_without_metrics_counts_the_written_output(tmp_path: Path) -> None:
    spec = JobSpec("encrypt", str(EXAMPLES / "customers.jsonl"), str(tmp_path / "enc"), fields=["ssn"])
    plan = plan_encrypt(spec, notice=lambda line: None)
    ran = run_plan(plan)
    counts = output_counts(str(plan.out_dir), str(plan.dead_dir), plan.format)
    result = JobResult(plan, counts, ran.elapsed, ran.bytes_in, ran.bytes_out, counted_from_output=True)
    table = summary_table(result)
    assert table_value(table, "records out") == "1,000" and table_value(table, "records in") == "1,000"
    assert table_value(table, "counted").startswith("in the written output: the runner reported no metrics")
    assert "KMS calls:" not in table and "data keys generated" not in table
    assert "KMS calls: GenerateDataKey" in summary_table(ran)  # with metrics: the usual rows
