"""``kmsbeam encrypt --watch`` (issue 19 part 2): files that land in a directory or an ``oss://``
prefix become window datasets that ``kmsbeam decrypt`` reads; the state skips done files on a
restart; dead letters exit 3; SIGTERM stops after the window in flight."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import shlex
import threading
import time
from pathlib import Path

import pytest
from kmsbeam.oss import oss_client
from kmsbeam.pipelines import paths
from kmsbeam.pipelines.watch import STATE_NAME, Landing, listing

from tests.oss.conftest import bucket, oss_server  # noqa: F401  (fixtures)
from tests.pipelines.cluster_helpers import Dirs, canonical, kmsbeam, records
from tests.pipelines.conftest import shard_lines, table_value

FAST = ["--watch-interval", "0.2", "--watch-stop-after", "60"]  # the deadline: a safety net only


def _lines(customers: Path, start: int, stop: int) -> str:
    return "".join(line + "\n" for line in customers.read_text().splitlines()[start:stop])


def _state(out: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((out / STATE_NAME).read_text())


def _windows(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.name.startswith("window-"))


def _decrypted(cli, window: Path, plain: Path) -> list[str]:  # type: ignore[no-untyped-def]
    r = cli("decrypt", window, plain)
    assert r.code == 0, r.err
    return canonical("\n".join(shard_lines(plain)))


def _wait_for(path: Path, seconds: float = 60, pattern: str | None = None) -> None:
    """Until ``path`` exists (or holds a name matching ``pattern``)."""
    deadline = time.monotonic() + seconds
    while not (path.exists() and (pattern is None or list(path.glob(pattern)))):
        assert time.monotonic() < deadline, f"{path}/{pattern or ''} never appeared"
        time.sleep(0.05)


def test_files_landing_while_the_watch_runs_become_windows_that_decrypt(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                        tmp_path: Path) -> None:  # fmt: skip
    land, out = tmp_path / "landing", tmp_path / "enc"
    land.mkdir()
    first, second = _lines(customers, 0, 300), _lines(customers, 300, 500)

    def arrive() -> None:  # the second file lands after the first window is recorded
        (land / "a.jsonl").write_text(first)
        _wait_for(out / STATE_NAME)
        (land / "bb.jsonl").write_text(second)

    writer = threading.Thread(target=arrive)
    writer.start()
    r = cli("encrypt", "--watch", land, out, "--fields", "ssn,email", "--key", "local:alias/w",
            "--watch-max-windows", "2", *FAST)  # fmt: skip
    writer.join()
    assert r.code == 0, r.err
    assert table_value(r.out, "windows") == "2" and table_value(r.out, "files") == "2"
    assert table_value(r.out, "records in") == "500" and table_value(r.out, "records out") == "500"
    assert table_value(r.out, "dead letters") == "0"
    assert table_value(r.out, "data keys generated") == "1"  # kept across windows (one process)
    one, two = _windows(out)
    assert [w["files"] for w in _state(out)["windows"]] == [[str(land / "a.jsonl")], [str(land / "bb.jsonl")]]
    assert "930-55-5208" not in (one / "part-00000-of-00001.jsonl").read_text()
    assert _decrypted(cli, one, tmp_path / "p1") == canonical(first)
    assert _decrypted(cli, two, tmp_path / "p2") == canonical(second)


def test_a_file_is_taken_once_two_listings_see_one_size(tmp_path: Path) -> None:
    land = tmp_path / "landing"
    land.mkdir()
    growing = land / "part-1.jsonl"
    growing.write_text('{"id": 1}\n')
    for name in (".hidden.jsonl", "_SUCCESS", "upload.jsonl.tmp", "empty.jsonl"):
        (land / name).write_text("" if name == "empty.jsonl" else "{}\n")
    (land / "sub").mkdir()
    (land / "sub" / "deeper.jsonl").write_text("{}\n")
    landing = Landing()
    assert landing.landed(listing(str(land)), set()) == {}  # seen once
    with growing.open("a") as f:
        f.write('{"id": 2}\n')  # still being written
    assert landing.landed(listing(str(land)), set()) == {}
    size = growing.stat().st_size
    assert landing.landed(listing(str(land)), set()) == {str(growing): size}  # the same size twice
    assert landing.landed(listing(str(land)), {str(growing)}) == {}  # done


def test_a_poll_is_one_window_of_exactly_its_files(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Names of any length, with glob characters or a backslash, are listed and read literally:
    one job per poll."""
    land, out = tmp_path / "landing", tmp_path / "enc"
    land.mkdir()
    names = ["a.jsonl", "back\\slash.jsonl", "e-1.jsonl", "x[1]*.jsonl", "x1a.jsonl"]
    for i, name in enumerate(names):
        (land / name).write_text(_lines(customers, 10 * i, 10 * i + 10))
    r = cli("encrypt", "--watch", land, out, "--fields", "ssn", "--watch-max-windows", "1", *FAST)
    assert r.code == 0, r.err
    assert table_value(r.out, "windows") == "1" and table_value(r.out, "files") == "5"
    assert table_value(r.out, "records in") == "50"  # x[1]*.jsonl once, and not as a glob
    (window,) = _windows(out)
    assert _state(out)["windows"][0]["files"] == sorted(str(land / n) for n in names)
    assert _decrypted(cli, window, tmp_path / "plain") == canonical(_lines(customers, 0, 50))


def test_a_restart_skips_done_files_and_names_an_unrecorded_window(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                   tmp_path: Path) -> None:  # fmt: skip
    land, out = tmp_path / "landing", tmp_path / "enc"
    land.mkdir()
    (land / "a.jsonl").write_text(_lines(customers, 0, 50))
    watch = ["encrypt", "--watch", land, out, "--fields", "ssn", "--watch-max-windows", "1", *FAST]
    assert cli(*watch).code == 0
    (land / "bb.jsonl").write_text(_lines(customers, 50, 80))
    r = cli(*watch)
    assert r.code == 0, r.err
    assert table_value(r.out, "records in") == "30"  # a.jsonl was not encrypted again
    state = _state(out)
    assert [w["files"] for w in state["windows"]] == [[str(land / "a.jsonl")], [str(land / "bb.jsonl")]]

    lost = state["windows"].pop()  # a watch killed between the window's commit and the state
    (out / STATE_NAME).write_text(json.dumps(state))
    r = cli(*watch)
    assert r.code == 0 and f"{out / lost['name']} is not in {STATE_NAME}" in r.err
    assert table_value(r.out, "records in") == "30" and len(_windows(out)) == 3  # at least once


def test_a_bad_record_exits_3_with_the_dead_letters_in_its_window(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                  tmp_path: Path) -> None:  # fmt: skip
    land, out = tmp_path / "landing", tmp_path / "enc"
    land.mkdir()
    (land / "a.jsonl").write_text(_lines(customers, 0, 20) + "{not json\n")

    def arrive() -> None:  # a second window with a dead letter
        _wait_for(out / STATE_NAME)
        (land / "b.jsonl").write_text(_lines(customers, 20, 30) + "{not json either\n")

    writer = threading.Thread(target=arrive)
    writer.start()
    r = cli("encrypt", "--watch", land, out, "--fields", "ssn", "--watch-max-windows", "2", *FAST)
    writer.join()
    assert r.code == 3, r.err
    one, two = _windows(out)
    assert table_value(r.out, "dead letters").startswith("2  ")
    assert list((one / "_dead_letters").glob("part-*")) and list((two / "_dead_letters").glob("part-*"))
    assert [w["dead_letters"] for w in _state(out)["windows"]] == [1, 1]
    assert "kmsbeam: error: " in r.err and "Traceback" not in r.err
    # one data key for the records and one for the sealed dead letters, each kept across windows
    assert table_value(r.out, "data keys generated") == "2"
    hint = r.err.split("`kmsbeam dead-letters show ")[1].split("`")[0]
    shown = cli("dead-letters", "show", *shlex.split(hint))  # the hint pasted as it is
    assert shown.code == 0 and "2 records" in shown.out, shown.err + shown.out


def test_a_window_that_fails_stops_the_watch_and_leaves_nothing(cli, customers: Path,  # type: ignore[no-untyped-def]
                                                                 tmp_path: Path) -> None:  # fmt: skip
    land, out = tmp_path / "landing", tmp_path / "enc"
    land.mkdir()
    (land / "a.jsonl").write_text(_lines(customers, 0, 30))

    def arrive() -> None:  # a window of its own, after the first is recorded
        _wait_for(out / STATE_NAME)
        (land / "zz.jsonl").write_text('{"id": 1, "name": "no ssn here"}\n')

    writer = threading.Thread(target=arrive)
    writer.start()
    r = cli("encrypt", "--watch", land, out, "--fields", "ssn", *FAST)
    writer.join()
    assert r.code == 2 and "'ssn'" in r.err and "Traceback" not in r.err, r.err
    assert table_value(r.out, "windows") == "1" and table_value(r.out, "records in") == "30"
    assert [w["files"] for w in _state(out)["windows"]] == [[str(land / "a.jsonl")]]
    assert len(_windows(out)) == 1  # the failed window's directory is gone


def test_usage_errors_and_a_watch_with_nothing_landing(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    land, out = tmp_path / "landing", tmp_path / "enc"
    land.mkdir()
    for argv, says in [
        (["decrypt", "--watch", land, out], "--watch is for kmsbeam encrypt"),
        (["encrypt", land / "x.jsonl", out, "--fields", "ssn", "--watch-interval", "1"], "an option of --watch"),
        (["encrypt", "--watch", customers, out, "--fields", "ssn"], "is one file"),
        (["encrypt", "--watch", f"{land}/*.jsonl", out, "--fields", "ssn"], "not a glob"),
        (["encrypt", "--watch", land, out, "--fields", "ssn", "--overwrite"], "--overwrite"),
        (["encrypt", "--watch", land, land, "--fields", "ssn"], "the watched input"),
    ]:  # fmt: skip
        r = cli(*argv)
        assert r.code == 2 and says in r.err and "Traceback" not in r.err, (argv, r.err)
    assert not out.exists()
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    r = cli("encrypt", "--watch", land, other, "--fields", "ssn")
    assert r.code == 2 and "holds files but no" in r.err, r.err
    r = cli("encrypt", "--watch", land, out, "--fields", "ssn", "--watch-interval", "0.2",
            "--watch-stop-after", "0.5")  # fmt: skip
    assert r.code == 0 and table_value(r.out, "windows") == "0", r.err


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 0), (signal.SIGINT, 130)])
def test_sigterm_stops_after_the_window_in_flight_and_ctrl_c_exits_130(sig: int, code: int, customers: Path,
                                                                        tmp_path: Path) -> None:  # fmt: skip
    land, out = tmp_path / "landing", tmp_path / "enc"
    land.mkdir()
    (land / "a.jsonl").write_text(_lines(customers, 0, 40))
    proc = subprocess.Popen([sys.executable, "-m", "kmsbeam.pipelines", "encrypt", "--watch", str(land),
                             str(out), "--fields", "ssn", "--watch-interval", "0.2"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path)  # fmt: skip
    try:  # SIGTERM as soon as the window starts (or later): the window still finishes
        _wait_for(out, pattern=STATE_NAME if sig == signal.SIGINT else "window-*")
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == code, stderr.decode()
    assert table_value(stdout.decode(), "windows") == "1"
    assert table_value(stdout.decode(), "records in") == "40"
    assert [w["files"] for w in _state(out)["windows"]] == [[str(land / "a.jsonl")]]
    assert ("interrupted" in stderr.decode()) == (sig == signal.SIGINT)


def test_a_watch_of_an_oss_prefix_from_another_directory(bucket: str, customers: Path,  # noqa: F811
                                                         tmp_path: Path) -> None:  # fmt: skip
    dirs = Dirs(tmp_path / "cluster")
    dirs.allowed.add(dirs.launcher_home / ".kmsbeam")  # the local: keystore in the launcher's HOME
    lake = f"oss://{bucket}"
    first, second = _lines(customers, 0, 120), _lines(customers, 120, 200)
    client = oss_client()
    client.put(f"{lake}/landing/day-1.jsonl", first.encode())
    client.put(f"{lake}/landing/day-2.jsonl", second.encode())
    client.put(f"{lake}/landing/_SUCCESS", b"")
    done = kmsbeam(dirs, None, "encrypt", "--watch", f"{lake}/landing/", f"{lake}/enc/", "--fields",
                   "ssn,email", "--key", "local:alias/pii", "--watch-max-windows", "1", *FAST)  # fmt: skip
    assert done.code == 0, done.err
    dirs.check_clean()
    assert table_value(done.out, "files") == "2" and table_value(done.out, "records in") == "200"
    state = json.loads(client.get(f"{lake}/enc/{STATE_NAME}"))
    (window,) = state["windows"]
    assert window["files"] == [f"{lake}/landing/day-1.jsonl", f"{lake}/landing/day-2.jsonl"]
    done = kmsbeam(dirs, None, "decrypt", f"{lake}/enc/{window['name']}/", f"{lake}/plain/")
    assert done.code == 0, done.err
    dirs.check_clean()
    assert records(f"{lake}/plain/") == canonical(first + second)
    assert not os.listdir(dirs.launcher_cwd)


def test_the_data_key_options_make_the_job_policy() -> None:
    from kmsbeam.pipelines.cli import build_parser
    from kmsbeam.pipelines.spec import JobSpec, data_key_policy

    parse = build_parser().parse_known_args
    assert parse(["encrypt", "a", "b"])[0].across_bundles is None
    assert parse(["encrypt", "a", "b", "--data-keys-across-bundles"])[0].across_bundles is True
    assert parse(["encrypt", "a", "b", "--no-data-keys-across-bundles"])[0].across_bundles is False
    assert data_key_policy(JobSpec("encrypt", "a", "b")) is None  # the transforms' default
    policy = data_key_policy(JobSpec("encrypt", "a", "b", across_bundles=False))
    assert policy is not None and policy.across_bundles is False and policy.max_records == 1_000_000
    policy = data_key_policy(JobSpec("encrypt", "a", "b", max_records_per_key=5))
    assert policy is not None and policy.max_records == 5 and policy.across_bundles is None


def test_options_are_checked_before_any_file_lands(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    land, out = tmp_path / "landing", tmp_path / "enc"
    land.mkdir()
    for argv, says in [
        ([], "name the fields"),
        (["--fields", "ssn", "--key", "bogus://x"], "bogus"),
        (["--fields", "ssn", "--context", "novalue"], "NAME=VALUE"),
        (["--columns", "ssn"], "--parquet-mode"),
    ]:  # fmt: skip
        started = time.monotonic()
        r = cli("encrypt", "--watch", land, out, *argv, "--watch-interval", "5", "--watch-stop-after", "30")
        assert r.code == 2 and says in r.err and "Traceback" not in r.err, (argv, r.err)
        assert time.monotonic() - started < 20, argv  # at once, not after a poll or the deadline


def test_a_file_that_changes_after_it_was_taken_fails_the_watch(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    land, out = tmp_path / "landing", tmp_path / "enc"
    land.mkdir()
    (land / "a.jsonl").write_text(_lines(customers, 0, 10))

    def grow() -> None:  # a writer that paused longer than the landing rule waits
        _wait_for(out / STATE_NAME)
        with (land / "a.jsonl").open("a") as f:
            f.write(_lines(customers, 10, 20))

    writer = threading.Thread(target=grow)
    writer.start()
    r = cli("encrypt", "--watch", land, out, "--fields", "ssn", "--watch-interval", "0.2",
            "--watch-stop-after", "4")  # fmt: skip
    writer.join()
    assert r.code == 1, r.err
    assert f"{land / 'a.jsonl'} changed after it was encrypted" in r.err and "not encrypted" in r.err
    assert table_value(r.out, "records in") == "10"
    assert _state(out)["windows"][0]["sizes"] == {str(land / "a.jsonl"): len(_lines(customers, 0, 10).encode())}


def test_a_taken_file_that_is_gone_fails_the_job(tmp_path: Path) -> None:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from kmsbeam.pipelines._inputs import match_input
    from kmsbeam.pipelines.jobs import _fn_api_runner

    (tmp_path / "x[1]*.jsonl").write_text("{}\n")
    options = PipelineOptions([])
    with beam.Pipeline(runner=_fn_api_runner(options), options=options) as p:  # a name, not a glob
        _ = p | match_input([str(tmp_path / "x[1]*.jsonl")]) | beam.Map(lambda m: m.size_in_bytes)
    with pytest.raises(Exception, match="is gone"):  # never skipped: the job fails
        with beam.Pipeline(runner=_fn_api_runner(options), options=options) as p:
            _ = p | match_input([str(tmp_path / "gone.jsonl")]) | beam.Map(print)
