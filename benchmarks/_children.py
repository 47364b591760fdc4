"""Child processes of the benchmarks: started here, stopped by PID with SIGTERM, always waited for.

Every server a benchmark starts (the KMS emulator, the loopback OSS server, ...) and every job it
runs as a process goes through ``child`` (a context manager) or ``run``. Stopping sends SIGTERM
to the child's PID (a signal a background shell cannot have set to ignored, unlike SIGINT),
waits up to ``timeout`` seconds, then sends SIGKILL and waits again, so no child outlives the
benchmark. ``STARTED`` lists every PID started in this process (the smoke tests check each is
gone).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["STARTED", "OssServer", "child", "emulator", "run", "start", "stop"]

STARTED: list[int] = []


def start(cmd: Sequence[str], **popen: Any) -> subprocess.Popen[str]:
    proc = subprocess.Popen(list(cmd), text=True, **popen)
    STARTED.append(proc.pid)
    return proc


def stop(proc: subprocess.Popen[str], timeout: float = 30.0) -> int:
    """SIGTERM to ``proc``'s PID, wait ``timeout`` s, then SIGKILL and wait; its exit code."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    for pipe in (proc.stdin, proc.stdout, proc.stderr):
        if pipe is not None:
            pipe.close()
    return proc.returncode


@contextmanager
def child(cmd: Sequence[str], timeout: float = 30.0, **popen: Any) -> Iterator[subprocess.Popen[str]]:
    """A child process for the ``with`` block; stopped (``stop``) when the block ends."""
    proc = start(cmd, **popen)
    try:
        yield proc
    finally:
        stop(proc, timeout)


def run(cmd: Sequence[str], timeout: float | None = None, **popen: Any) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` to its end (output captured); stopped like a server on a timeout or an
    interrupt of the benchmark. Raises ``subprocess.TimeoutExpired`` after ``timeout`` s."""
    popen.setdefault("stdout", subprocess.PIPE)
    popen.setdefault("stderr", subprocess.PIPE)
    with child(cmd, **popen) as proc:
        out, err = proc.communicate(timeout=timeout)
        return subprocess.CompletedProcess(list(cmd), proc.returncode, out, err)


@contextmanager
def emulator(data: Path, access_keys: Mapping[str, str]) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``kmsbeam emulator serve --port 0`` in its own process: (process, ``host:port``)."""
    keys = ",".join(f"{k}:{v}" for k, v in access_keys.items())
    env = {**os.environ, "KMSBEAM_EMULATOR_ACCESS_KEYS": keys}
    cmd = [sys.executable, "-m", "kmsbeam.pipelines", "emulator", "serve", "--port", "0", "--data", str(data)]
    with child(cmd, env=env, stdout=subprocess.PIPE) as proc:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if "http://" not in line:
            raise RuntimeError(f"the emulator did not start: {line!r}")
        yield proc, line.split("http://", 1)[1].split()[0]


_OSS = """
import json, sys
from kmsbeam.oss import LoopbackOssServer
server = LoopbackOssServer(buckets=sys.argv[1].split(",")).start()
print(server.endpoint, flush=True)
for line in sys.stdin:
    print(json.dumps({"in": sum(server.bytes_in.values()), "out": sum(server.bytes_out.values()),
                      "requests": sum(server.requests.values())}), flush=True)
"""


class OssServer:
    """The loopback OSS server (``kmsbeam.oss.LoopbackOssServer``) in a child process, as a
    remote endpoint would be (no GIL shared with the client); asked for its byte counters."""

    def __init__(self, buckets: Sequence[str] = ("bench",)) -> None:
        self.proc = start([sys.executable, "-c", _OSS, ",".join(buckets)], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)  # fmt: skip
        assert self.proc.stdout is not None
        self.endpoint = self.proc.stdout.readline().strip()
        if not self.endpoint:
            stop(self.proc)
            raise RuntimeError("the loopback OSS server did not start")

    def environ(self) -> dict[str, str]:
        """What points kmsbeam's OSS client at this server (its default credentials)."""
        return {"KMSBEAM_OSS_ENDPOINT": self.endpoint, "KMSBEAM_OSS_REGION": "cn-hangzhou",
                "ALIBABA_CLOUD_ACCESS_KEY_ID": "loopback-ak",
                "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "loopback-secret"}  # fmt: skip

    def counters(self) -> dict[str, int]:
        """Bytes in and out and requests served so far."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stats\n")
        self.proc.stdin.flush()
        return dict(json.loads(self.proc.stdout.readline()))

    def close(self) -> None:
        stop(self.proc)

    def __enter__(self) -> OssServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
