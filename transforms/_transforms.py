"""The public Beam PTransforms: field-level and whole-record encryption and decryption.

Each transform takes its key first, then the fields it protects; it validates its
configuration at construction (a bad field path, key URI, encoding or option fails before the
pipeline runs), composes one ParDo in ``expand()`` (no key-source call there), and shows its
configuration in ``display_data()`` without secrets (key URIs never carry secrets; context
values are not shown).

Output: by default the transformed records; a bad element fails the pipeline with a reason
(nothing is dropped silently). ``.with_dead_letters()`` is a new transform returning
``(records, dead_letters)`` instead, where each dead letter is ``{"transform", "reason",
"record"}`` and count in = records out + dead letters.

Caveats:
- Plaintext exists in worker memory while a record is processed, and the runner sees the
  input records (and, on the encrypt side, the dead letters) in cleartext.
- ``EncryptFields`` and ``DecryptFields`` hand records to the engine in batches of up to
  ``BATCH_SIZE`` (512):
  one call per batch instead of per record. A batch holds references to its records until it
  is processed; outputs keep their windows and timestamps.
- ``t.batched()`` is a NEW transform (``t`` is left as it was) whose input and output elements
  are lists of records: one engine call per input list, one list of its good records out
  (none when every record failed), dead letters still one per element. For pipelines that keep
  records in lists end to end (the ``kmsbeam`` jobs): no per-record step around it.
- Data keys and bundles (``DataKeyPolicy.across_bundles``): in batch every bundle gets its own
  data key; in a streaming pipeline (``--streaming``, or an unbounded input) a data key outlives
  its bundle and serves the worker process's next bundles until a policy cap (records, bytes,
  ``data_key_max_age``) is reached (``kmsbeam.keys.shelf``): one GenerateDataKey per worker
  thread and key per max age instead of one per bundle. Set ``across_bundles`` to choose.
- A retried bundle never reuses a nonce: its values are sealed under new counter values of a
  data key (a counter never moves back) or under a new data key; values already emitted by the
  failed attempt are discarded by the runner, never mixed.
- A ``local:alias/`` key must exist before the pipeline runs: ``create_local_keys(key)`` on the
  driver creates it (workers never create keys; a missing one fails the job).
- ``local:`` keys live in one machine's keystore: use them with the DirectRunner or the
  PortableRunner on that machine, not on a remote cluster.
- Revocation latency: after a master key is disabled (or a policy denies the caller), a
  worker keeps encrypting under the data key it holds for at most ``data_key_max_age``
  seconds (default 300, ``DataKeyPolicy.max_age_seconds``) and keeps decrypting values of data
  keys it already unwrapped for at most ``key_cache_ttl`` seconds (default 60); then the next
  KMS call fails and so does the job. Lower them for a faster kill switch (more KMS calls).
- ``kms_qps`` caps the remote KMS calls (``alibaba-kms://``, ``kms-emulator://``; retries
  count) of each worker process, not of the job: the fleet makes up to workers x ``kms_qps``
  calls/s. It travels with the DoFn and is installed on the worker in ``setup()``
  (``kmsbeam.keys.budget``); time spent waiting shows in the ``kms_budget_wait_ms`` counter.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

import apache_beam as beam

from kmsbeam import DataKeyPolicy, check_context
from kmsbeam.formats import FieldFormat, RecordFormat
from kmsbeam.formats.records import DEFAULT_PAYLOAD_FIELD
from kmsbeam.transforms._base import DEAD_LETTER, KmsTransform
from kmsbeam.transforms._dofns import DecryptFn, EncryptFn, Format
from kmsbeam.transforms._options import (
    ENCODINGS, Encoding, cache_ttl, choice, key_uri, policy_for, policy_with_age, required_keys,
    vault_of,
)  # fmt: skip

BATCH_SIZE = 512  # records per engine call in EncryptFields and DecryptFields

__all__ = ["DEAD_LETTER", "DecryptFields", "DecryptRecords", "EncryptFields", "EncryptRecords"]

_Self = TypeVar("_Self", bound="_Records")


class _Records(KmsTransform):
    """One ParDo of ``EncryptFn`` (with a policy) or ``DecryptFn`` over one format; field values
    are batched first (one engine call per batch: per-element overhead would cost more than
    the encryption, see benchmarks/); ``batched()``: lists in, lists out (see the module doc)."""

    _lists = False

    def __init__(self, key: str, fmt: Format, context: Mapping[str, str] | None, label: str | None,
                 kms_qps: float | None, *, policy: DataKeyPolicy | None = None, ttl: float | None = None,
                 required: tuple[str, ...] = ()) -> None:  # fmt: skip
        super().__init__(label, kms_qps)
        self._key, self._format, self._context = key_uri(key), fmt, check_context(context)
        self._policy, self._ttl, self._required = policy, ttl, required

    def batched(self: _Self) -> _Self:
        """A copy of this transform taking and giving lists of records (this one is unchanged)."""
        other = copy.copy(self)
        other._lists = True
        return other

    def _steps(self, pcoll: Any) -> tuple[Any, Any]:
        if isinstance(self._format, FieldFormat) and not self._lists:
            pcoll = pcoll | "Batch" >> beam.BatchElements(min_batch_size=BATCH_SIZE, max_batch_size=BATCH_SIZE)
        args = (self.label, self._key, self._budget, self._format, self._context)
        dofn = (DecryptFn(*args, self._ttl, self._required, batched=self._lists) if self._policy is None
                else EncryptFn(*args, policy_for(self._policy, pcoll), batched=self._lists))  # fmt: skip
        out = pcoll | "Apply" >> beam.ParDo(dofn).with_outputs(DEAD_LETTER, main="records")
        return out.records, out[DEAD_LETTER]

    def _shown(self) -> dict[str, Any]:
        f = self._format
        shown: dict[str, Any] = {"key": self._key, "context_keys": ",".join(sorted(self._context))}
        if isinstance(f, FieldFormat):
            shown |= {"fields": ",".join(p.name for p in f.fields), "bind": ",".join(p.name for p in f.bind)}
        else:
            shown |= {"keep": ",".join(f.keep), "payload_field": f.payload_field}
        if self._policy is not None:  # encrypting
            p = self._policy
            shown |= {"encoding": f.encoding, "max_records_per_key": p.max_records,
                      "max_bytes_per_key": p.max_bytes, "max_key_age_seconds": p.max_age_seconds,
                      "data_keys_across_bundles": "auto" if p.across_bundles is None else str(p.across_bundles).lower()}  # fmt: skip
            if isinstance(f, FieldFormat):
                shown["encrypt_none"] = f.encrypt_none
        if f.vault is not None:
            shown["key_vault"] = f.vault.uri
        if self._ttl is not None:
            shown["key_cache_ttl"] = self._ttl
        if self._required:
            shown["require_keys"] = ",".join(self._required)
        return shown


class EncryptFields(_Records):
    """Encrypt chosen fields (dotted paths) of dict records or Beam Rows.

    Args:
        key: the key URI, e.g. ``"local:alias/pii"`` (create a local alias first with
            ``create_local_keys``).
        fields: paths such as ``["ssn", "contact.email"]``.
        context: encryption context (flat str map); give the same one to ``DecryptFields``.
        bind: cleartext fields identifying the record, bound into each value's AAD.
        encoding: ``"text"`` (URL-safe base64, for JSON/CSV) or ``"bytes"`` (binary sinks).
        policy: ``DataKeyPolicy`` caps (default one data key per bundle, 1M records, 1 GiB,
            5 minutes).
        encrypt_none: encrypt ``None`` too (by default ``None`` stays ``None``).
        kms_qps: remote KMS calls per second allowed to each worker process (``None``: no
            limit); see the module caveats. The same argument exists on every transform here.
        data_key_max_age: seconds a data key may be used (replaces ``policy.max_age_seconds``;
            default 300): the encrypt side's revocation latency. Decrypting transforms take
            ``key_cache_ttl`` (default 60 s) instead.
        key_vault: a key vault prefix (``oss://bucket/_keys/``, a local directory...): write
            field values v2, which name their data key by its id; the wrapped data keys go to
            the vault, each before any value under it is emitted (``docs/FORMAT.md``, "Key
            vault v1"). The same argument on ``DecryptFields`` reads them (v1 values need none).
            Back the vault up: its loss is the data's loss.
    """

    def __init__(
        self,
        key: str,
        fields: Iterable[str] | str,
        *,
        context: Mapping[str, str] | None = None,
        bind: Iterable[str] | str = (),
        encoding: Encoding = "text",
        policy: DataKeyPolicy | None = None,
        encrypt_none: bool = False,
        label: str | None = None,
        kms_qps: float | None = None,
        data_key_max_age: float | None = None,
        key_vault: str | None = None,
    ) -> None:
        fmt = FieldFormat(fields, bind=bind, encoding=choice(encoding, ENCODINGS, "encoding"),
                          encrypt_none=encrypt_none, vault=vault_of(key_vault))  # fmt: skip
        super().__init__(key, fmt, context, label, kms_qps, policy=policy_with_age(policy, data_key_max_age))


class DecryptFields(_Records):
    """Decrypt fields written by ``EncryptFields`` (same key, fields, context and bind).

    ``key_cache_ttl``: seconds an unwrapped data key is reused in a worker process (default 60):
    the decrypt side's revocation latency (see the module caveats). ``require_keys``: strict
    mode (``kmsbeam.keys.strict``).
    """

    def __init__(
        self,
        key: str,
        fields: Iterable[str] | str,
        *,
        context: Mapping[str, str] | None = None,
        bind: Iterable[str] | str = (),
        label: str | None = None,
        kms_qps: float | None = None,
        require_keys: Iterable[str] = (),
        key_cache_ttl: float | None = None,
        key_vault: str | None = None,
    ) -> None:
        super().__init__(key, FieldFormat(fields, bind=bind, vault=vault_of(key_vault)), context, label, kms_qps,
                         ttl=cache_ttl(key_cache_ttl), required=required_keys(require_keys))  # fmt: skip


class EncryptRecords(_Records):
    """Encrypt each whole record into one value, keeping chosen top-level fields in clear.

    The output record is ``{kept fields..., payload_field: encrypted record}``.
    ``encoding``, ``data_key_max_age``, ``key_vault`` (records v2): as for ``EncryptFields``.
    """

    def __init__(
        self,
        key: str,
        *,
        keep: Iterable[str] | str = (),
        payload_field: str = DEFAULT_PAYLOAD_FIELD,
        context: Mapping[str, str] | None = None,
        encoding: Encoding = "text",
        policy: DataKeyPolicy | None = None,
        label: str | None = None,
        kms_qps: float | None = None,
        data_key_max_age: float | None = None,
        key_vault: str | None = None,
    ) -> None:
        fmt = RecordFormat(keep=keep, payload_field=payload_field, encoding=choice(encoding, ENCODINGS, "encoding"),
                           vault=vault_of(key_vault))  # fmt: skip
        super().__init__(key, fmt, context, label, kms_qps, policy=policy_with_age(policy, data_key_max_age))


class DecryptRecords(_Records):
    """Decrypt records written by ``EncryptRecords`` (same key, keep, payload field and
    context). ``key_cache_ttl``, ``require_keys``, ``key_vault``: as for ``DecryptFields``."""

    def __init__(
        self,
        key: str,
        *,
        keep: Iterable[str] | str = (),
        payload_field: str = DEFAULT_PAYLOAD_FIELD,
        context: Mapping[str, str] | None = None,
        label: str | None = None,
        kms_qps: float | None = None,
        require_keys: Iterable[str] = (),
        key_cache_ttl: float | None = None,
        key_vault: str | None = None,
    ) -> None:
        super().__init__(key, RecordFormat(keep=keep, payload_field=payload_field, vault=vault_of(key_vault)),
                         context, label, kms_qps,
                         ttl=cache_ttl(key_cache_ttl), required=required_keys(require_keys))  # fmt: skip
