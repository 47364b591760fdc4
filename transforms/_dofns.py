"""The DoFns behind the public transforms: picklable configuration, clients built in setup().

Each DoFn holds only strings and small dataclasses; the key source, data keys and ciphers are
built on the worker in ``setup()`` and never pickled. Data keys live for one bundle at most
(``start_bundle``/``finish_bundle`` reset them), within the caps of the data-key policy.

Dead letters are for bad records only (``kmsbeam.reasons.fails_job``): a key-source failure
(unreachable, denied, the key disabled, a source that cannot be opened) raises out of the DoFn
as one fresh sentence (``job_error``), so the bundle fails, the runner retries it, and past its
retries the job fails; good records are never dead-lettered.

The KMS call budget travels the same way: a ``KmsBudget`` (``kms_qps``) carried by the DoFn is
installed in the worker process in ``setup()`` and uninstalled in ``teardown()``
(``kmsbeam.keys.budget``); waits on it are reported as ``kms_budget_waits``/``kms_budget_wait_ms``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam import pvalue

from kmsbeam import (
    FieldDecryptor,
    FieldEncryptor,
    KmsBeamError,
    RecordDecryptor,
    RecordEncryptor,
    failure_reason,
    open_key_source,
    shared_cache,
)
from kmsbeam.reasons import fails_job, job_error
from kmsbeam.keys.budget import KmsBudget, kms_budget
from kmsbeam.transforms._budgeted import BudgetedDoFn
from kmsbeam.transforms._key_versions import key_use, report_key_versions
from kmsbeam.transforms._metrics import Counters
from kmsbeam.transforms._rows import from_row, is_row, to_row

DEAD_LETTER = "dead_letter"


class CryptoDoFn(BudgetedDoFn):
    """Runs one kmsbeam record engine (FieldEncryptor, ...) over dicts or Beam Rows.

    Args:
        op: "encrypt_fields", "decrypt_fields", "encrypt_records" or "decrypt_records".
        key_uri: the key URI (no secrets by construction).
        options: keyword arguments for the engine (fields, context, bind, keep, ...).
        label: the transform's name, used in dead letters.
        dead_letters: emit failures to the DEAD_LETTER output instead of failing.
        kms_qps: the KMS call budget of each worker process (calls/s, or a ``KmsBudget``);
            ``None``: unlimited. Installed in ``setup()``, uninstalled in ``teardown()``.
    """

    def __init__(
        self,
        op: str,
        key_uri: str,
        options: Mapping[str, Any],
        label: str,
        dead_letters: bool,
        kms_qps: float | KmsBudget | None = None,
    ) -> None:
        self._budget = kms_budget(kms_qps)
        self._budget_installed = False
        self._op = op
        self._key_uri = key_uri
        self._options = dict(options)
        self._label = label
        self._dead_letters = dead_letters
        self._engine: Any = None
        self._counters: Counters | None = None
        self._records = 0
        self._values_before = 0
        self._failed_before = 0  # failed GenerateDataKey calls already reported

    def setup(self) -> None:
        self._counters = Counters()
        self._install_budget()
        self._open()

    @property
    def _kind(self) -> str:
        """``encrypt``, ``decrypt`` or ``rewrap``: which failures are the job's (``fails_job``)."""
        return "encrypt" if self._op.startswith("encrypt") else (
            "rewrap" if self._op == "rewrap" else "decrypt")  # fmt: skip

    def _open(self) -> None:
        """Build the engine; a key source that cannot be opened fails the bundle (one sentence),
        never the records: the runner retries the bundle, then fails the job."""
        failed: KmsBeamError | None = None
        try:
            self._build()
        except KmsBeamError as exc:
            self._engine = None
            failed = job_error(self._label, exc)
        if failed is not None:  # raised outside the handler: no chain
            raise failed

    def _stop(self, exc: KmsBeamError) -> KmsBeamError:
        """The error that fails the bundle for a key-source failure (counted calls reported)."""
        self._report_calls()
        return job_error(self._label, exc)

    def _report_calls(self) -> None:
        """Add the failed GenerateDataKey calls made since the last report (successful ones
        are counted by ``on_generate``), so every operation counts its failed calls."""
        keys = getattr(self._engine, "keys", None)
        failed = getattr(keys, "failed_calls", 0)
        if failed > self._failed_before and self._counters is not None:
            self._counters.generate_calls.inc(failed - self._failed_before)
        self._failed_before = failed

    def _build(self) -> None:
        counters = self._counters
        assert counters is not None
        encrypting = self._op.startswith("encrypt")
        source = open_key_source(self._key_uri)  # workers never create keys
        opts = dict(self._options)
        ttl = opts.pop("cache_ttl", None)  # key_cache_ttl: this process's cache of that TTL
        if not encrypting:
            opts["cache"] = shared_cache(ttl)
        if encrypting:
            opts["on_generate"] = counters.generated
        else:
            opts["on_call"] = counters.unwrap_call
            self._key_use = opts["cache"] = key_use(opts)  # require_keys; versions used
        if self._op == "encrypt_fields":
            self._engine = FieldEncryptor(opts.pop("fields"), source, **opts)
        elif self._op == "decrypt_fields":
            self._engine = FieldDecryptor(opts.pop("fields"), source, **opts)
        elif self._op == "encrypt_records":
            self._engine = RecordEncryptor(source, **opts)
        else:
            self._engine = RecordDecryptor(source, **opts)
        self._run = self._engine.encrypt if encrypting else self._engine.decrypt
        self._run_batch: Any = getattr(
            self._engine, "encrypt_batch" if encrypting else "decrypt_batch", None
        )

    def start_bundle(self) -> None:
        if self._engine is None:
            self._open()
        elif hasattr(self._engine, "reset"):
            self._engine.reset()
        # Counts are kept in plain ints and reported once per bundle: a Beam counter
        # increment per element would cost more than encrypting a field.
        self._records = 0
        self._values_before = self._engine.values if self._engine is not None else 0

    def finish_bundle(self) -> None:
        if hasattr(self._engine, "reset"):
            self._engine.reset()
        counters = self._counters
        assert counters is not None
        counters.records.inc(self._records)
        counters.report_budget()
        report_key_versions(getattr(self, "_key_use", None))
        self._report_calls()
        if self._engine is not None:
            counters.values(self._op, self._engine.values - self._values_before)
            self._values_before = self._engine.values
        self._records = 0

    def process(self, element: Any) -> Iterator[Any]:
        self._records += 1
        failed: Exception | None = None
        try:
            if type(element) is dict or isinstance(element, Mapping):
                result: Any = self._run(element)
            elif is_row(element):
                result = to_row(self._run(from_row(element)), element)
            else:
                raise TypeError(f"records must be dicts or beam.Row, not {type(element).__name__}")
        except (KmsBeamError, TypeError) as exc:
            failed = exc
        if failed is not None:  # handled outside the except block: no chain to the record
            yield from self._fail(element, failed)
            return
        yield result

    def _fail(self, element: Any, exc: Exception) -> Iterator[Any]:
        """The dead letter for ``element`` (or, without dead letters, the pipeline's end); a
        key-source failure raises instead (``fails_job``): it is not the record's."""
        if isinstance(exc, KmsBeamError) and fails_job(exc, self._kind):
            raise self._stop(exc)
        reason = failure_reason(exc)
        if not self._dead_letters:
            raise KmsBeamError(f"{self._label}: {reason}")
        counters = self._counters
        assert counters is not None
        counters.dead_letters.inc()
        record = element if isinstance(element, Mapping) else _plain(element)
        yield pvalue.TaggedOutput(
            DEAD_LETTER, {"transform": self._label, "reason": reason, "record": record}
        )


class BatchCryptoDoFn(CryptoDoFn):
    """``CryptoDoFn`` over lists of records (from ``beam.BatchElements``), for the field
    engines (``encrypt_batch`` / ``decrypt_batch``): the same outputs, one call per batch."""

    def process(self, element: Any) -> Iterator[Any]:  # element: a list of records
        self._records += len(element)
        records: list[Any] = []
        rows: list[Any] = []  # the Row each record came from (None: a dict)
        for item in element:
            if type(item) is dict or isinstance(item, Mapping):
                records.append(item)
                rows.append(None)
            elif is_row(item):
                records.append(from_row(item))
                rows.append(item)
            else:
                yield from self._fail(
                    item, TypeError(f"records must be dicts or beam.Row, not {type(item).__name__}")
                )
        if not records:
            return
        results: list[Any] = self._run_batch(records)
        if self._counters is not None:  # subclasses may not report in finish_bundle
            self._counters.report_budget()
        kind = self._kind
        for result in results:  # a key-source failure fails the bundle before any dead letter
            if isinstance(result, KmsBeamError) and fails_job(result, kind):
                raise self._stop(result)
        for result, record, row in zip(results, records, rows):
            if isinstance(result, KmsBeamError):
                yield from self._fail(record if row is None else row, result)
            else:
                yield result if row is None else to_row(result, row)


def _plain(element: Any) -> Any:
    return from_row(element) if is_row(element) else element
