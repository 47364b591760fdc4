"""The progress line of a CLI job: every record counted through the channel; -q silences it."""

from __future__ import annotations

import io
from pathlib import Path

from kmsbeam.pipelines.jobs import run_plan
from kmsbeam.pipelines.plan import JobSpec, plan_encrypt
from kmsbeam.pipelines.progress import Channel, Reporter, Totals, estimate_totals

from tests.pipelines.conftest import EXAMPLES
from tests.pipelines.test_progress import Clock


def test_a_job_counts_every_record_and_the_line_says_so(tmp_path: Path) -> None:
    spec = JobSpec("encrypt", str(EXAMPLES / "customers.jsonl"), str(tmp_path / "enc"), fields=["ssn"])
    plan = plan_encrypt(spec, notice=lambda line: None)
    clock, out = Clock(), io.StringIO()
    totals = estimate_totals(plan.files, plan.format)
    assert totals == Totals((EXAMPLES / "customers.jsonl").stat().st_size, 1000, True)
    reporter = Reporter("encrypting customers.jsonl", totals, Channel(), out, every=30, clock=clock)
    assert reporter.channel is not None
    result = run_plan(plan, on_start=reporter.start, tally=reporter.channel.tally())
    reporter.stop()
    assert result.records_out == 1000 and reporter.records == 1000
    clock.now += 40
    reporter.tick()
    line = out.getvalue()
    assert line.startswith("kmsbeam: encrypting customers.jsonl: 1,000 of 1,000 records (100%, ")
    assert "25 records/s" in line and "ETA 0 s" in line and line.endswith(", 40 s elapsed\n")


def test_quiet_writes_no_progress(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    r = cli("encrypt", EXAMPLES / "customers.jsonl", tmp_path / "enc", "--fields", "ssn", "-q",
            "--progress-every", "0.001")  # fmt: skip
    assert r.code == 0 and "encrypting" not in r.err and r.out == ""


def test_multi_processing_workers_add_no_beam_noise_to_stderr(tmp_path: Path, kms_home: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "KMSBEAM_HOME": str(kms_home)}
    env.pop("KMSBEAM_DEBUG", None)
    r = subprocess.run([sys.executable, "-m", "kmsbeam.pipelines", "encrypt", str(EXAMPLES / "customers.jsonl"),
                        str(tmp_path / "enc"), "--fields", "ssn", "--progress-every", "3600",
                        "--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
                       capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip
    assert r.returncode == 0, r.stderr
    # only the key notice: the workers' "apitools not found" and "Logging handler created." are gone
    assert [line for line in r.stderr.splitlines() if "created key" not in line] == []
    assert "records out" in r.stdout


def test_rotate_and_export_show_elapsed_progress(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Jobs that count at the end (rotate, export) still write a line a log can read."""
    assert cli("encrypt", EXAMPLES / "customers.jsonl", tmp_path / "enc", "--fields", "ssn", "-q",
               "--key", "local:alias/p1").code == 0  # fmt: skip
    assert cli("keys", "create", "--alias", "p2").code == 0
    r = cli("rotate", tmp_path / "enc", tmp_path / "rot", "--to-key", "local:alias/p2", "--progress-every", "0.001")
    assert r.code == 0, r.err
    assert f"kmsbeam: rotating {tmp_path / 'enc'}: " in r.err and "a rotation counts its values at the end" in r.err
    # (an export of one small file can end before the reporter's first look: only -q is checked)
    r = cli("export", EXAMPLES / "customers.jsonl", tmp_path / "exp", "-q", "--progress-every", "0.001")
    assert r.code == 0 and "exporting" not in r.err, r.err
    r = cli("rotate", tmp_path / "enc", tmp_path / "rot2", "--to-key", "local:alias/p2", "-q",
            "--progress-every", "0.001")  # fmt: skip
    assert r.code == 0 and "rotating" not in r.err, r.err
    assert cli("rotate", tmp_path / "enc", tmp_path / "x", "--progress-every", "-1").code == 2
