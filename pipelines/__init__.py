"""kmsbeam's runnable jobs and the ``kmsbeam`` command line.

::

    kmsbeam encrypt examples/customers.jsonl out/enc --fields ssn,email,phone
    kmsbeam decrypt out/enc out/plain

From Python: ``main(["encrypt", ...])`` returns the exit code; ``plan_encrypt``/``plan_decrypt``
check a ``JobSpec`` and ``run_plan`` runs it. The names that need Apache Beam are imported on
first use, so ``kmsbeam --version`` and ``kmsbeam keys`` start fast and Beam's import-time log
noise can be silenced first.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from kmsbeam.pipelines.cli import main

__all__ = [
    "JobResult",
    "JobSpec",
    "Manifest",
    "Plan",
    "main",
    "plan_decrypt",
    "plan_encrypt",
    "run_plan",
]

_LAZY = {
    "JobResult": "kmsbeam.pipelines.jobs",
    "run_plan": "kmsbeam.pipelines.jobs",
    "JobSpec": "kmsbeam.pipelines.plan",
    "Plan": "kmsbeam.pipelines.plan",
    "plan_decrypt": "kmsbeam.pipelines.plan",
    "plan_encrypt": "kmsbeam.pipelines.plan",
    "Manifest": "kmsbeam.pipelines.manifest",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'kmsbeam.pipelines' has no attribute {name!r}")
