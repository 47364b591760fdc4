"""The progress line: the workers' record counts reach the launcher on every local runner, and
the reporter renders counts, rate and ETA on a TTY and as log lines off one."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kmsbeam.pipelines.jobs import pipeline_options
from kmsbeam.pipelines.progress import Channel, Reporter, Totals, estimate_totals, reports_to_launcher

RUNNERS = {
    "in_memory": [],
    "multi_processing": ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
    "portable_loopback": ["--runner", "PortableRunner", "--job_endpoint", "embed",
                          "--environment_type", "LOOPBACK"],
}  # fmt: skip


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("mode", list(RUNNERS))
def test_workers_counts_reach_the_launcher(mode: str) -> None:
    channel = Channel()
    options, runner = pipeline_options(RUNNERS[mode])
    with beam.Pipeline(runner=runner, options=options) as p:
        _ = p | beam.Create(range(1000)) | beam.Reshuffle() | beam.ParDo(channel.tally())
    assert channel.drain() == 1000
    channel.close()


def test_off_a_tty_one_plain_line_every_interval() -> None:
    clock, out = Clock(), io.StringIO()
    channel = Channel()
    reporter = Reporter("decrypting x", Totals(10 * 2**20, 1000, False), channel, out, every=30, clock=clock)
    channel.records = 250
    clock.now += 10
    reporter.tick()
    assert out.getvalue() == ""  # not due yet
    clock.now += 20
    reporter.tick()
    assert out.getvalue() == ("kmsbeam: decrypting x: 250 of ~1,000 records (25%, ~2.5 MiB of 10.0 MiB), "
                              "8 records/s, ETA 1 min 30 s, 30 s elapsed\n")  # fmt: skip
    clock.now += 1
    reporter.tick()
    assert out.getvalue().count("\n") == 1
    reporter.stop()


def test_on_a_tty_one_line_rewritten_in_place_and_cleared() -> None:
    clock, out = Clock(), Tty()
    channel = Channel()
    reporter = Reporter("encrypting x", Totals(None, None), channel, out, clock=clock)
    channel.records = 5000
    clock.now += 2
    reporter.tick()
    assert out.getvalue() == "\rkmsbeam: encrypting x  5,000 records  2,500 records/s  2 s elapsed\033[K"
    reporter.stop()
    assert out.getvalue().endswith("\r\033[K")


def test_without_a_channel_elapsed_time_and_input_size_and_why() -> None:
    clock, out = Clock(), io.StringIO()
    reporter = Reporter("encrypting x", Totals(3 * 2**30, None), None, out, every=5, clock=clock)
    clock.now += 65
    reporter.tick()
    assert out.getvalue() == ("kmsbeam: encrypting x: 3.0 GiB of input (this runner's workers do not "
                              "report progress), 1 min 05 s elapsed\n")  # fmt: skip


def test_which_runners_report_to_the_launcher() -> None:
    assert reports_to_launcher(None, None)
    assert reports_to_launcher("FnApiRunner", None)
    assert reports_to_launcher("PortableRunner", "LOOPBACK")
    assert not reports_to_launcher("FlinkRunner", "DOCKER")
    assert not reports_to_launcher("DataflowRunner", None)


def test_totals_parquet_exact_text_estimated_compressed_unknown(tmp_path: Path) -> None:
    for i in range(2):
        pq.write_table(pa.table({"a": list(range(300))}), tmp_path / f"p{i}.parquet")
    files = sorted(str(p) for p in tmp_path.glob("*.parquet"))
    assert estimate_totals(files, "parquet").records == 600
    assert estimate_totals(files, "parquet").exact
    big = tmp_path / "big.jsonl"
    big.write_bytes(b'{"a": "0123456789"}\n' * 200_000)  # 4 MB: only the first MiB is read
    totals = estimate_totals([str(big)], "jsonl")
    assert totals.records == 200_000 and not totals.exact
    packed = tmp_path / "x.jsonl.gz"
    packed.write_bytes(gzip.compress(b'{"a": 1}\n' * 10))
    assert estimate_totals([str(packed)], "jsonl") == Totals(packed.stat().st_size, None, False)
