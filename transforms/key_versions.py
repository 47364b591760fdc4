"""The master key versions that unwrapped data keys, as Beam metrics (``kmsbeam.keys.strict``).

Each decrypting DoFn reports, at the end of every bundle, one counter per version its
``KeyUse`` saw unwrap a data key: namespace ``kmsbeam.key_versions``, name = the version
(a KMS KeyVersionId, or ``TOKEN/KEK/ID`` for PKCS#11). Only versions that unwrapped a data key
are reported (a key source accepted them), never a value, a key or a context. Counters add up
over workers and processes, so the launcher reads the exact set of versions used
(``versions_used``) on any runner, ``multi_processing`` included.
"""

from __future__ import annotations

from collections.abc import Mapping

from apache_beam.metrics import Metrics

from kmsbeam.keys.strict import KeyUse

__all__ = ["NAMESPACE", "report_key_versions", "versions_used"]

NAMESPACE = "kmsbeam.key_versions"


def report_key_versions(use: KeyUse | None) -> None:
    """Report every version ``use`` has seen (each bundle: a retried bundle reports them again)."""
    if use is None:
        return
    for version in sorted(use.used):
        Metrics.counter(NAMESPACE, version).inc()


def versions_used(counters: Mapping[str, int]) -> list[str]:
    """The versions reported in a job's counters (``namespace/name`` keys, as ``counters_of``)."""
    prefix = NAMESPACE + "/"
    return sorted(k[len(prefix):] for k, v in counters.items() if k.startswith(prefix) and v)
