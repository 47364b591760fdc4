"""The rotation lock on an ``oss://`` prefix: PutObject with ``x-oss-forbid-overwrite: true``
(created only if absent) on the loopback server, through oss2 (issue 14, item 0f)."""

from __future__ import annotations

import threading
from typing import Any

import oss2
import pytest
from kmsbeam.pipelines.cli import main
from kmsbeam.pipelines.rotate.lock import RotationLock

from kmsbeam import ConfigurationError
from kmsbeam.oss import LoopbackOssServer, oss_client


def test_put_without_overwrite_creates_only_if_absent(bucket: str) -> None:
    client = oss_client()
    url = f"oss://{bucket}/a/lock"
    client.put(url, b"first", overwrite=False)
    with pytest.raises(FileExistsError, match=f"the OSS object {url} already exists"):
        client.put(url, b"second", overwrite=False)
    assert client.get(url) == b"first"
    client.put(url, b"third")  # a plain put still overwrites
    assert client.get(url) == b"third"


@pytest.mark.parametrize("auth", ["v1", "v4"])
def test_the_server_answers_409_file_already_exists(bucket: str, raw_bucket: Any, auth: str) -> None:
    b = raw_bucket(bucket, auth)
    b.put_object("k", b"one", headers={"x-oss-forbid-overwrite": "true"})
    with pytest.raises(oss2.exceptions.ServerError) as info:
        b.put_object("k", b"two", headers={"x-oss-forbid-overwrite": "true"})
    assert (info.value.status, info.value.code) == (409, "FileAlreadyExists")
    assert b.get_object("k").read() == b"one"
    b.put_object("k", b"two", headers={"x-oss-forbid-overwrite": "false"})
    assert b.get_object("k").read() == b"two"


def test_racing_threads_get_exactly_one_oss_lock(bucket: str) -> None:
    target = f"oss://{bucket}/exports/rot/"
    n = 8
    barrier = threading.Barrier(n)
    won: list[RotationLock] = []
    lost: list[str] = []

    def race() -> None:
        lock = RotationLock(target)
        barrier.wait(timeout=60)
        try:
            lock.acquire()
        except ConfigurationError as exc:
            lost.append(str(exc))
        else:
            won.append(lock)

    threads = [threading.Thread(target=race) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(won) == 1 and len(lost) == n - 1
    assert all(m.startswith(f"another rotation of {target} is running (pid ") for m in lost)
    assert won[0].location == target + "_kmsbeam_rotation.lock"
    assert oss_client().exists(won[0].location)
    won[0].release()
    assert not oss_client().exists(won[0].location)


def test_an_in_place_rotation_of_a_locked_export_fails_at_once(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"oss://{bucket}/exports/rot/"
    with RotationLock(target) as lock:
        before = oss_server.requests.copy()
        assert main(["rotate", target, "--in-place"]) == 2
        err = capsys.readouterr().err
        assert f"another rotation of {target} is running (pid " in err and "--break-lock" in err
        made = oss_server.requests - before
        assert made["copy"] == 0 and made["put"] == 1  # the refused only-if-absent put, nothing else
        assert lock.owner is not None
    assert not oss_client().exists(lock.location)
