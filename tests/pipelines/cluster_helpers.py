"""A cluster-shaped kmsbeam run on one machine (issue 15 part 2).

The CLI runs as its own process (the launcher) in a fresh working directory with its own
``HOME``; workers run in other processes:

- ``multi_processing``: Beam's FnApiRunner forks workers from the launcher;
- ``portable``: the PortableRunner with ``--job_endpoint embed`` starts every worker through a
  boot script (``beam:env:harness_subprocess_python:v1``, the Python job server's process
  environment: it runs a shell command with the control and logging endpoints and the
  pipeline options in the environment, as a cluster's boot does). The script moves into
  another directory, sets another ``HOME``, drops ``KMSBEAM_HOME`` and execs the Python SDK
  worker (``apache_beam.runners.worker.sdk_worker_main``). It logs one line per worker start
  to a file outside every checked directory, so a test can tell the workers really ran there.

After every job ``Dirs.check_clean()`` asserts that no file appeared in the launcher's or the
workers' working directory or ``HOME`` and that no directory named like a URL (``oss:``)
exists under them: a local path that leaked to a worker shows up there.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from kmsbeam.oss import oss_client

MODES = ("multi_processing", "portable")
SUBPROCESS_ENV = "beam:env:harness_subprocess_python:v1"


@dataclass
class Dirs:
    """The launcher's and the workers' directories, and what is allowed in them."""

    root: Path
    launcher_cwd: Path = field(init=False)
    launcher_home: Path = field(init=False)
    worker_cwd: Path = field(init=False)
    worker_home: Path = field(init=False)
    boot: Path = field(init=False)
    boot_log: Path = field(init=False)
    allowed: set[Path] = field(default_factory=set)

    def __post_init__(self) -> None:
        for name in ("launcher_cwd", "launcher_home", "worker_cwd", "worker_home"):
            path = self.root / name
            path.mkdir(parents=True)
            setattr(self, name, path)
        self.boot_log = self.root / "boot.log"
        self.boot = self.root / "boot.sh"
        self.boot.write_text(
            "#!/bin/sh\n"
            f"echo \"$$\" >> {shlex.quote(str(self.boot_log))}\n"
            f"cd {shlex.quote(str(self.worker_cwd))} || exit 1\n"
            f"export HOME={shlex.quote(str(self.worker_home))}\n"
            "unset KMSBEAM_HOME\n"
            f"exec {shlex.quote(sys.executable)} -m apache_beam.runners.worker.sdk_worker_main\n"
        )

    def runner_args(self, mode: str) -> list[str]:
        if mode == "multi_processing":
            return ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
        return ["--runner", "PortableRunner", "--job_endpoint", "embed",
                "--environment_type", SUBPROCESS_ENV, "--environment_config", f"sh {self.boot}"]  # fmt: skip

    def files(self) -> set[Path]:
        found: set[Path] = set()
        for top in (self.launcher_cwd, self.launcher_home, self.worker_cwd, self.worker_home):
            for dirpath, dirnames, filenames in os.walk(top):
                for d in dirnames:
                    assert ":" not in d, f"a directory named like a URL: {Path(dirpath, d)}"
                found |= {Path(dirpath, f) for f in filenames}
        return found

    def check_clean(self) -> None:
        extra = {p for p in self.files() if not any(p == a or a in p.parents for a in self.allowed)}
        assert not extra, f"files left in a working directory or HOME: {sorted(map(str, extra))}"

    def workers_started(self) -> int:
        return len(self.boot_log.read_text().splitlines()) if self.boot_log.exists() else 0


@dataclass
class Done:
    code: int
    out: str
    err: str


def kmsbeam(dirs: Dirs, mode: str | None, *argv: str, timeout: float = 300) -> Done:
    """Run ``kmsbeam ARGV`` as the launcher (its own cwd and HOME, no KMSBEAM_HOME); Beam runner
    options for ``mode`` are added (``None``: a command without a pipeline, e.g. cat)."""
    env = dict(os.environ, HOME=str(dirs.launcher_home), PYTHONDONTWRITEBYTECODE="1")
    env.pop("KMSBEAM_HOME", None)
    args = [sys.executable, "-m", "kmsbeam.pipelines", *argv, *(dirs.runner_args(mode) if mode else [])]
    done = subprocess.run(args, cwd=dirs.launcher_cwd, env=env, capture_output=True, timeout=timeout)
    return Done(done.returncode, done.stdout.decode("utf-8", "replace"), done.stderr.decode("utf-8", "replace"))


def objects(url: str) -> dict[str, bytes]:
    """Every object under ``url`` (relative name -> bytes)."""
    client = oss_client()
    return {info.url[len(url):]: client.get(info.url) for info in client.list(url)}


def records(url: str) -> list[str]:
    """The JSONL records of the ``part-*`` objects under ``url``, canonical and sorted."""
    lines = [line for name, data in objects(url).items() if name.startswith("part-")
             for line in data.decode("utf-8").splitlines() if line.strip()]  # fmt: skip
    return sorted(json.dumps(json.loads(x), sort_keys=True) for x in lines)


def canonical(text: str) -> list[str]:
    return sorted(json.dumps(json.loads(x), sort_keys=True) for x in text.splitlines() if x.strip())
