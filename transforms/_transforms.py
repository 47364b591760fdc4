"""The public Beam PTransforms: field-level and whole-record encryption and decryption.

Each transform validates its configuration at construction (a bad field path, key URI or
option fails before the pipeline runs), composes one ParDo in ``expand()``, and shows its
configuration in ``display_data()`` without secrets (key URIs never carry secrets; context
values are not shown).

Output: by default the transformed records; a bad element fails the pipeline with a reason
(nothing is dropped silently). ``.with_dead_letters()`` returns ``(records, dead_letters)``
instead, where each dead letter is ``{"transform", "reason", "record"}`` and
count in = records out + dead letters.

Caveats:
- Plaintext exists in worker memory while a record is processed, and the runner sees the
  input records (and, on the encrypt side, the dead letters) in cleartext.
- ``EncryptFields`` and ``DecryptFields`` hand records to the engine in batches of up to
  ``BATCH_SIZE`` (512):
  one call per batch instead of per record. A batch holds references to its records until it
  is processed; outputs keep their windows and timestamps.
- A retried bundle generates new data keys; values already emitted by the failed attempt
  are discarded by the runner, never mixed.
- A ``local:alias/`` key is created on first use when the pipeline is built (on the
  driver), never by workers.
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

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam

_LOG = logging.getLogger(__name__)

from dataclasses import replace

from kmsbeam import DataKeyPolicy, check_context, open_key_source, parse_key_uri, parse_paths
from kmsbeam.keys.cache import check_ttl
from kmsbeam.keys.budget import kms_budget
from kmsbeam.formats.records import DEFAULT_PAYLOAD_FIELD
from kmsbeam.keys.strict import KeyRequirement
from kmsbeam.transforms._dofns import DEAD_LETTER, BatchCryptoDoFn, CryptoDoFn

BATCH_SIZE = 512  # records per engine call in EncryptFields and DecryptFields

__all__ = ["DEAD_LETTER", "DecryptFields", "DecryptRecords", "EncryptFields", "EncryptRecords"]


class _Crypto(beam.PTransform):
    _op = ""

    def __init__(
        self,
        key: str,
        options: dict[str, Any],
        label: str | None = None,
        kms_qps: float | None = None,
    ) -> None:
        super().__init__(label)
        self._budget = kms_budget(kms_qps)
        if not isinstance(key, str):
            raise TypeError("key is a key URI string such as 'local:alias/pii'")
        parse_key_uri(key)
        if "context" in options:
            options["context"] = check_context(options["context"])
        self._key = key
        self._options = options
        self._dead_letters = False

    def with_dead_letters(self) -> _Crypto:
        """Return ``(records, dead_letters)`` from ``expand`` instead of failing on bad input."""
        self._dead_letters = True
        return self

    def expand(self, pcoll: Any) -> Any:
        if self._op.startswith("encrypt") and self._key.startswith("local:alias/"):
            # "Created on first use" happens here, once, at pipeline construction on the
            # driver; workers only ever open existing keys.
            source = open_key_source(self._key, create=True)
            if getattr(source, "created", False):
                _LOG.warning("kmsbeam: created key %s in the local keystore", self._key)
        args = (self._op, self._key, self._options, self.label, self._dead_letters)
        if self._op in ("encrypt_fields", "decrypt_fields"):
            # One engine call per batch of records: per-element overhead would cost more than
            # the encryption itself (see benchmarks/).
            pcoll = pcoll | "Batch" >> beam.BatchElements(
                min_batch_size=BATCH_SIZE, max_batch_size=BATCH_SIZE
            )
            dofn: CryptoDoFn = BatchCryptoDoFn(*args, kms_qps=self._budget)
        else:
            dofn = CryptoDoFn(*args, kms_qps=self._budget)
        outputs = pcoll | "Apply" >> beam.ParDo(dofn).with_outputs(DEAD_LETTER, main="records")
        if self._dead_letters:
            return outputs.records, outputs[DEAD_LETTER]
        return outputs.records

    def display_data(self) -> dict[str, Any]:
        shown: dict[str, Any] = {"key": self._key}
        if self._budget is not None:
            shown["kms_qps"] = self._budget.qps
            shown["kms_burst"] = self._budget.burst
        for name, value in self._options.items():
            if name == "context":
                shown["context_keys"] = ",".join(sorted(value))
            elif name == "cache_ttl":
                if value is not None:
                    shown["key_cache_ttl"] = value
            elif name == "policy" and value is not None:
                shown["max_records_per_key"] = value.max_records
                shown["max_bytes_per_key"] = value.max_bytes
                shown["max_key_age_seconds"] = value.max_age_seconds
            elif isinstance(value, (tuple, list)):
                shown[name] = ",".join(value)
            elif isinstance(value, (str, bool, int)):
                shown[name] = value
        return shown


def _names(value: Iterable[str] | str) -> tuple[str, ...]:
    return tuple(p.name for p in parse_paths(value)) if value else ()


def policy_with_age(policy: DataKeyPolicy | None, data_key_max_age: float | None) -> DataKeyPolicy:
    """``policy`` (default ``DataKeyPolicy()``) with ``max_age_seconds`` replaced when
    ``data_key_max_age`` is given (seconds; positive and finite)."""
    policy = policy or DataKeyPolicy()
    if data_key_max_age is None:
        return policy
    return replace(policy, max_age_seconds=check_ttl(data_key_max_age, "the data-key max age"))


def cache_ttl(key_cache_ttl: float | None) -> dict[str, float | None]:
    """The ``cache_ttl`` option of a decrypting DoFn (``None``: the default 60 s)."""
    return {"cache_ttl": None if key_cache_ttl is None else check_ttl(key_cache_ttl, "the key cache TTL")}


def _required(keys: Iterable[str]) -> dict[str, tuple[str, ...]]:
    """``require_keys=`` (strict mode, ``kmsbeam.keys.strict``): key URIs, checked here; values
    wrapped under any other master key become dead letters ("key not allowed")."""
    if isinstance(keys, str):
        keys = (keys,)
    return {"require_keys": KeyRequirement(keys).keys} if keys else {}


class EncryptFields(_Crypto):
    """Encrypt chosen fields (dotted paths) of dict records or Beam Rows.

    Args:
        fields: paths such as ``["ssn", "contact.email"]``.
        key: the key URI, e.g. ``"local:alias/pii"`` (a local alias is created on first use).
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
    """

    _op = "encrypt_fields"

    def __init__(
        self,
        fields: Iterable[str] | str,
        key: str,
        *,
        context: Mapping[str, str] | None = None,
        bind: Iterable[str] | str = (),
        encoding: str = "text",
        policy: DataKeyPolicy | None = None,
        encrypt_none: bool = False,
        label: str | None = None,
        kms_qps: float | None = None,
        data_key_max_age: float | None = None,
    ) -> None:
        names = _names(fields)
        if encoding not in ("text", "bytes"):
            raise ValueError("encoding must be 'text' or 'bytes'")
        super().__init__(
            key,
            {"fields": names, "context": context, "bind": _names(bind), "encoding": encoding,
             "policy": policy_with_age(policy, data_key_max_age), "encrypt_none": encrypt_none},
            label, kms_qps,
        )  # fmt: skip


class DecryptFields(_Crypto):
    """Decrypt fields written by ``EncryptFields`` (same fields, context and bind).

    ``key_cache_ttl``: seconds an unwrapped data key is reused in a worker process (default 60):
    the decrypt side's revocation latency (see the module caveats).
    """

    _op = "decrypt_fields"

    def __init__(
        self,
        fields: Iterable[str] | str,
        key: str,
        *,
        context: Mapping[str, str] | None = None,
        bind: Iterable[str] | str = (),
        label: str | None = None,
        kms_qps: float | None = None,
        require_keys: Iterable[str] = (),
        key_cache_ttl: float | None = None,
    ) -> None:
        super().__init__(
            key, {"fields": _names(fields), "context": context, "bind": _names(bind),
                  **_required(require_keys), **cache_ttl(key_cache_ttl)}, label,
            kms_qps,
        )  # fmt: skip


class EncryptRecords(_Crypto):
    """Encrypt each whole record into one value, keeping chosen top-level fields in clear.

    The output record is ``{kept fields..., payload_field: encrypted record}``.
    ``data_key_max_age``: as for ``EncryptFields``.
    """

    _op = "encrypt_records"

    def __init__(
        self,
        key: str,
        *,
        keep: Iterable[str] | str = (),
        payload_field: str = DEFAULT_PAYLOAD_FIELD,
        context: Mapping[str, str] | None = None,
        encoding: str = "text",
        policy: DataKeyPolicy | None = None,
        label: str | None = None,
        kms_qps: float | None = None,
        data_key_max_age: float | None = None,
    ) -> None:
        super().__init__(
            key,
            {"keep": _names(keep), "payload_field": payload_field, "context": context,
             "encoding": encoding, "policy": policy_with_age(policy, data_key_max_age)},
            label, kms_qps,
        )  # fmt: skip


class DecryptRecords(_Crypto):
    """Decrypt records written by ``EncryptRecords`` (same keep, payload field and context).
    ``key_cache_ttl``: as for ``DecryptFields``."""

    _op = "decrypt_records"

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
    ) -> None:
        super().__init__(
            key,
            {"keep": _names(keep), "payload_field": payload_field, "context": context,
             **_required(require_keys), **cache_ttl(key_cache_ttl)},  # fmt: skip
            label,
            kms_qps,
        )
