"""kmsbeam's own count of data keys and key-source calls, per process.

Beam metrics are reported by the runner, and some runners under-report them: the
BundleBasedDirectRunner (the runner of Beam's streaming tests) reports only the last bundle's
counts (1 data key for a stream that made 500). The counts here are kept by kmsbeam itself, at
the place each call is made, so they are right on every runner for the process they run in:

=============================  ===============================================================
name                           counts
=============================  ===============================================================
data_keys_generated            data keys generated (successful GenerateDataKey calls)
data_keys_reused               data keys taken again from the shelf by a later bundle
kms_calls_generate_data_key    GenerateDataKey calls to a key source (failed ones included)
kms_calls_decrypt              data-key unwrap calls (cache misses; failed ones included)
kms_calls_rewrap               rewrap (ReEncrypt) calls
=============================  ===============================================================

Failed calls are in the ``kms_calls_*`` counts; a failure the process remembers
(``kmsbeam.failures``) makes no call and is not counted. ``call_counts()`` is a snapshot of this
process since it started (a forked child starts at zero: ``kmsbeam.process``); the difference of
two snapshots is what happened between them. The kmsbeam CLI reads them around a job that runs
in its own process (the in-memory DirectRunner, the BundleBasedDirectRunner); a job on worker
processes reports Beam's metrics, which those runners report in full. Counts only: never a key,
a value or a context.
"""

from __future__ import annotations

import threading
from collections import Counter

from kmsbeam import process

__all__ = ["CALL_COUNTS", "call_counts", "count_call"]

CALL_COUNTS = (
    "data_keys_generated",
    "data_keys_reused",
    "kms_calls_generate_data_key",
    "kms_calls_decrypt",
    "kms_calls_rewrap",
)


class _Counts:
    __slots__ = ("counts", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()


def _here() -> _Counts:
    return process.shared("keys.calls", None, _Counts)


def count_call(name: str, n: int = 1) -> None:
    """Add ``n`` to this process's count ``name`` (one of ``CALL_COUNTS``)."""
    here = _here()
    with here.lock:
        here.counts[name] += n


def call_counts() -> dict[str, int]:
    """This process's counts so far, every name of ``CALL_COUNTS`` included (0 when none)."""
    here = _here()
    with here.lock:
        return {name: here.counts[name] for name in CALL_COUNTS}
