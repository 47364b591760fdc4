"""``kmsbeam oss serve`` as a user runs it: a subprocess on a free loopback port, used with the
official oss2 SDK, stopped with SIGTERM, its objects saved to --data and loaded again."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import oss2
import pytest

AK, SECRET = "dev-ak", "dev-secret-0123456789"


class Served:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: queue.Queue[str] = queue.Queue()
        self._pumping = threading.Thread(target=self._pump, daemon=True)
        self._pumping.start()
        self.banner = self.line()
        assert self.banner.startswith("kmsbeam: OSS loopback server on http://127.0.0.1:"), self.banner
        self.endpoint = self.banner.split(" on ", 1)[1].split(" ", 1)[0]
        self.export = self.line()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def line(self) -> str:
        return self.lines.get(timeout=60)  # liveness bound, not a timing assertion

    def stop(self) -> tuple[int, str, str]:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self._pumping.join(timeout=60)
        rest = []
        while not self.lines.empty():
            rest.append(self.lines.get())
        assert self.proc.stderr is not None and self.proc.stdout is not None
        err = self.proc.stderr.read()
        self.close()
        return code, "\n".join(rest), err

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self._pumping.join(timeout=60)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None and not stream.closed:
                stream.close()

    def bucket(self, name: str, secret: str = SECRET) -> oss2.Bucket:
        return oss2.Bucket(oss2.Auth(AK, secret), self.endpoint, name)


def serve(*args: str, env: dict[str, str] | None = None) -> Served:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    environ.update(env if env is not None else {"KMSBEAM_OSS_SERVE_ACCESS_KEYS": f"{AK}:{SECRET}"})
    proc = subprocess.Popen([sys.executable, "-m", "kmsbeam.pipelines", "oss", "serve", "--port", "0", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=environ)  # fmt: skip
    return Served(proc)


@pytest.fixture()
def served(tmp_path: Path) -> Iterator[Served]:
    server = serve("--data", str(tmp_path / "oss-data"), "--bucket", "lake")
    yield server
    server.close()


def test_serve_speaks_oss_to_the_official_sdk_and_keeps_objects(served: Served, tmp_path: Path) -> None:
    bucket = served.bucket("lake")
    bucket.put_object("raw/a.jsonl", b'{"a": 1}\n', headers={"x-oss-meta-origin": "test"})
    assert bucket.get_object("raw/a.jsonl").read() == b'{"a": 1}\n'
    assert [o.key for o in oss2.ObjectIterator(bucket, prefix="raw/")] == ["raw/a.jsonl"]
    with pytest.raises(oss2.exceptions.ServerError) as refused:
        served.bucket("lake", secret="wrong").get_object("raw/a.jsonl")
    assert refused.value.status == 403
    code, out, err = served.stop()
    assert code == 0 and f"1 objects saved to {tmp_path / 'oss-data'}" in out
    assert SECRET not in served.banner + served.export + out + err
    data = tmp_path / "oss-data"
    assert oct(data.stat().st_mode & 0o777) == "0o700"
    assert all(oct(p.stat().st_mode & 0o777) == "0o600" for p in (data / "objects").iterdir())
    again = serve("--data", str(data))
    try:
        assert "buckets: lake; 1 objects loaded" in again.banner
        obj = again.bucket("lake").get_object("raw/a.jsonl")
        assert obj.read() == b'{"a": 1}\n' and obj.headers["x-oss-meta-origin"] == "test"
    finally:
        assert again.stop()[0] == 0


def test_keys_from_a_file_or_the_client_variables(tmp_path: Path) -> None:
    keys = tmp_path / "keys.txt"
    keys.write_text(f"# comment\n{AK}:{SECRET}\nother:othersecret\n")
    keys.chmod(0o600)
    server = serve("--access-key-file", str(keys), "--bucket", "b-1", env={})
    try:
        server.bucket("b-1").put_object("x", b"1")
        other = oss2.Bucket(oss2.Auth("other", "othersecret"), server.endpoint, "b-1")
        assert other.get_object("x").read() == b"1"
    finally:
        assert server.stop()[0] == 0
    server = serve("--bucket", "b-2", env={"ALIBABA_CLOUD_ACCESS_KEY_ID": AK,
                                           "ALIBABA_CLOUD_ACCESS_KEY_SECRET": SECRET})  # fmt: skip
    try:
        server.bucket("b-2").put_object("y", b"2")
    finally:
        assert server.stop()[0] == 0


def test_without_an_access_key_one_sentence_and_exit_2() -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ALIBABA_CLOUD_")}
    environ.pop("KMSBEAM_OSS_SERVE_ACCESS_KEYS", None)
    r = subprocess.run([sys.executable, "-m", "kmsbeam.pipelines", "oss", "serve", "--port", "0"],
                       capture_output=True, text=True, env=environ, timeout=120, check=False)  # fmt: skip
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith("kmsbeam: error: give the OSS server an access key: --access-key-file FILE")


def test_a_secret_on_the_command_line_is_not_an_option(cli) -> None:  # type: ignore[no-untyped-def]
    r = cli("oss", "serve", "--access-key", f"{AK}:{SECRET}")
    assert r.code == 2 and "unrecognized arguments" in r.err
