"""Re-encryption transforms: decrypt then encrypt again under new data keys (``ReencryptFields``,
``ReencryptRecords``), for when a data key itself may be compromised.

They hold plaintext in worker memory between the two steps. Their dead letters never carry it:
a record that fails to encrypt again goes to the dead-letter output with its encrypted fields
set to ``None`` (run it again from the input). Rewrapping data keys instead (no plaintext) is
``RewrapDataKeys`` (``_rotate``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import apache_beam as beam

from kmsbeam import DataKeyPolicy
from kmsbeam.formats.records import DEFAULT_PAYLOAD_FIELD
from kmsbeam.transforms._options import Encoding, names
from kmsbeam.transforms._rotate import _Lists
from kmsbeam.transforms._transforms import DecryptFields, DecryptRecords, EncryptFields, EncryptRecords

__all__ = ["ReencryptFields", "ReencryptRecords"]


def _scrub(letter: Mapping[str, Any], hide: tuple[str, ...], keep: tuple[str, ...] | None) -> dict[str, Any]:
    """An encrypt-stage dead letter without the plaintext of the re-encrypted fields (records:
    only the kept fields)."""
    record = dict(letter["record"])
    if keep is not None:
        return {**letter, "record": {k: record.get(k) for k in keep}}
    for name in hide:
        if "." in name:
            record.pop(name.split(".")[0], None)
        elif name in record:
            record[name] = None
    return {**letter, "record": record}


class _Reencrypt(_Lists):
    def __init__(self, decrypt: DecryptFields | DecryptRecords, encrypt: EncryptFields | EncryptRecords, hide: tuple[str, ...],
                 keep: tuple[str, ...] | None, label: str | None) -> None:  # fmt: skip
        super().__init__(label)
        self._decrypt, self._encrypt, self._hide, self._keep = decrypt, encrypt, hide, keep

    def _steps(self, pcoll: Any) -> tuple[Any, Any]:
        decrypt, encrypt = ((self._decrypt.batched(), self._encrypt.batched()) if self._lists
                            else (self._decrypt, self._encrypt))  # fmt: skip
        plain, dead1 = pcoll | "Decrypt" >> decrypt.with_dead_letters()
        good, dead2 = plain | "Encrypt" >> encrypt.with_dead_letters()
        dead2 = dead2 | "Scrub" >> beam.Map(_scrub, self._hide, self._keep)
        return good, (dead1, dead2) | "DeadLetters" >> beam.Flatten()

    def _shown(self) -> dict[str, Any]:
        return {"from_" + k: v for k, v in self._decrypt.display_data().items()} | {
            "to_" + k: v for k, v in self._encrypt.display_data().items()}  # fmt: skip


class ReencryptFields(_Reencrypt):
    """``DecryptFields`` under ``from_key`` then ``EncryptFields`` under ``to_key``: new data
    keys, new ciphertexts (for a data key suspected compromised). Same options as those
    (``key_cache_ttl`` for the decrypt, ``data_key_max_age`` for the encrypt)."""

    def __init__(
        self,
        from_key: str,
        to_key: str,
        fields: Iterable[str] | str,
        *,
        context: Mapping[str, str] | None = None,
        new_context: Mapping[str, str] | None = None,
        bind: Iterable[str] | str = (),
        encoding: Encoding = "text",
        policy: DataKeyPolicy | None = None,
        kms_qps: float | None = None,
        label: str | None = None,
        require_keys: Iterable[str] = (),
        key_cache_ttl: float | None = None,
        data_key_max_age: float | None = None,
    ) -> None:
        paths = names(fields)
        ctx = context if new_context is None else new_context
        super().__init__(
            DecryptFields(from_key, paths, context=context, bind=bind, kms_qps=kms_qps,
                          require_keys=require_keys, key_cache_ttl=key_cache_ttl),
            EncryptFields(to_key, paths, context=ctx, bind=bind, encoding=encoding, policy=policy,
                          kms_qps=kms_qps, data_key_max_age=data_key_max_age),
            paths, None, label,
        )  # fmt: skip


class ReencryptRecords(_Reencrypt):
    """``DecryptRecords`` under ``from_key`` then ``EncryptRecords`` under ``to_key``."""

    def __init__(
        self,
        from_key: str,
        to_key: str,
        *,
        keep: Iterable[str] | str = (),
        payload_field: str = DEFAULT_PAYLOAD_FIELD,
        context: Mapping[str, str] | None = None,
        new_context: Mapping[str, str] | None = None,
        encoding: Encoding = "text",
        policy: DataKeyPolicy | None = None,
        kms_qps: float | None = None,
        label: str | None = None,
        require_keys: Iterable[str] = (),
        key_cache_ttl: float | None = None,
        data_key_max_age: float | None = None,
    ) -> None:
        ctx = context if new_context is None else new_context
        dec = DecryptRecords(from_key, keep=keep, payload_field=payload_field, context=context,
                             kms_qps=kms_qps, require_keys=require_keys,
                             key_cache_ttl=key_cache_ttl)  # fmt: skip
        enc = EncryptRecords(to_key, keep=keep, payload_field=payload_field, context=ctx,
                             encoding=encoding, policy=policy, kms_qps=kms_qps,
                             data_key_max_age=data_key_max_age)  # fmt: skip
        super().__init__(dec, enc, (), names(keep), label)
