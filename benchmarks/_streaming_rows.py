"""The parts of ``benchmarks.streaming`` that run inside its pipelines, and the nonce check.

The pipelines run on the BundleBasedDirectRunner, in the benchmark's own process, so these
DoFns keep their results in this module's globals (a DoFn of an importable module is pickled by
reference: the runner's copy sees the same globals), each run under its own token:

- ``Pace``: holds element ``i`` until ``i * interval`` seconds after the run's first element,
  so a stream of N records lasts ``N * interval`` seconds of real time (``--seconds``).
- ``Count``: counts the records (or lists of records) that come out.
- ``Nonces``: for every encrypted value of a list of records, its data key's commitment K and
  its counter C (and which transform sealed it); ``nonce_check(token)`` then counts values,
  distinct K, K sealed under by more than one transform, and duplicate (K, C) pairs (numpy,
  4 bytes a value: the counters of each K sorted once).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import apache_beam as beam
import numpy as np

from kmsbeam.formats.envelope import FIELD_V1, parse

__all__ = ["Alternate", "Count", "Nonces", "Pace", "counted", "make_list", "new_token", "nonce_check"]

_LOCK = threading.Lock()
_STARTS: dict[str, float] = {}
_COUNTS: dict[str, int] = {}
_NONCES: dict[str, dict[bytes, list[np.ndarray]]] = {}
_USERS: dict[str, dict[bytes, set[str]]] = {}  # the transforms that sealed under each K
_TOKENS = itertools.count()


def new_token() -> str:
    """A fresh run token (results of different runs never mix)."""
    return f"run-{next(_TOKENS)}-{time.monotonic_ns()}"


class Pace(beam.DoFn):
    """Element ``(i, record)`` leaves as ``record`` no sooner than ``i * interval`` seconds after
    the first element of the run (a stream of real duration; the runner may be slower)."""

    def __init__(self, token: str, interval: float) -> None:
        self._token, self._interval = token, interval

    def process(self, element: tuple[int, Any]) -> Iterator[Any]:
        i, record = element
        with _LOCK:
            start = _STARTS.setdefault(self._token, time.monotonic())
        wait = start + i * self._interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        yield record


class Count(beam.DoFn):
    """Counts the records out (a list counts its records)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def process(self, element: Any) -> Iterator[Any]:
        n = len(element) if isinstance(element, list) else 1
        with _LOCK:
            _COUNTS[self._token] = _COUNTS.get(self._token, 0) + n
        return iter(())


def counted(token: str) -> int:
    """The records ``Count`` saw in run ``token``."""
    with _LOCK:
        return _COUNTS.pop(token, 0)


class Alternate(beam.PartitionFn):
    """Seed ``(start, count)`` to partition ``(start // per_list) % n``: lists alternate."""

    def __init__(self, per_list: int) -> None:
        self._per_list = per_list

    def partition_for(self, element: Any, num_partitions: int, *args: Any, **kwargs: Any) -> int:
        start: int = element[0]
        return (start // self._per_list) % num_partitions


def make_list(seed: tuple[int, int]) -> list[dict[str, str]]:
    """``count`` records ``{"v": 8 digits}`` from ``start``: one element of the nonce stream."""
    start, count = seed
    return [{"v": f"{i:08d}"} for i in range(start, start + count)]


class Nonces(beam.DoFn):
    """(K, counter) of every ``field`` value (``encoding="bytes"``) of a list of records that
    transform ``sealer`` encrypted."""

    def __init__(self, token: str, field: str, sealer: str) -> None:
        self._token, self._field, self._sealer = token, field, sealer

    def process(self, records: list[dict[str, Any]]) -> Iterator[Any]:
        by_key: dict[bytes, list[bytes]] = {}
        header, k, counters = b"", b"", None
        for record in records:
            value = record[self._field]
            if not (header and value.startswith(header)):
                parsed = parse(value, FIELD_V1)
                header, k = parsed.header, parsed.commitment
                counters = by_key.setdefault(k, [])
            assert counters is not None
            counters.append(value[len(header) : len(header) + 4])
        with _LOCK:
            mine, users = _NONCES.setdefault(self._token, {}), _USERS.setdefault(self._token, {})
            for key, cs in by_key.items():
                mine.setdefault(key, []).append(np.frombuffer(b"".join(cs), dtype=">u4"))
                users.setdefault(key, set()).add(self._sealer)
        return iter(())


def nonce_check(token: str) -> dict[str, int]:
    """Values, distinct data keys (K), keys that more than one transform sealed under,
    duplicate (K, counter) pairs and the most values one key sealed in run ``token``: the
    counters of each K sorted once (numpy), then dropped."""
    with _LOCK:
        keys, users = _NONCES.pop(token, {}), _USERS.pop(token, {})
    out = {"values": 0, "keys": len(keys), "shared keys": sum(len(u) > 1 for u in users.values()),
           "duplicates": 0, "most per key": 0}
    for key in list(keys):
        counters = np.concatenate(keys.pop(key)).astype(np.uint32)
        counters.sort()
        out["values"] += len(counters)
        out["duplicates"] += int(np.count_nonzero(counters[1:] == counters[:-1]))
        out["most per key"] = max(out["most per key"], len(counters))
    return out
