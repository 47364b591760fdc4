"""Ctrl-C mid-write: a real ``kmsbeam decrypt`` subprocess gets SIGINT while Beam is writing
its shards; it exits 130 with one sentence and OUTPUT is exactly as it was before the job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


def _kmsbeam(home: Path, *argv: object) -> subprocess.Popen[str]:
    env = {**os.environ, "KMSBEAM_HOME": str(home)}
    return subprocess.Popen([sys.executable, "-m", "kmsbeam.pipelines", *map(str, argv)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.fixture(scope="module")
def encrypted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """60,000 records encrypted (about 34 MB): decrypting them takes a few seconds of writing."""
    base = tmp_path_factory.mktemp("interrupt")
    home = base / "home"
    source = base / "big.jsonl"
    with source.open("w") as f:
        for i in range(60_000):
            f.write(json.dumps({"id": i, "ssn": f"900-{i % 100:02d}-{i:06d}", "email": f"u{i}@example.com",
                                "note": "x" * 100}) + "\n")  # fmt: skip
    proc = _kmsbeam(home, "encrypt", source, base / "enc", "--fields", "ssn,email", "-q")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return base / "enc", home


def _interrupt_mid_write(home: Path, enc: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = _kmsbeam(home, "decrypt", enc, out, "-q", *extra)
    deadline = time.monotonic() + 120  # liveness bound, not a timing assertion
    partial: list[Path] = []
    while proc.poll() is None and time.monotonic() < deadline:
        partial = [p for p in out.glob(".kmsbeam-staging-*/beam-temp-*/*") if p.stat().st_size > 0]
        if partial:
            break
        time.sleep(0.01)  # polling for the condition, not waiting for a time
    assert partial and proc.poll() is None, "the job ended before a shard was being written"
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


@pytest.mark.slow
@pytest.mark.parametrize("runner", [[], ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]],
                         ids=["in_memory", "multi_processing-2"])  # fmt: skip
def test_sigint_mid_write_leaves_output_as_it_was(encrypted: tuple[Path, Path], tmp_path: Path,
                                                  runner: list[str]) -> None:  # fmt: skip
    enc, home = encrypted
    out = tmp_path / "plain"
    out.mkdir()
    (out / "keep.txt").write_text("not kmsbeam's")
    before = _tree(out)
    done = _interrupt_mid_write(home, enc, out, "--overwrite", *runner)
    assert done.returncode == 130, done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines == ["kmsbeam: error: interrupted; everything the job had written was removed"], done.stderr
    assert _tree(out) == before and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    # a new OUTPUT directory is removed again
    done = _interrupt_mid_write(home, enc, tmp_path / "new")
    assert done.returncode == 130 and not (tmp_path / "new").exists(), done.stderr


@pytest.mark.slow
def test_sigint_during_overwrite_keeps_the_previous_output(encrypted: tuple[Path, Path], tmp_path: Path) -> None:
    enc, home = encrypted
    out = tmp_path / "plain"
    first = _kmsbeam(home, "decrypt", enc, out, "-q")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    before = _tree(out)
    assert any(name.startswith("part-") for name in before)
    done = _interrupt_mid_write(home, enc, out, "--overwrite")
    assert done.returncode == 130, done.stderr
    assert _tree(out) == before  # the old output: not deleted before the new one is complete
    assert not list(out.glob(".kmsbeam-staging-*")) and not list(out.rglob("beam-temp-*"))
    assert all((p.stat().st_mode & 0o777) == 0o600 for p in out.rglob("*") if p.is_file())


def test_a_failed_overwrite_keeps_the_previous_output(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """A job that fails (a disabled key: exit 1) removes what it wrote, staging included, and
    the previous output of ``--overwrite`` stays as it was."""
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", "local:alias/gone").code == 0
    mp = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "1"]
    assert cli("decrypt", enc, plain, "--key", "local:alias/gone", *mp).code == 0  # no data key cached here
    before = _tree(plain)
    assert cli("keys", "disable", "alias/gone").code == 0
    r = cli("decrypt", enc, plain, "--key", "local:alias/gone", "--overwrite")
    assert r.code == 1 and "key disabled" in r.err, r.err
    assert _tree(plain) == before and not list(plain.glob(".kmsbeam-staging-*"))
    r = cli("decrypt", enc, tmp_path / "new", "--key", "local:alias/gone")
    assert r.code == 1 and not (tmp_path / "new").exists(), r.err


def test_overwrite_removes_the_staging_folder_of_a_killed_run(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    assert cli("encrypt", customers, enc, "--fields", "ssn").code == 0
    stale = plain / ".kmsbeam-staging-0123456789ab" / "beam-temp-part-x"
    stale.mkdir(parents=True)
    (stale / "shard.jsonl").write_text('{"ssn": "930-55-5208"}\n')  # what a SIGKILL leaves
    r = cli("decrypt", enc, plain)
    assert r.code == 2 and "--overwrite" in r.err and stale.exists()
    r = cli("decrypt", enc, plain, "--overwrite")
    assert r.code == 0, r.err
    assert not list(plain.glob(".kmsbeam-staging-*")) and list(plain.glob("part-*"))
