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

from kmsbeam.keys.cache import DataKeyCache, shared_cache
from kmsbeam.formats.codec import KEPT, CodecError, decode_value, encode_value
from kmsbeam.formats.envelope import RECORD_V1, open_value, parse
from kmsbeam.errors import AuthenticationError, ConfigurationError, KmsBeamError, RecordError
from kmsbeam.keys.source import KeySource, canonical_context, check_context
from kmsbeam.keys.policy import DataKeyPolicy, DataKeys

__all__ = ["DEFAULT_PAYLOAD_FIELD", "RecordDecryptor", "RecordEncryptor"]

DEFAULT_PAYLOAD_FIELD = "kmsbeam_record"


def _names(keep: Iterable[str] | str) -> tuple[str, ...]:
    if isinstance(keep, str):
        keep = [k.strip() for k in keep.split(",") if k.strip()]
    names = tuple(keep)
    for n in names:
        if not isinstance(n, str) or not n or "." in n:
            raise ConfigurationError(f"kept fields are top-level field names, not {n!r}")
    if len(set(names)) != len(names):
        raise ConfigurationError("a kept field is named twice")
    return names


def _binding(record: Mapping[str, Any], keep: tuple[str, ...]) -> bytes:
    if not keep:
        return b""
    try:
        return encode_value({k: record[k] for k in sorted(keep)})
    except KeyError as exc:
        raise RecordError(f"missing field: {exc.args[0]}") from exc
    except TypeError as exc:
        raise RecordError(f"wrong type: a kept field holds a type with no encoding ({exc})") from None
    except CodecError as exc:
        raise RecordError(f"{exc.kind} (kept fields): {exc.rule}") from None


class _Config:
    def __init__(self, keep: Iterable[str] | str, payload_field: str) -> None:
        self.keep = _names(keep)
        if not payload_field or not isinstance(payload_field, str):
            raise ConfigurationError("payload_field must be a non-empty field name")
        if payload_field in self.keep:
            raise ConfigurationError("the payload field cannot also be a kept field")
        self.payload_field = payload_field


class RecordEncryptor(_Config):
    """Encrypts whole records. One per worker thread; not thread-safe.

    Args:
        source: the key source.
        keep: top-level fields left in cleartext (and bound into the AAD).
        payload_field: the name of the field that holds the encrypted record.
        context, encoding, policy, clock, on_generate: as for ``FieldEncryptor``.
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
    ) -> None:
        super().__init__(keep, payload_field)
        if encoding not in ("text", "bytes"):
            raise ConfigurationError(f"encoding must be 'text' or 'bytes', not {encoding!r}")
        self._text = encoding == "text"
        self.keys = DataKeys(source, RECORD_V1, context, policy, clock=clock, on_generate=on_generate)
        self.values = 0

    def reset(self) -> None:
        self.keys.reset()

    def encrypt(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return ``{kept fields..., payload_field: encrypted}``.

        Raises:
            RecordError: a kept field is missing, a value has no encoding or breaks a codec
                limit, or the record already has a field named like the payload field.
        """
        if self.payload_field in record:
            raise RecordError(f"record already has a field named {self.payload_field}")
        binding = _binding(record, self.keep)
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
        sealer = self.keys.sealer(1)
        seal = sealer.seal_text if self._text else sealer.seal
        out = {k: v for k, v in record.items() if k in keep}
        out[self.payload_field] = seal(plaintext, self.payload_field, binding)
        self.keys.bytes += len(plaintext)
        self.values += 1
        return out


class RecordDecryptor(_Config):
    """Decrypts records written by ``RecordEncryptor`` (same ``keep`` and payload field)."""

    def __init__(
        self,
        source: KeySource,
        *,
        keep: Iterable[str] | str = (),
        payload_field: str = DEFAULT_PAYLOAD_FIELD,
        context: Mapping[str, str] | None = None,
        cache: DataKeyCache | None = None,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(keep, payload_field)
        self._source = source
        self._context = check_context(context)
        self._context_key = canonical_context(self._context)
        self._cache = cache if cache is not None else shared_cache()
        self._on_call = on_call
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
        binding = _binding(record, self.keep)
        try:
            parsed = parse(record[self.payload_field], RECORD_V1)
            key = self._cache.cipher(
                self._source, parsed.wrapped, self._context,
                context_key=self._context_key, on_call=self._on_call,
            )  # fmt: skip
            payload = decode_value(open_value(parsed, key, self.payload_field, binding), kept=True)
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
