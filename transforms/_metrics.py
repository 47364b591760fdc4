"""Beam metrics for kmsbeam transforms, all in the ``kmsbeam`` namespace.

============================  ==============================================================
counter                       counts
============================  ==============================================================
records                       elements seen
values_encrypted              field values (or whole records) encrypted
values_decrypted              field values (or whole records) decrypted
data_keys_generated           data keys generated (one GenerateDataKey each)
kms_calls_generate_data_key   calls to the key source to generate a data key (failed too)
kms_calls_decrypt             calls to the key source to unwrap a data key (cache misses;
                              failed too)
dead_letters                  elements sent to the dead-letter output
kms_budget_waits              remote KMS calls that waited for the KMS call budget
kms_budget_wait_ms            milliseconds those calls waited (``kms_qps``: throttling)
============================  ==============================================================

Every ``kms_calls_*`` counter counts the calls made, failed ones included (a failure the worker
remembers, ``kmsbeam.failures``, makes no call and is not counted). Counters carry counts only:
never a key, a value or a context.
"""

from __future__ import annotations

from apache_beam.metrics import Metrics

from kmsbeam.keys.budget import take_waits

NAMESPACE = "kmsbeam"


class Counters:
    """The counters one DoFn instance increments."""

    def __init__(self) -> None:
        c = lambda name: Metrics.counter(NAMESPACE, name)  # noqa: E731
        self.records = c("records")
        self.encrypted = c("values_encrypted")
        self.decrypted = c("values_decrypted")
        self.keys = c("data_keys_generated")
        self.generate_calls = c("kms_calls_generate_data_key")
        self.decrypt_calls = c("kms_calls_decrypt")
        self.dead_letters = c("dead_letters")
        self.budget_waits = c("kms_budget_waits")
        self.budget_wait_ms = c("kms_budget_wait_ms")

    def report_budget(self) -> None:
        """Add the waits on this process's KMS call budget since the last report (any DoFn of
        the process may report them: each wait is counted once)."""
        waits, seconds = take_waits()
        if waits:
            self.budget_waits.inc(waits)
            self.budget_wait_ms.inc(max(1, round(seconds * 1000)))

    def generated(self) -> None:
        self.keys.inc()
        self.generate_calls.inc()

    def unwrap_call(self) -> None:
        self.decrypt_calls.inc()

    def values(self, op: str, n: int) -> None:
        if n:
            (self.encrypted if op.startswith("encrypt") else self.decrypted).inc(n)
