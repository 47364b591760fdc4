"""The runner policy: refused runners say why, other runners' options pass through, and a
runner without metrics still gets counts (from the written output)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.runner import PipelineResult, PipelineState
from kmsbeam.pipelines.runners import (
    check_runner,
    counters_or_none,
    output_counts,
    runner_name,
    unknown_options,
)

from kmsbeam import ConfigurationError

DASK = ["DaskRunner", "dask", "apache_beam.runners.dask.dask_runner.DaskRunner"]


@pytest.mark.parametrize("name", DASK)
def test_the_dask_runner_is_refused_with_the_reason(name: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        check_runner(PipelineOptions(["--runner", name, "--dask_client_address", "tcp://h:8786"]))
    message = str(caught.value)
    assert message.startswith("the DaskRunner is refused: ") and "finish_bundle" in message
    assert "\n" not in message


def test_multi_threading_is_refused_on_the_local_runner_only() -> None:
    with pytest.raises(ConfigurationError, match="multi_threading loses records"):
        check_runner(PipelineOptions(["--direct_running_mode", "multi_threading"]))
    with pytest.raises(ConfigurationError, match="multi_threading loses records"):
        check_runner(PipelineOptions(["--runner", "direct", "--direct_running_mode", "multi_threading"]))
    check_runner(PipelineOptions(["--runner", "FlinkRunner", "--direct_running_mode", "multi_threading"]))
    check_runner(PipelineOptions(["--direct_running_mode", "multi_processing"]))


def test_runner_names_resolve_as_beam_resolves_them() -> None:
    assert runner_name(None) is None
    assert runner_name("direct") == "DirectRunner"
    assert runner_name("PortableRunner") == "PortableRunner"
    assert runner_name("apache_beam.runners.dask.dask_runner.DaskRunner") == "DaskRunner"


def test_other_runners_options_pass_through_untouched() -> None:
    args = ["--runner", "FlinkRunner", "--flink_master", "h:8081", "--some_future_option", "x",
            "--dask_client_address", "tcp://h:8786"]  # fmt: skip
    options = PipelineOptions(args)
    assert unknown_options(args, options) == []
    kept = options.get_all_options(retain_unknown_options=True)
    assert kept["some_future_option"] == "x" and kept["flink_master"] == "h:8081"
    portable = ["--runner", "PortableRunner", "--job_endpoint", "localhost:8099", "--spark_thing", "1"]
    assert unknown_options(portable, PipelineOptions(portable)) == []


def test_on_the_local_runner_an_unknown_option_is_a_typo() -> None:
    args = ["--direct_num_worker", "2"]  # missing "s"
    assert unknown_options(args, PipelineOptions(args)) == ["--direct_num_worker"]
    args = ["--key-cache-ttl", "1", "--b=2"]  # dashes, and a value after "="
    assert unknown_options(args, PipelineOptions(args)) == ["--key-cache-ttl", "--b=2"]
    args = ["--direct_num_workers", "2", "--direct_running_mode", "multi_processing"]
    assert unknown_options(args, PipelineOptions(args)) == []


def test_a_result_without_metrics_gives_none() -> None:
    assert counters_or_none(PipelineResult(PipelineState.DONE)) is None  # Beam's base class raises


def test_counts_from_the_written_output(tmp_path: Path) -> None:
    out, dead = tmp_path / "out", tmp_path / "out" / "_dead_letters"
    dead.mkdir(parents=True)
    (out / "part-00000-of-00002.jsonl").write_text("".join(json.dumps({"i": i}) + "\n" for i in range(7)))
    (out / "part-00001-of-00002.jsonl").write_text('{"i": 7}\n\n')
    (dead / "part-00000-of-00001.jsonl").write_text('{"reason": "x"}\n{"reason": "y"}\n')
    (out / "_kmsbeam.json").write_text("{}\n")
    counts = output_counts(str(out), str(dead), "jsonl")
    assert counts == {"kmsbeam.pipelines/records_written": 8, "kmsbeam.pipelines/dead_letters_written": 2,
                      "kmsbeam.pipelines/records_read": 10}  # fmt: skip
    (out / "part-00000-of-00002.jsonl").write_text("a,b\n1,2\n3,4\n")
    (out / "part-00001-of-00002.jsonl").write_text("a,b\n")
    assert output_counts(str(out), str(tmp_path / "none"), "csv")["kmsbeam.pipelines/records_read"] == 2


def test_counts_from_parquet_footers(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"a": list(range(5))}), tmp_path / "part-00000-of-00001.parquet")
    assert output_counts(str(tmp_path), str(tmp_path / "dead"), "parquet")["kmsbeam.pipelines/records_written"] == 5
