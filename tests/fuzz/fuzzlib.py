"""What every fuzz target shares: the target shape, the documented errors, tamper mutations.

A target owns one parser of untrusted bytes. ``seeds()`` gives valid encodings (the starting
points: tampering with a valid value finds more than random bytes); ``check(data)`` feeds one
input to the parser and raises ``AssertionError`` when a property is broken. An exception the
parser documents is no failure; any other exception escapes and is the crash. The same targets
run under hypothesis (``test_*.py`` here) and under atheris (``fuzz_*.py``, ``.ci/fuzz``).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

#: no single input may take longer than this (a hang, not a slow machine)
HANG_SECONDS = 20


class Target:
    """One parser under test. Subclasses set ``name`` and implement ``seeds`` and ``check``."""

    name = ""

    def seeds(self) -> list[bytes]:
        raise NotImplementedError

    def check(self, data: bytes) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Release what ``__init__`` started (servers, keystores)."""


def attempt(
    allowed: tuple[type[BaseException], ...], call: Callable[..., T], *args: Any, **kwargs: Any
) -> T | None:
    """``call(*args)``, or None if it raised one of the ``allowed`` (documented) errors."""
    try:
        return call(*args, **kwargs)
    except allowed:
        return None


def as_text(data: bytes) -> str:
    """Fuzz bytes as a str, keeping every byte (invalid UTF-8 becomes lone surrogates)."""
    return data.decode("utf-8", "surrogateescape")


# -- tamper mutations -------------------------------------------------------------------------
INTERESTING = (0x00, 0x01, 0x02, 0x03, 0x0F, 0x10, 0x7F, 0x80, 0xFE, 0xFF)
#: openers that nest when repeated (JSON arrays and objects, Thrift lists of structs)
NEST_TOKENS = (b"[", b'{"k":', b'{"k":[', b"\x19\x1c", b"\x1c")


def mutate(seed: bytes, ops: Sequence[tuple[Any, ...]]) -> bytes:
    """``seed`` after ``ops``: flip a bit, set a byte, truncate, extend, insert, delete, copy a
    span over another, repeat a short span or a nesting token thousands of times (length
    and nesting bombs).
    Positions are taken modulo the current length, so any op applies."""
    data = bytearray(seed)
    for op in ops:
        kind, a, b = op
        n = len(data)
        if kind == "flip" and n:
            data[a % n] ^= 1 << (b % 8)
        elif kind == "set" and n:
            data[a % n] = b % 256
        elif kind == "truncate":
            del data[a % (n + 1) :]
        elif kind == "extend":
            data += b
        elif kind == "insert":
            pos = a % (n + 1)
            data[pos:pos] = b
        elif kind == "delete" and n:
            pos = a % n
            del data[pos : pos + 1 + b % 16]
        elif kind == "copy" and n:
            src, dst, size = a % n, b % n, 1 + (a ^ b) % 24
            data[dst : dst + size] = data[src : src + size]
        elif kind == "nest":  # b: which token, 1000..8000 times; at the start one time in 4
            pos = 0 if a % 4 == 0 else a % (n + 1)
            data[pos:pos] = NEST_TOKENS[b % len(NEST_TOKENS)] * (1000 * (1 + b // 8 % 8))
        elif kind == "repeat" and n:  # b: span of 1..8 bytes, 1000..8000 times
            pos = a % n
            data[pos:pos] = data[pos : pos + 1 + b // 8 % 8] * (1000 * (1 + b % 8))
    return bytes(data)


# -- limits -------------------------------------------------------------------------------------
@contextlib.contextmanager
def no_hang(seconds: int = HANG_SECONDS) -> Iterator[None]:
    """Fail (``TimeoutError``) if the block runs longer than ``seconds``: a hang."""

    def alarm(signum: int, frame: Any) -> None:
        raise TimeoutError(f"one input took more than {seconds} s: the parser hangs")

    old = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def write_seeds(target: Target, directory: Path) -> int:
    """Write the target's seeds into a corpus directory; returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    seeds = target.seeds()
    for i, seed in enumerate(seeds):
        (directory / f"seed-{i:03d}").write_bytes(seed)
    return len(seeds)
