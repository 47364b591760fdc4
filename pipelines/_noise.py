"""Beam's log noise, kept off the CLI's stderr: its import-time warning and log levels in the
launcher (``quiet_beam_logging``) and the start-up lines of ``multi_processing`` workers.

The FnApiRunner starts each worker as ``python -m apache_beam.runners.worker.sdk_worker_main``
with the launcher's stderr. Before the worker reads the pipeline options (where kmsbeam sets
the log level to ERROR) it logs "apitools not found ..." and "Logging handler created." there,
and nothing the launcher sets in its own ``logging`` reaches another process. While a job
runs, ``WorkerNoise`` points file descriptor 2 at a pipe and copies every line to the real
stderr except those two; everything else (a worker's traceback, a warning) still shows.
``stream`` is the real stderr, for the progress line (a terminal stays a terminal).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from typing import Any, TextIO

from kmsbeam.pipelines.runners import is_local, runner_name

__all__ = ["NOISE", "WorkerNoise", "quiet_beam_logging", "workers_share_stderr"]

NOISE = (
    b"apitools not found, and bigquery client libraries are not available",
    b"INFO:__main__:Logging handler created.",
)


class WorkerNoise:
    """``with WorkerNoise() as noise: ...`` (see the module docstring)."""

    def __init__(self) -> None:
        self.stream: TextIO = sys.stderr
        self._saved = -1
        self._thread: threading.Thread | None = None

    def __enter__(self) -> WorkerNoise:
        sys.stderr.flush()
        self._saved = os.dup(2)
        read, write = os.pipe()
        os.dup2(write, 2)
        os.close(write)
        self._thread = threading.Thread(target=self._pump, args=(read,), name="kmsbeam-stderr", daemon=True)
        self._thread.start()
        self.stream = os.fdopen(os.dup(self._saved), "w", buffering=1, encoding="utf-8", errors="replace")
        return self

    def _pump(self, read: int) -> None:
        with os.fdopen(read, "rb") as pipe:
            try:
                for line in pipe:
                    if not any(noise in line for noise in NOISE):
                        os.write(self._saved, line)
            except OSError:  # the real stderr was closed after the job: nothing left to copy to
                return

    def __exit__(self, *exc: Any) -> None:
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # the pipe's last writers are worker processes, gone by now
        if self._thread is not None:
            self._thread.join(timeout=5)  # a worker still alive: stop copying, do not wait
        self.stream.close()
        os.close(self._saved)
        self.stream = sys.stderr


def workers_share_stderr(options: Any) -> bool:
    """Whether the job starts local worker processes that write to the launcher's stderr (the
    FnApiRunner's ``multi_processing``); never with ``KMSBEAM_DEBUG`` set."""
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    if os.environ.get("KMSBEAM_DEBUG"):
        return False
    local = is_local(runner_name(options.view_as(StandardOptions).runner))
    return local and options.view_as(DirectOptions).direct_running_mode == "multi_processing"


def quiet_beam_logging() -> None:
    """Import Beam without its root-logger "apitools not found" warning; keep its logs quiet."""
    if "apache_beam" not in sys.modules:
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            import apache_beam  # noqa: F401
        finally:
            root.setLevel(level)
    logging.getLogger("apache_beam").setLevel(logging.ERROR)
    # A failing DoFn's error is logged with its traceback before it is re-raised: the CLI
    # prints the error itself, as one line.
    logging.getLogger("apache_beam.runners.common").setLevel(logging.CRITICAL)
