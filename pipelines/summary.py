"""What the CLI prints about a job: the progress line while it runs and the summary table.

The FnApiRunner reports metrics only at the end, so the progress line shows elapsed time.
Nothing printed here carries a value, a key or a context value: counts, sizes and paths only.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import TextIO

from kmsbeam.pipelines.jobs import JobResult

__all__ = ["Progress", "dead_letter_warning", "summary_table"]


class Progress:
    """A background thread writing ``kmsbeam: encrypting ... 12 s`` on a TTY stderr."""

    def __init__(self, what: str, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self._what = what
        self._stream = stream or sys.stderr
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    @property
    def enabled(self) -> bool:
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty and isatty())

    def start(self) -> None:
        self._started = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="kmsbeam-progress", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            seconds = time.monotonic() - self._started
            self._stream.write(f"\rkmsbeam: {self._what} ... {seconds:.0f} s")
            self._stream.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._stream.write("\r\033[K")
            self._stream.flush()


def _n(value: int) -> str:
    return f"{value:,}"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{value:,} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{value:,} B"


def summary_table(result: JobResult) -> str:
    """The end-of-job table (plain text, one row per line)."""
    plan = result.plan
    m = plan.manifest
    verb = "encrypted" if plan.spec.action == "encrypt" else "decrypted"
    rate = result.records_in / result.elapsed if result.elapsed > 0 else 0.0
    rows = [
        ("records in", _n(result.records_in)),
        ("records out", _n(result.records_out)),
        (f"values {verb}", _n(result.count(f"values_{verb}"))),
        ("data keys generated", _n(result.count("data_keys_generated"))),
        ("KMS calls: GenerateDataKey", _n(result.count("kms_calls_generate_data_key"))),
        ("KMS calls: Decrypt", _n(result.count("kms_calls_decrypt"))),
        ("dead letters", _n(result.dead_letters)
         + (f"  ({plan.dead_dir})" if result.dead_letters else "")),
        ("bytes in", _bytes(result.bytes_in)),
        ("bytes out", _bytes(result.bytes_out)),
        ("elapsed", f"{result.elapsed:.1f} s"),
        ("rate", f"{rate:,.0f} records/s"),
    ]  # fmt: skip
    title = (f"kmsbeam {plan.spec.action}: {plan.spec.input} -> {plan.out_dir} "
             f"({m.format}, {m.mode} mode, key {m.key})")  # fmt: skip
    width = max(len(name) for name, _ in rows)
    return "\n".join([title] + [f"  {name:<{width}}  {value}" for name, value in rows])


def dead_letter_warning(result: JobResult) -> str | None:
    """One warning line when records went to the dead letters, else None."""
    if not result.dead_letters:
        return None
    return (f"kmsbeam: warning: {result.dead_letters:,} of {result.records_in:,} records went to "
            f"the dead letters in {result.plan.dead_dir} (each line has the reason)")  # fmt: skip
