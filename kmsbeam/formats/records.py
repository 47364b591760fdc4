"""Whole-record encryption of dict records (no Beam): the engine under EncryptRecords.

A record becomes ``{kept fields..., payload_field: <encrypted record value>}`` (envelope
format 0x02). The payload is the codec encoding of the whole record in its original key
order, with kept fields replaced by the KEPT marker (tag 0x0C), so decryption restores the
record exactly, order included. The kept fields stay in cleartext for joins and partitioning
and are bound into the AAD: changing one, or moving the payload to another record with other
kept values, makes decryption fail.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kmsbeam.formats._binding import binding_for, is_text, kept_names
from kmsbeam.formats._keys import Sealing, Unwrapping
from kmsbeam.keys.cache import DataKeyCache
from kmsbeam.formats.codec import KEPT, CodecError, decode_value, encode_value
from kmsbeam.formats.envelope import RECORD_V1
from kmsbeam.errors import AuthenticationError, KmsBeamError, RecordError
from kmsbeam.formats.paths import FieldPath
from kmsbeam.keys.source import KeySource
from kmsbeam.keys.policy import DataKeyPolicy
from kmsbeam.vault import KeyVault

__all__ = ["DEFAULT_PAYLOAD_FIELD", "RecordDecryptor", "RecordEncryptor"]

DEFAULT_PAYLOAD_FIELD = "kmsbeam_record"


class _Config:
    def __init__(self, keep: Iterable[str] | str, payload_field: str) -> None:
        self.keep = kept_names(keep, payload_field)
        self.payload_field = payload_field
        self._kept = tuple(FieldPath(k) for k in self.keep)

    def _binding(self, record: Mapping[str, Any]) -> bytes:
        return binding_for(record, self._kept, "kept fields")


class RecordEncryptor(_Config):
    """Encrypts whole records. One per worker thread; not thread-safe.

    Args:
        source: the key source.
        keep: top-level fields left in cleartext (and bound into the AAD).
        payload_field: the name of the field that holds the encrypted record.
        context, encoding, policy, clock, on_generate, vault: as for ``FieldEncryptor``
            (with a vault: records v2).
    """

    def __init__(
        self,
        source: KeySource,
        *,
        keep: Iterable[str] | str = (),
        payload_field: str = DEFAULT_PAYLOAD_FIELD,
        context: Mapping[str, str] | None = None,
        encoding: str = "text",
        policy: DataKeyPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        on_generate: Callable[[], None] | None = None,
        vault: KeyVault | None = None,
    ) -> None:
        super().__init__(keep, payload_field)
        self._text = is_text(encoding)
        self._sealing = Sealing(source, RECORD_V1, context, policy, clock=clock, on_generate=on_generate,
                                vault=vault)  # fmt: skip
        self.keys = self._sealing.keys
        self.values = 0

    def reset(self) -> None:
        """A bundle boundary: the next record gets a fresh data key (or, with
        ``DataKeyPolicy(across_bundles=True)``, one this process kept)."""
        self._sealing.reset()

    def encrypt(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``{kept fields..., payload_field: encrypted}``.

        Raises:
            RecordError: a kept field is missing, a value has no encoding or breaks a codec
                limit, or the record already has a field named like the payload field.
        """
        if self.payload_field in record:
            raise RecordError(f"record already has a field named {self.payload_field}")
        binding = self._binding(record)
        keep = self.keep
        payload = {k: (KEPT if k in keep else v) for k, v in record.items()}
        if any(v is KEPT for k, v in payload.items() if k not in keep):
            raise RecordError("wrong type: values of type _Kept cannot be encrypted")
        try:
            plaintext = encode_value(payload, kept=True)
        except TypeError as exc:
            raise RecordError(f"wrong type: {exc}") from None
        except CodecError as exc:
            raise exc.for_field(self.payload_field) from None
        sealer = self._sealing.sealer(1, 1, len(plaintext))
        seal = sealer.seal_text if self._text else sealer.seal
        out = {k: v for k, v in record.items() if k in keep}
        out[self.payload_field] = seal(plaintext, self.payload_field, binding)
        self.values += 1
        return out


class RecordDecryptor(_Config):
    """Decrypts records written by ``RecordEncryptor`` (same ``keep`` and payload field;
    ``vault``: the key vault of records v2, which v1 records need none of)."""

    def __init__(
        self,
        source: KeySource,
        *,
        keep: Iterable[str] | str = (),
        payload_field: str = DEFAULT_PAYLOAD_FIELD,
        context: Mapping[str, str] | None = None,
        cache: DataKeyCache | None = None,
        on_call: Callable[[], None] | None = None,
        vault: KeyVault | None = None,
    ) -> None:
        super().__init__(keep, payload_field)
        self._keys = Unwrapping(source, context, cache, on_call, vault)
        self.values = 0

    def decrypt(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return the original record, in its original field order.

        Raises:
            RecordError: the payload field or a kept field is missing, or the payload
                authenticated but breaks the value codec's limits or rules.
            AuthenticationError: tampered, moved, wrong key, context or kept values.
        """
        if self.payload_field not in record:
            raise RecordError(f"missing field: {self.payload_field}")
        binding = self._binding(record)
        try:
            opener, body = self._keys.opener(record[self.payload_field], RECORD_V1)
            payload = decode_value(opener.open(body, self.payload_field, binding), kept=True)
        except CodecError as exc:  # authentic, but not a record: this record's failure
            raise exc.for_field(self.payload_field) from None
        except KmsBeamError as exc:
            exc.field = self.payload_field
            raise
        if not isinstance(payload, dict):
            raise AuthenticationError()
        kept = {k for k, v in payload.items() if v is KEPT}
        if kept != set(self.keep):
            raise AuthenticationError()
        self.values += 1
        return {k: (record[k] if v is KEPT else v) for k, v in payload.items()}
