"""Live progress of a CLI job: records done, rate and ETA on a TTY; a log line every N s off one.

::

    kmsbeam: encrypting in.jsonl  412,345 of ~1,000,000 records (41%, ~18.1 MiB of 44.0 MiB)  21,300 records/s  ETA 28 s  19 s elapsed
    kmsbeam: encrypting in.jsonl: 412,345 of ~1,000,000 records (41%, ~18.1 MiB of 44.0 MiB), 21,300 records/s, ETA 28 s, 19 s elapsed

On a TTY the first line is rewritten in place every second; elsewhere (an Airflow or cron log)
the second is written as a plain line every ``--progress-every`` seconds (default 30). ``-q``
silences both. A job shorter than one interval writes no progress line off a TTY.

The channel from the workers: Beam metrics are not readable while the FnApiRunner runs (its
``run()`` returns when the job is done), so a ``Tally`` step after the read sends
``<token> <count>`` UDP datagrams to a port the launcher bound on 127.0.0.1: at most every
half second per bundle and at the end of each bundle. Only counts travel, never data. That
reaches the launcher only when the workers run on its machine: the FnApiRunner (``in_memory``,
``multi_processing``) and any runner with ``--environment_type LOOPBACK``. On every other
runner no ``Tally`` step is added and the line shows the elapsed time and the input size,
saying that the workers do not report progress. Parquet column jobs (``--parquet-mode``) are
not counted either.

The totals are estimates made on the launcher before the job (``estimate_totals``, from
``kmsbeam.pipelines._totals``). A bundle that a runner retries is counted again. The summary
table's counts come from Beam metrics, not from here.
"""

from __future__ import annotations

import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TextIO

import apache_beam as beam

from kmsbeam.pipelines._totals import Totals, estimate_totals

__all__ = ["DEFAULT_EVERY", "Channel", "Reporter", "Tally", "Totals", "elapsed_progress",
           "estimate_totals", "reports_to_launcher"]  # fmt: skip

DEFAULT_EVERY = 30.0  # seconds between progress lines off a TTY
_TTY_EVERY = 1.0
_POLL = 0.25
_LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner", "SwitchingDirectRunner")


def reports_to_launcher(runner: str | None, environment_type: str | None) -> bool:
    """Whether the workers of this runner run on the launching machine (and so can reach the
    launcher's loopback port): the FnApiRunner, and any runner in LOOPBACK mode."""
    return runner in _LOCAL_RUNNERS or (environment_type or "").upper() == "LOOPBACK"


class Channel:
    """The launcher's end: a UDP socket on 127.0.0.1 that adds up the workers' counts."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.setblocking(False)
        self.token = secrets.token_hex(8)
        self.records = 0

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    def tally(self) -> Tally:
        """The pass-through step that counts records on the workers."""
        return Tally(self.address, self.token)

    def drain(self) -> int:
        """Read every datagram waiting; returns the records counted so far."""
        prefix = self.token.encode() + b" "
        while True:
            try:
                data = self._sock.recv(256)
            except (BlockingIOError, InterruptedError):
                return self.records
            except OSError:  # closed
                return self.records
            if data.startswith(prefix) and data[len(prefix):].isdigit():
                self.records += int(data[len(prefix):])

    def close(self) -> None:
        self._sock.close()


class Tally(beam.DoFn):
    """Passes records (or lists of them) through, sending how many records went by to the
    launcher's ``Channel``.

    Best effort: a datagram that cannot be sent is dropped, never an error of the job."""

    def __init__(self, address: tuple[str, int], token: str, interval: float = 0.5) -> None:
        self._address = address
        self._token = token
        self._interval = interval
        self._sock: socket.socket | None = None
        self._count = 0
        self._last = 0.0

    def setup(self) -> None:
        try:
            self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        except OSError:
            self._sock = None

    def start_bundle(self) -> None:
        self._count = 0
        self._last = time.monotonic()

    def process(self, element: Any) -> Iterator[Any]:
        n = len(element) if isinstance(element, list) else 1  # a list: its records
        self._count += n
        if (n > 1 or not self._count & 255) and time.monotonic() - self._last >= self._interval:
            self._send()
        yield element

    def finish_bundle(self) -> None:
        self._send()

    def _send(self) -> None:
        self._last = time.monotonic()
        if self._count and self._sock is not None:
            try:
                self._sock.sendto(f"{self._token} {self._count}".encode(), self._address)
            except OSError:
                pass
        self._count = 0

    def teardown(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_sock": None}


def _duration(seconds: float) -> str:
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def _size(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} B" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} TiB"  # pragma: no cover


class Reporter:
    """Writes the progress of one job to ``stream`` (stderr) from a background thread.

    Args:
        what: ``encrypting in.jsonl``.
        totals: the input size and record count known before the job.
        channel: the workers' counts, or None when the records are not counted.
        every: seconds between lines off a TTY.
        clock: injectable for tests.
        uncounted: why there is no count (shown when ``channel`` is None).
    """

    def __init__(self, what: str, totals: Totals | None = None, channel: Channel | None = None,
                 stream: TextIO | None = None, every: float = DEFAULT_EVERY,
                 clock: Callable[[], float] = time.monotonic,
                 uncounted: str | None = None) -> None:  # fmt: skip
        self._what = what
        self._uncounted = uncounted or "this runner's workers do not report progress"
        self._totals = totals or Totals()
        self.channel = channel
        self._stream = stream or sys.stderr
        self._every = every
        self._clock = clock
        self._started = clock()
        self._next = self._started + self._interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._wrote_tty = False

    @property
    def tty(self) -> bool:
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty and isatty())

    @property
    def _interval(self) -> float:
        return _TTY_EVERY if self.tty else self._every

    def start(self) -> None:
        self._started = self._clock()
        self._next = self._started + self._interval
        self._thread = threading.Thread(target=self._run, name="kmsbeam-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(_POLL):
            self.tick()

    def tick(self) -> None:
        """Read the channel; write a line when one is due."""
        if self.channel is not None:
            self.channel.drain()
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._interval
        if self.tty:
            self._stream.write(f"\rkmsbeam: {self._what}  {self.line(now, sep='  ')}\033[K")
            self._wrote_tty = True
        else:
            self._stream.write(f"kmsbeam: {self._what}: {self.line(now, sep=', ')}\n")
        self._stream.flush()

    @property
    def records(self) -> int | None:
        return None if self.channel is None else self.channel.records

    def line(self, now: float | None = None, sep: str = ", ") -> str:
        """The progress text at ``now``: counts, rate, ETA, elapsed."""
        elapsed = max((self._clock() if now is None else now) - self._started, 0.0)
        t = self._totals
        parts: list[str] = []
        done = self.records
        if done is None:
            size = f"{_size(t.bytes)} of input" if t.bytes is not None else "input size unknown"
            parts.append(f"{size} ({self._uncounted})")
        else:
            text = f"{done:,}"
            if t.records:
                pct = min(done / t.records, 1.0)
                text += f" of {'' if t.exact else '~'}{t.records:,} records ({pct:.0%}"
                if t.bytes is not None:
                    text += f", ~{_size(pct * t.bytes)} of {_size(t.bytes)}"
                text += ")"
            else:
                text += " records" + (f" ({_size(t.bytes)} of input)" if t.bytes is not None else "")
            parts.append(text)
            rate = done / elapsed if elapsed > 0 else 0.0
            parts.append(f"{rate:,.0f} records/s")
            if t.records and rate > 0:
                parts.append(f"ETA {_duration(max(t.records - done, 0) / rate)}")
        parts.append(f"{_duration(elapsed)} elapsed")
        return sep.join(parts)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self.channel is not None:
            self.channel.drain()
            self.channel.close()
        if self._wrote_tty:
            self._stream.write("\r\033[K")
            self._stream.flush()


@contextmanager
def elapsed_progress(what: str, quiet: bool, every: float | None, why: str) -> Iterator[None]:
    """Elapsed time while a job without a record count runs (rotate, export): the same TTY
    line or log line every ``every`` seconds as a counted job, saying ``why`` it is not counted."""
    if quiet:
        yield
        return
    reporter = Reporter(what, every=every or DEFAULT_EVERY, uncounted=why)
    reporter.start()
    try:
        yield
    finally:
        reporter.stop()

