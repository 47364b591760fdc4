"""The rewrap transform: ``RewrapDataKeys`` moves data keys to a new master key.

It replaces the header of each field or record value (its wrapped data key) and leaves the
encrypted bytes after it identical; one key-source call per distinct data key per worker
process (``kmsbeam.rotation.rewrap``). Re-encrypting under new data keys (for when a data key
itself may be compromised) is ``ReencryptFields``/``ReencryptRecords`` (``_reencrypt``).

Caveats:
- ``RewrapDataKeys`` never sees plaintext: only wrapped keys travel to the key source, which
  rewraps server-side (KMS ``ReEncrypt``) or inside the HSM. Each new wrapped key is
  unwrapped once on the worker to check its commitment (one extra call per data key).
- ``expand()`` calls no key source: each worker describes the target once (a disabled or
  unknown target fails the job), unless ``target_version`` is given. To fail before the
  pipeline runs, check it on the driver first:
  ``target_version=open_key_source(to_key).current_version()``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

import apache_beam as beam
from apache_beam.metrics import Metrics
from apache_beam.pvalue import TaggedOutput

from kmsbeam import KmsBeamError, check_context, shared_cache
from kmsbeam.formats.base import outcomes
from kmsbeam.formats.records import DEFAULT_PAYLOAD_FIELD
from kmsbeam.formats.values import rewrap_paths, rewrap_records
from kmsbeam.keys.budget import KmsBudget
from kmsbeam.keys.strict import KeyRequirement, RequiredRewrapSource
from kmsbeam.rotation.inventory import key_rows, record_rows
from kmsbeam.rotation.journal import journal_writer, read_journal
from kmsbeam.rotation.rewrap import (
    ALREADY,
    FILTERED,
    RESUMED,
    REWRAPPED,
    Rewrapper,
    record_paths,
    shared_memo,
)
from kmsbeam.transforms._base import DEAD_LETTER, KmsTransform
from kmsbeam.transforms._dofns import RecordsFn
from kmsbeam.transforms.journal_fs import journal_store
from kmsbeam.transforms._metrics import NAMESPACE
from kmsbeam.transforms._options import (
    REWRAP_MODES,
    RewrapMode,
    cache_ttl,
    vault_of,
    choice,
    key_uri,
    names,
    required_keys,
)
from kmsbeam.transforms._transforms import BATCH_SIZE

__all__ = ["RewrapDataKeys"]

_Self = TypeVar("_Self", bound="_Lists")
KEYS = "keys"  # the data keys each bundle saw (kmsbeam.rotation.inventory lines)
_COUNTERS = {REWRAPPED: "values_rewrapped", ALREADY: "values_skipped",
             FILTERED: "values_filtered", RESUMED: "values_resumed"}  # fmt: skip


class _RewrapFn(RecordsFn):
    """Batches of records through one ``Rewrapper`` (memo shared by the worker process); each
    batch ends with the data keys it saw first in its bundle on the ``KEYS`` output
    (``kmsbeam.rotation.inventory``)."""

    kind = "rewrap"

    def __init__(self, label: str, to_key: str, budget: KmsBudget | None, options: dict[str, Any],
                 ttl: float | None, required: tuple[str, ...], batched: bool) -> None:  # fmt: skip
        super().__init__(label, to_key, budget, batched=batched)
        self._options, self._ttl, self._required = options, ttl, required
        self._heads: dict[Any, Any] = {}  # this bundle's {old value header: new header}
        self._failed: list[str] = []  # key rows of the values of records that failed
        self._named: set[Any] = set()  # the headers this bundle has written rows for

    def _build(self) -> Rewrapper:
        o, required = self._options, self._required
        source: Any = self._source()
        if required:  # strict mode: values under other master keys are refused, no call made
            source = RequiredRewrapSource(source, KeyRequirement(required))
        paths, fmt = record_paths(o["mode"], o["fields"], o["payload_field"])
        # The caller's answer when it gave one (no DescribeKey per worker), else ask now.
        version = o["target_version"] or source.current_version()
        memo = shared_memo(self._key, tuple(sorted(o["context"].items())), o["only_versions"],
                           o["verify"], version, o["journal"], required)  # fmt: skip  (a strict memo is its own)
        journal = o["journal"]
        store = journal_store(journal) if journal else None  # oss:// and other schemes
        rw = Rewrapper(source, context=o["context"], only_versions=o["only_versions"],
                       cache=shared_cache(self._ttl),  # key_cache_ttl (the checks)
                       verify=o["verify"], memo=memo, target_version=version,
                       on_call=Metrics.counter(NAMESPACE, "kms_calls_rewrap").inc,
                       on_verify=self._counters.unwrap_call,
                       known=read_journal(journal, version, store) if journal else None,
                       on_moved=journal_writer(journal, store).moved if journal else None,
                       vault_in=vault_of(o["vault_in"]), vault_out=vault_of(o["vault_out"]))  # fmt: skip
        check = KeyRequirement(required).check_record if required else None

        def run(record: Mapping[str, Any]) -> dict[str, Any]:
            if check is not None:  # strict: every value is checked before the Rewrapper counts a call
                check(record, paths, fmt, also=version)
            return rewrap_paths(record, paths, fmt, rw, self._heads)

        def run_batch(records: list[Any]) -> list[Any]:
            if check is None:  # one loop for the values of one data key (rewrap_records)
                results = rewrap_records(records, paths, fmt, rw, self._heads)
            else:
                results = outcomes(run, records)
            for record, result in zip(records, results):
                if isinstance(result, KmsBeamError):  # its values count before, not after
                    self._failed.extend(record_rows(record, paths, fmt))
            return results

        self._run, self._run_batch, self._fmt = run, run_batch, fmt
        return rw

    def start_bundle(self) -> None:
        if self._engine is None:
            self._open()
        self._records = 0
        self._before = dict(self._engine.counts) if self._engine is not None else {}
        self._heads, self._failed, self._named = {}, [], set()

    def _batch(self, element: list[Any]) -> Iterator[Any]:
        yield from super()._batch(element)
        fresh = {old: new for old, new in self._heads.items() if old not in self._named}
        self._named.update(fresh)
        rows = key_rows(fresh, self._fmt) + self._failed  # a few lines: one per new data key
        self._heads, self._failed = {}, []
        for row in rows:
            yield TaggedOutput(KEYS, row)

    def finish_bundle(self) -> None:
        self._counters.records.inc(self._records)
        self._counters.report_budget()
        self._records = 0
        if self._engine is None:
            return
        for status, name in _COUNTERS.items():
            n = self._engine.counts[status] - self._before.get(status, 0)
            if n:
                Metrics.counter(NAMESPACE, name).inc(n)
        self._before = dict(self._engine.counts)


class _Lists(KmsTransform):
    """``batched()``: a copy whose elements are lists of records, in and out (``EncryptFields``'s)."""

    _lists = False

    def batched(self: _Self) -> _Self:
        """A copy of this transform taking and giving lists of records (this one is unchanged)."""
        other = copy.copy(self)
        other._lists = True
        return other


class RewrapDataKeys(_Lists):
    """Rewrap the data keys of encrypted fields (or whole records) to ``to_key``.

    Args:
        to_key: the target key URI (required); its key source must be able to rewrap the old
            keys (same KMS, or same PKCS#11 token).
        fields: the encrypted field paths (``mode="fields"``).
        mode: ``"fields"`` (values of ``EncryptFields``) or ``"record"`` (``EncryptRecords``).
        context: the encryption context the data keys were generated with.
        payload_field: the record payload field (``mode="record"``).
        only_versions: rewrap only data keys under these master key versions
            (``kmsbeam.keys.registry.wrapped_key_version`` names); the others pass unchanged.
        verify: check each new wrapped key's commitment before using it (default on).
        target_version: the target's current version when already known (workers then make
            no ``DescribeKey`` call); see the module caveats.
        journal: a directory for the rotation journal (``kmsbeam.rotation.journal``), which
            every worker can reach (a local path on local runners). Data keys it already
            lists are rewrapped without a call; each new rewrap is appended before use, so a
            pipeline run again after a crash does not repeat the calls.
        kms_qps: at most this many remote KMS calls per second per worker process
            (``kmsbeam.keys.budget``).
        key_cache_ttl: seconds each new wrapped key's check unwrap is cached (default 60).
        key_vault: move the values to this key vault: v2 values (header ``fmt || K || 0``), each
            data key written to the vault (under ``to_key``) before a value names it there.
        from_key_vault: the key vault of v2 input values; without ``key_vault`` they become
            self-contained v1 values again.
        key_inventory: a path prefix: the data keys the rewrap saw are written there as JSON
            lines ``{"k": K, "in": version before, "out": version after}`` (a few lines per
            bundle, repeats across bundles; ``kmsbeam.rotation.inventory.merge_rows`` reads
            them), without reading any value twice. Records that failed give ``"in"`` only.

    ``batched()`` gives a copy whose elements are lists of records, in and out (one list of
    the good records per list; dead letters one per element), as ``EncryptFields.batched()``.

    Metrics: ``kms_calls_rewrap``, ``kms_calls_decrypt`` (the checks), ``values_rewrapped``,
    ``values_resumed`` (from the journal), ``values_skipped`` (already under the target),
    ``values_filtered``, ``dead_letters``.
    """

    def __init__(
        self,
        to_key: str,
        fields: Iterable[str] | str = (),
        *,
        mode: RewrapMode = "fields",
        context: Mapping[str, str] | None = None,
        payload_field: str = DEFAULT_PAYLOAD_FIELD,
        only_versions: Iterable[str] | None = None,
        verify: bool = True,
        target_version: str | None = None,
        journal: str | None = None,
        kms_qps: float | None = None,
        label: str | None = None,
        require_keys: Iterable[str] = (),
        key_cache_ttl: float | None = None,
        key_inventory: str | None = None,
        key_vault: str | None = None,
        from_key_vault: str | None = None,
    ) -> None:
        super().__init__(label, kms_qps)
        vault_of(key_vault), vault_of(from_key_vault)  # checked here, opened on the workers
        self._inventory = key_inventory
        self._to_key = key_uri(to_key, "kms-emulator://HOST:PORT/alias/pii")
        mode = choice(mode, REWRAP_MODES, "mode")
        fields = names(fields)
        record_paths(mode, fields, payload_field)  # checks the fields or the payload field
        if mode == "fields" and not fields:
            raise ValueError("name the encrypted fields to rewrap")
        self._options: dict[str, Any] = {
            "mode": mode, "fields": fields, "payload_field": payload_field,
            "context": check_context(context),
            "only_versions": None if only_versions is None else tuple(sorted(only_versions)),
            "verify": bool(verify), "target_version": target_version,
            "journal": None if journal is None else str(journal),
            "vault_out": key_vault, "vault_in": from_key_vault}  # fmt: skip
        self._ttl, self._required = cache_ttl(key_cache_ttl), required_keys(require_keys)

    def _steps(self, pcoll: Any) -> tuple[Any, Any]:
        batches = pcoll if self._lists else pcoll | "Batch" >> beam.BatchElements(
            min_batch_size=BATCH_SIZE, max_batch_size=BATCH_SIZE)  # fmt: skip
        dofn = _RewrapFn(self.label, self._to_key, self._budget, self._options, self._ttl, self._required,
                         self._lists)  # fmt: skip
        out = batches | "Rewrap" >> beam.ParDo(dofn).with_outputs(DEAD_LETTER, KEYS, main="records")
        if self._inventory is not None:
            _ = out[KEYS] | "WriteKeys" >> beam.io.WriteToText(self._inventory, file_name_suffix=".jsonl")
        return out.records, out[DEAD_LETTER]

    def _shown(self) -> dict[str, Any]:
        o = self._options
        return {"to_key": self._to_key, "mode": o["mode"], "fields": ",".join(o["fields"]),
                "context_keys": ",".join(sorted(o["context"])), "verify": o["verify"],
                **({"key_vault": o["vault_out"]} if o["vault_out"] else {}),
                **({"from_key_vault": o["vault_in"]} if o["vault_in"] else {})}  # fmt: skip
