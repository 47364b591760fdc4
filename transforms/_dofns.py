"""The DoFns of the record transforms: one format's engine over dict records or Beam Rows.

``EncryptFn`` and ``DecryptFn`` hold a format object (``kmsbeam.formats.FieldFormat`` or
``RecordFormat``: small, picklable) and the key URI; the key source and the format's engine are
built on the worker in ``_build()`` and never pickled. An element is one record, or a list of
records (from ``beam.BatchElements``: one engine call per batch; with ``batched=True`` the good
results of a list leave as one list, dead letters one per element). ``start_bundle`` and
``finish_bundle`` reset the engine's data key: in batch it is dropped (one data key per bundle);
with ``DataKeyPolicy.across_bundles`` (streaming) it goes back on the worker process's shelf for
the next bundle (``kmsbeam.keys.shelf``), within the data-key policy. Budget,
counters and dead-letter routing are ``KmsDoFn``'s (``_base``). Counts are kept in plain ints
and reported once per bundle: a Beam counter increment per element would cost more than
encrypting a field.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from itertools import repeat
from typing import Any, Callable

from apache_beam import pvalue

from kmsbeam import DataKeyPolicy, KmsBeamError, open_key_source
from kmsbeam.formats import FieldFormat, RecordFormat
from kmsbeam.keys.budget import KmsBudget
from kmsbeam.transforms._base import KmsDoFn
from kmsbeam.transforms._rows import from_row, is_row, to_row

__all__ = ["DecryptFn", "EncryptFn", "RecordsFn"]

Format = FieldFormat | RecordFormat
_FAILED = (KmsBeamError, TypeError)  # a record's failure: a dead letter (as in ``process``)


class RecordsFn(KmsDoFn):
    """Records (one per element, or lists of them) through ``self._run`` / ``self._run_batch``
    (a result or a ``KmsBeamError`` per record), both set by ``_build``.

    Args:
        label: the transform's name, used in dead letters and job errors.
        key: the key URI (no secrets by construction).
        budget: the KMS call budget of each worker process (``None``: unlimited).
        batched: a list in gives one list of the good results out (``None`` when none).
    """

    _run: Callable[[Mapping[str, Any]], Any]
    _run_batch: Callable[[list[Any]], list[Any]] | None = None  # None: the engine has no batch call

    def __init__(self, label: str, key: str, budget: KmsBudget | None = None, *, batched: bool = False) -> None:
        super().__init__(label, budget)
        self._key = key
        self._lists = batched
        self._records = self._values_before = 0

    def _source(self) -> Any:
        return open_key_source(self._key)  # workers never create keys

    def start_bundle(self) -> None:
        if self._engine is None:
            self._open()
        elif hasattr(self._engine, "reset"):
            self._engine.reset()  # a bundle boundary (DataKeys.reset)
        self._records = 0
        self._values_before = getattr(self._engine, "values", 0)

    def finish_bundle(self) -> None:
        if hasattr(self._engine, "reset"):
            self._engine.reset()
        super().finish_bundle()
        self._counters.records.inc(self._records)
        self._records = 0
        if self._engine is not None:
            self._counters.values(self.kind, self._engine.values - self._values_before)
            self._values_before = self._engine.values

    def process(self, element: Any) -> Iterator[Any]:
        if isinstance(element, list):
            yield from self._batch(element)
            return
        self._records += 1
        failed: Exception | None = None
        try:
            if isinstance(element, Mapping):
                result: Any = self._run(element)
            elif is_row(element):
                result = to_row(self._run(from_row(element)), element)
            else:
                raise TypeError(f"records must be dicts or beam.Row, not {type(element).__name__}")
        except _FAILED as exc:
            failed = exc
        if failed is not None:  # handled outside the except block: no chain to the record
            yield self._dead(from_row(element), failed)
            return
        yield result

    def _batch(self, element: list[Any]) -> Iterator[Any]:
        good: list[Any] = []
        for out in self._outcomes(element):
            if isinstance(out, pvalue.TaggedOutput):
                yield out
            elif not self._lists:
                yield from out
            else:
                good = out
        if good:
            yield good

    def _outcomes(self, element: list[Any]) -> Iterator[Any]:
        """Dead letters (``TaggedOutput``) and then one list of the good results, in order."""
        self._records += len(element)
        records: list[Any] = element
        rows: list[Any] | None = None  # the Row each record came from (None: a dict); None: all dicts
        if not {dict}.issuperset(map(type, element)):
            records, rows = [], []
            for item in element:
                if isinstance(item, Mapping) or is_row(item):
                    records.append(from_row(item))
                    rows.append(item if is_row(item) else None)
                else:
                    yield self._dead(item, TypeError(f"records must be dicts or beam.Row, not {type(item).__name__}"))
        if not records:
            return
        results = self._run_batch(records) if self._run_batch else [self._one(r) for r in records]
        self._counters.report_budget()
        if rows is None and {dict}.issuperset(map(type, results)):
            yield results  # the common case: dicts in, every one a dict out (no failure)
            return
        for result in results:  # a key-source failure fails the bundle before any dead letter
            if isinstance(result, KmsBeamError) and self._fails_job(result):
                yield self._dead(None, result)  # raises
        good = []
        for result, record, row in zip(results, records, rows or repeat(None)):
            if isinstance(result, _FAILED):
                yield self._dead(record, result)
            else:
                good.append(result if row is None else to_row(result, row))
        yield good

    def _one(self, record: Any) -> Any:
        """``_run(record)``, or the error it raised (an engine without a batch call)."""
        try:
            return self._run(record)
        except _FAILED as exc:
            exc.__context__, exc.__suppress_context__ = None, True
            return exc


class EncryptFn(RecordsFn):
    """``format``'s encryptor under ``key`` (``context``, ``policy``)."""

    kind = "encrypt"

    def __init__(self, label: str, key: str, budget: KmsBudget | None, fmt: Format,
                 context: Mapping[str, str], policy: DataKeyPolicy, *, batched: bool = False) -> None:  # fmt: skip
        super().__init__(label, key, budget, batched=batched)
        self._format, self._context, self._policy = fmt, dict(context), policy

    def _build(self) -> Any:
        engine = self._format.encryptor(self._source(), context=self._context, policy=self._policy,
                                        on_generate=self._counters.generated)  # fmt: skip
        self._run, self._run_batch = engine.encrypt, getattr(engine, "encrypt_batch", None)
        return engine


class DecryptFn(RecordsFn):
    """``format``'s decryptor under ``key``: the process's data-key cache of ``ttl``, checked
    against ``required`` (``require_keys``)."""

    kind = "decrypt"

    def __init__(self, label: str, key: str, budget: KmsBudget | None, fmt: Format,
                 context: Mapping[str, str], ttl: float | None, required: Sequence[str], *,
                 batched: bool = False) -> None:  # fmt: skip
        super().__init__(label, key, budget, batched=batched)
        self._format, self._context, self._ttl, self._required = fmt, dict(context), ttl, tuple(required)

    def _build(self) -> Any:
        engine = self._format.decryptor(self._source(), context=self._context,
                                        cache=self._unwrap_cache(self._ttl, self._required),
                                        on_call=self._counters.unwrap_call)  # fmt: skip
        self._run, self._run_batch = engine.decrypt, getattr(engine, "decrypt_batch", None)
        return engine
