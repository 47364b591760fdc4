"""One rotation per output at a time (issue 14, item 0f): a lock file beside OUTPUT.

A "running rotation" is a real second process holding the real lock; races are real processes
started together behind a barrier. No sleeps.
"""

from __future__ import annotations

import multiprocessing
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kmsbeam.pipelines.rotate.lock import LockOwner, RotationLock, lock_location

from kmsbeam import ConfigurationError

HOLD = (
    "import sys\n"
    "from kmsbeam.pipelines.rotate.lock import RotationLock\n"
    "lock = RotationLock(sys.argv[1])\n"
    "lock.acquire()\n"
    "print('locked', flush=True)\n"
    "sys.stdin.read()\n"
    "lock.release()\n"
)


@pytest.fixture()
def holder() -> Iterator[Any]:
    """Start a process that holds the lock of a target until its stdin closes (or it is killed)."""
    procs: list[subprocess.Popen[str]] = []

    def start(target: Path | str) -> subprocess.Popen[str]:
        proc = subprocess.Popen([sys.executable, "-c", HOLD, str(target)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, text=True)  # fmt: skip
        procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == "locked\n"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=60)
        for pipe in (proc.stdin, proc.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture()
def encrypted(cli: Any, customers: Path, tmp_path: Path) -> Path:
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", "local:alias/pii").code == 0
    return enc


def test_a_second_rotation_fails_at_once_and_touches_nothing(
    cli: Any, encrypted: Path, tmp_path: Path, holder: Any
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "part-00000-of-00001.jsonl").write_text("partial output of the running rotation\n")
    (out / "_kmsbeam_rotation.journal").mkdir()  # what a resume would take over
    proc = holder(out)
    r = cli("rotate", encrypted, out)
    assert r.code == 2
    line = r.err.strip()
    assert line.startswith(f"kmsbeam: error: another rotation of {out} is running (pid {proc.pid} on "
                           f"{socket.gethostname()} since ")  # fmt: skip
    assert line.endswith("; wait for it or pass --break-lock if it died") and "\n" not in line
    assert sorted(p.name for p in out.iterdir()) == ["_kmsbeam_rotation.journal", "part-00000-of-00001.jsonl"]
    assert (out / "part-00000-of-00001.jsonl").read_text() == "partial output of the running rotation\n"

    r = cli("rotate", encrypted, out, "--break-lock")  # a live rotation on this host: never broken
    assert r.code == 2 and f"pid {proc.pid} on this host" in r.err and "still running" in r.err

    assert cli("rotate", encrypted, tmp_path / "other").code == 0  # other outputs are not locked
    assert cli("rotate", encrypted, tmp_path / "other2", "--dry-run").code == 0
    assert cli("rotate", encrypted, out, "--dry-run").code == 0  # a dry run changes nothing: no lock

    proc.stdin.close()  # the first rotation finishes and releases its lock
    assert proc.wait(timeout=60) == 0
    assert not os.path.lexists(lock_location(str(out)))
    r = cli("rotate", encrypted, out)
    assert r.code == 0, r.err
    assert not os.path.lexists(lock_location(str(out)))


def test_a_lock_left_by_a_killed_rotation_is_broken_only_on_request(
    cli: Any, encrypted: Path, tmp_path: Path, holder: Any
) -> None:
    out = tmp_path / "out"
    proc = holder(out)
    proc.kill()  # kill -9: no chance to release
    proc.wait(timeout=60)
    lock = Path(lock_location(str(out)))
    assert lock.exists() and lock.name == "out.kmsbeam-rotation.lock" and lock.parent == tmp_path
    r = cli("rotate", encrypted, out)
    assert r.code == 2
    assert f"a rotation of {out} (pid {proc.pid} on {socket.gethostname()} since " in r.err
    assert "died without releasing its lock" in r.err and "pass --break-lock" in r.err
    r = cli("rotate", encrypted, out, "--break-lock")
    assert r.code == 0, r.err
    assert f"kmsbeam: broke the stale lock of {out} (pid {proc.pid} on" in r.err
    assert (out / "_kmsbeam_rotation.json").exists() and not lock.exists()


def test_a_failed_rotation_releases_its_lock(cli: Any, encrypted: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli("rotate", encrypted, out, "--to-key", "local:alias/no-such-key")
    assert r.code == 2 and "no-such-key" in r.err
    assert not os.path.lexists(lock_location(str(out)))


def test_an_interrupt_releases_the_lock(tmp_path: Path) -> None:
    lock = RotationLock(str(tmp_path / "out"))
    with pytest.raises(KeyboardInterrupt):
        with lock:
            assert os.path.exists(lock.location)
            raise KeyboardInterrupt
    assert not os.path.lexists(lock.location)
    with RotationLock(str(tmp_path / "out")):  # and the next one takes it
        pass


def _race(target: str, barrier: Any, results: Any, done: Any) -> None:
    barrier.wait(timeout=60)
    try:
        lock = RotationLock(target)
        lock.acquire()
    except ConfigurationError as exc:
        results.put(("lost", str(exc)))
        return
    results.put(("won", str(os.getpid())))
    done.wait(timeout=60)  # hold it until every racer has answered
    lock.release()


def test_racing_processes_get_exactly_one_lock(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, results, done = ctx.Barrier(n), ctx.Queue(), ctx.Event()
    target = str(tmp_path / "out")
    procs = [ctx.Process(target=_race, args=(target, barrier, results, done)) for _ in range(n)]
    for p in procs:
        p.start()
    answers = [results.get(timeout=60) for _ in range(n)]
    done.set()
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    won = [a for a in answers if a[0] == "won"]
    assert len(won) == 1
    for _, message in (a for a in answers if a[0] == "lost"):
        assert f"another rotation of {target} is running (pid {won[0][1]} on" in message
    assert not os.path.lexists(lock_location(target))


def _write_lock(target: str, owner: LockOwner) -> None:
    Path(lock_location(target)).write_bytes(owner.to_bytes())


def test_staleness_rules(tmp_path: Path) -> None:
    target = str(tmp_path / "out")
    now = time.time()
    young_remote = LockOwner("another-host.example", 4242, now - 3600, "a" * 32)
    _write_lock(target, young_remote)
    with pytest.raises(ConfigurationError, match="another rotation of .* is running"):
        RotationLock(target).acquire()
    with pytest.raises(ConfigurationError) as info:
        RotationLock(target, break_lock=True).acquire()
    assert "on another host, another-host.example" in str(info.value)
    assert f"delete {lock_location(target)}" in str(info.value)

    _write_lock(target, LockOwner("another-host.example", 4242, now - 25 * 3600, "b" * 32))
    lock = RotationLock(target, break_lock=True)
    lock.acquire()  # older than 24 hours: stale wherever it came from
    assert lock.broke is not None and lock.broke.token == "b" * 32
    lock.release()

    _write_lock(target, young_remote)  # a shorter staleness rule from the environment
    assert RotationLock(target, break_lock=True, stale_after=1800).acquire().pid == os.getpid()

    Path(lock_location(target)).write_bytes(b'{"host": "')  # a crash mid-write: nobody's
    with pytest.raises(ConfigurationError, match="another rotation"):
        RotationLock(target).acquire()
    RotationLock(target, break_lock=True).acquire()


def test_the_staleness_setting_is_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSBEAM_ROTATION_LOCK_STALE_HOURS", "soon")
    with pytest.raises(ConfigurationError, match="KMSBEAM_ROTATION_LOCK_STALE_HOURS must be"):
        RotationLock(str(tmp_path / "out"))
    monkeypatch.setenv("KMSBEAM_ROTATION_LOCK_STALE_HOURS", "0.5")
    assert RotationLock(str(tmp_path / "out")).stale_after == 1800


def test_a_lock_that_cannot_be_created_is_one_sentence(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigurationError) as info:
        RotationLock(str(tmp_path / "file" / "out")).acquire()
    assert str(info.value) == (f"cannot create the rotation lock {tmp_path}/file/out.kmsbeam-rotation.lock "
                               f"(a file is in the way); make {tmp_path}/file a writable directory or "
                               "choose another OUTPUT")  # fmt: skip


def test_a_lock_names_only_a_host_name_from_its_contents(tmp_path: Path) -> None:
    target = str(tmp_path / "out")
    Path(lock_location(target)).write_text('{"host": "evil.example/?x=1 visit http://a", "pid": 7, '
                                           '"since": 1.0e30, "token": "t"}')  # fmt: skip
    with pytest.raises(ConfigurationError) as info:
        RotationLock(target).acquire()
    assert "evil" not in str(info.value) and "an unknown host" in str(info.value)
    Path(lock_location(target)).write_text('{"host": "evil.example/?x=1", "pid": 7, "since": 5.0, "token": "t"}')
    with pytest.raises(ConfigurationError) as info:
        RotationLock(target).acquire()
    assert "evil" not in str(info.value) and "(pid 7 on an unknown host since 1970-01-01T00:00:05+00:00)" in str(info.value)
