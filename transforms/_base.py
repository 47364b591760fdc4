"""The skeleton every kmsbeam transform shares: dead letters, display data, the DoFn base.

``KmsTransform`` is the PTransform base. Its ``expand()`` only composes steps: it creates no
key and calls no key source (create ``local:alias/`` keys first with ``create_local_keys``).
Every step emits its bad elements to the ``DEAD_LETTER`` output as
``{"transform", "reason", "record"}``; by default one fails the pipeline with
``"<transform>: <reason>"``, and ``t.with_dead_letters()`` is a NEW transform (``t`` is left as
it was) whose ``expand()`` returns ``(outputs, dead_letters)`` instead.

``KmsDoFn`` is the DoFn base: the KMS call budget of the worker process (``kmsbeam.keys.budget``,
installed in ``setup()``, removed in ``teardown()``), the Beam counters (``_metrics``), the
engine built on the worker (a key source that cannot be opened fails the bundle, one sentence),
and the routing of a failure: the record's (a dead letter) or the key source's (``fails_job``:
the bundle fails, the runner retries it, then the job fails; never a dead letter).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any, ClassVar, TypeVar

import apache_beam as beam
from apache_beam import pvalue

from kmsbeam import KmsBeamError, failure_reason, shared_cache
from kmsbeam.keys.budget import KmsBudget, install_kms_budget, kms_budget, uninstall_kms_budget
from kmsbeam.keys.strict import KeyRequirement, KeyUse
from kmsbeam.reasons import fails_job, job_error
from kmsbeam.transforms.key_versions import report_key_versions
from kmsbeam.transforms._metrics import Counters

__all__ = ["DEAD_LETTER", "KmsDoFn", "KmsTransform"]

DEAD_LETTER = "dead_letter"

_Self = TypeVar("_Self", bound="KmsTransform")


class KmsTransform(beam.PTransform):
    """A kmsbeam PTransform: ``_steps(pcoll)`` returns ``(outputs, dead_letters)``."""

    _dead_letters = False

    def __init__(self, label: str | None = None, kms_qps: float | KmsBudget | None = None) -> None:
        super().__init__(label)
        self._budget = kms_budget(kms_qps)

    def with_dead_letters(self: _Self) -> _Self:
        """A copy of this transform returning ``(outputs, dead_letters)`` instead of failing on
        a bad element (this one is unchanged)."""
        other = copy.copy(self)
        other._dead_letters = True
        return other

    def expand(self, pcoll: Any) -> Any:
        outputs, dead = self._steps(pcoll)
        if self._dead_letters:
            return outputs, dead
        _ = dead | "FailOnDeadLetter" >> beam.ParDo(_FailOnDeadLetter(type(self).failure))
        return outputs

    def _steps(self, pcoll: Any) -> tuple[Any, Any]:
        raise NotImplementedError

    @staticmethod
    def failure(letter: dict[str, Any]) -> str:
        """The sentence a dead letter fails the pipeline with (without ``with_dead_letters``)."""
        return f"{letter['transform']}: {letter['reason']}"

    def _shown(self) -> dict[str, Any]:
        """The transform's own display data (never a secret, never a context value)."""
        return {}

    def display_data(self) -> dict[str, Any]:
        shown = self._shown()
        if self._budget is not None:
            shown["kms_qps"] = self._budget.qps
            shown["kms_burst"] = self._budget.burst
        return shown


class _FailOnDeadLetter(beam.DoFn):
    def __init__(self, failure: Any) -> None:
        self._failure = failure

    def process(self, letter: dict[str, Any]) -> Iterator[Any]:
        raise KmsBeamError(self._failure(letter))
        yield  # pragma: no cover


class KmsDoFn(beam.DoFn):
    """The DoFn base (see the module doc). Subclasses set ``kind`` (``"encrypt"``, ``"decrypt"``
    or ``"rewrap"``: which failures are the job's), build their engine in ``_build()`` and
    turn a failed element into a dead letter with ``yield self._dead(record, exc)``."""

    kind: ClassVar[str] = "decrypt"
    _budget: KmsBudget | None = None
    _budget_installed = False
    _engine: Any = None
    _key_use: KeyUse | None = None  # decrypting engines: the versions that unwrapped keys

    def __init__(self, label: str, budget: KmsBudget | None = None) -> None:
        self._label = label
        self._budget = budget

    def setup(self) -> None:
        self._counters = Counters()
        self._failed_before = 0  # failed GenerateDataKey calls already reported
        if self._budget is not None and not self._budget_installed:
            install_kms_budget(self._budget)
            self._budget_installed = True
        self._open()

    def teardown(self) -> None:
        if self._budget_installed and self._budget is not None:
            uninstall_kms_budget(self._budget)
        self._budget_installed = False

    def _build(self) -> Any:
        """The engine of this worker (``None``: none needed)."""
        return None

    def _open(self) -> None:
        """Build the engine; a key source that cannot be opened fails the bundle (one sentence),
        never the records: the runner retries the bundle, then fails the job."""
        failed: KmsBeamError | None = None
        try:
            self._engine = self._build()
        except KmsBeamError as exc:
            self._engine = None
            failed = job_error(self._label, exc)
        if failed is not None:  # raised outside the handler: no chain
            raise failed

    def _unwrap_cache(self, ttl: float | None, required: tuple[str, ...]) -> KeyUse:
        """The process's data-key cache of this TTL, checked against ``require_keys`` before
        every lookup; the versions it sees unwrap keys are reported each bundle."""
        self._key_use = KeyUse(shared_cache(ttl), KeyRequirement(required) if required else None)
        return self._key_use

    def finish_bundle(self) -> None:
        self._counters.report_budget()
        report_key_versions(self._key_use)
        self._report_calls()

    def _report_calls(self) -> None:
        """Add the failed GenerateDataKey calls made since the last report (successful ones are
        counted by ``Counters.generated``), so every operation counts its failed calls."""
        failed = getattr(getattr(self._engine, "keys", None), "failed_calls", 0)
        if failed > self._failed_before:
            self._counters.generate_calls.inc(failed - self._failed_before)
        self._failed_before = failed

    def _fails_job(self, exc: BaseException) -> bool:
        """Whether ``exc`` is the key source's failure rather than the element's."""
        return isinstance(exc, KmsBeamError) and fails_job(exc, self.kind)

    def _reason(self, exc: BaseException) -> str:
        return failure_reason(exc)

    def _dead(self, record: Any, exc: BaseException) -> pvalue.TaggedOutput:
        """The dead letter for ``record``; a key-source failure raises instead (not the record's)."""
        if self._fails_job(exc):
            assert isinstance(exc, KmsBeamError)
            self._report_calls()
            raise job_error(self._label, exc)
        self._counters.dead_letters.inc()
        return pvalue.TaggedOutput(
            DEAD_LETTER, {"transform": self._label, "reason": self._reason(exc), "record": record}
        )
