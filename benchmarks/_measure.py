"""Honest timing: the machine's load sampled during each measurement, and equal interleaved repeats.

- ``Load``: while open, a background thread reads the 1-minute load average
  (``os.getloadavg``, i.e. ``/proc/loadavg``) every second, plus once on entry and once on
  exit; ``text()`` is ``min/mean/max`` of the samples, printed next to each row.
- ``interleaved(repeat, runs)``: every run ``repeat`` times, in turn (A, B, A, B, ...), so both
  sides of a ratio get the same number of runs and drifting load hits both; each ``Timing``
  keeps its wall seconds, the CPU seconds of this process and of its waited-for children, and
  the load sampled during its runs.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Load", "Timing", "best_of", "cpu_seconds", "interleaved", "load_text", "timed"]


class Load:
    """The 1-minute load average, sampled every ``every`` seconds while the ``with`` block runs."""

    def __init__(self, every: float = 1.0) -> None:
        self.every = every
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        self.samples.append(os.getloadavg()[0])

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            self.sample()

    def __enter__(self) -> Load:
        self.sample()
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="load-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.sample()

    def extend(self, other: Load) -> None:
        self.samples += other.samples

    def text(self) -> str:
        """``min/mean/max`` of the samples (``-`` if none)."""
        s = self.samples
        return f"{min(s):.2f}/{sum(s) / len(s):.2f}/{max(s):.2f}" if s else "-"


def cpu_seconds() -> tuple[float, float]:
    """(this process, its waited-for children): user + system CPU seconds so far."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime, kids.ru_utime + kids.ru_stime


@dataclass
class Timing:
    """The runs of one measurement: wall seconds, CPU seconds (self, children), load during."""

    wall: list[float] = field(default_factory=list)
    cpu_self: list[float] = field(default_factory=list)
    cpu_children: list[float] = field(default_factory=list)
    load: Load = field(default_factory=Load)
    result: Any = None

    @property
    def best(self) -> float:
        """The fastest run's wall seconds."""
        return min(self.wall)

    @property
    def cpu(self) -> float:
        """The least CPU seconds of one run (this process + children)."""
        return min(a + b for a, b in zip(self.cpu_self, self.cpu_children))

    @property
    def runs(self) -> int:
        return len(self.wall)


def timed(fn: Callable[[], Any], into: Timing | None = None) -> Timing:
    """One run of ``fn`` under a ``Load`` sampler, appended to ``into`` (or a new ``Timing``)."""
    t = into if into is not None else Timing()
    with Load() as load:
        self0, kids0 = cpu_seconds()
        start = time.perf_counter()
        t.result = fn()
        t.wall.append(time.perf_counter() - start)
        self1, kids1 = cpu_seconds()
    t.cpu_self.append(self1 - self0)
    t.cpu_children.append(kids1 - kids0)
    t.load.extend(load)
    return t


def interleaved(repeat: int, runs: Mapping[str, Callable[[], Any]],
                after: Callable[[str, Timing], None] | None = None) -> dict[str, Timing]:  # fmt: skip
    """Each of ``runs`` ``repeat`` times, in turn (A, B, A, B, ...): equal repeats on every side.

    ``after(name, timing)`` is called after each run (a progress line)."""
    out = {name: Timing() for name in runs}
    for _ in range(max(1, repeat)):
        for name, fn in runs.items():
            timed(fn, out[name])
            if after is not None:
                after(name, out[name])
    return out


def load_text(*timings: Timing) -> str:
    """``min/mean/max`` load over the runs of all ``timings`` (both sides of a ratio)."""
    load = Load()
    for t in timings:
        load.extend(t.load)
    return load.text()


def best_of(repeat: int, fn: Callable[[], Any]) -> Timing:
    """``fn`` ``repeat`` times (a measurement with no other side: no ratio is taken of it)."""
    return interleaved(repeat, {"": fn})[""]
