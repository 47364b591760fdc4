"""Field-level encryption of dict records (no Beam): the engine under EncryptFields/DecryptFields.

A ``FieldEncryptor`` replaces the value at each field path with an encrypted field value
(envelope format 0x01, see ``kmsbeam.envelope``); a ``FieldDecryptor`` puts the original
value back, with its type. ``None`` stays ``None`` (not encrypted) unless ``encrypt_none``.

Record identity: values may be bound to the record through ``bind`` fields (cleartext fields
such as a customer id). Their values enter the AAD, so an encrypted value copied into another
record fails to decrypt. Both sides must name the same ``bind`` fields.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from kmsbeam.cache import DataKeyCache, shared_cache
from kmsbeam.codec import decode_value, encode_value
from kmsbeam.envelope import FIELD_V1, open_value, parse
from kmsbeam.errors import ConfigurationError, KmsBeamError, RecordError
from kmsbeam.keysource import KeySource, canonical_context, check_context
from kmsbeam.paths import FieldPath, parse_paths
from kmsbeam.policy import DataKeyPolicy, DataKeys

__all__ = ["FieldDecryptor", "FieldEncryptor", "binding_for"]

ENCODINGS = ("text", "bytes")


def binding_for(record: Mapping[str, Any], bind: tuple[FieldPath, ...]) -> bytes:
    """The record-identity bytes for the AAD: the codec encoding of the bound fields, sorted."""
    if not bind:
        return b""
    values = {p.name: p.get(record) for p in sorted(bind, key=lambda p: p.name)}
    try:
        return encode_value(values)
    except TypeError as exc:
        raise RecordError(f"wrong type: a bind field holds a type with no encoding ({exc})") from exc


def _check_bind(fields: tuple[FieldPath, ...], bind: tuple[FieldPath, ...]) -> None:
    for b in bind:
        for f in fields:
            if b.overlaps(f):
                raise ConfigurationError(f"bind field {b.name!r} cannot also be encrypted")


class FieldEncryptor:
    """Encrypts chosen fields of dict records. One per worker thread; not thread-safe.

    Args:
        fields: dotted paths to encrypt (list, or one comma-separated string).
        source: the key source (``kmsbeam.sources.open_key_source(uri)``).
        context: the encryption context for the data keys (must be given again to decrypt).
        bind: cleartext fields that identify the record; bound into every value's AAD.
        encoding: "text" (URL-safe base64 str, for JSON/CSV) or "bytes" (binary sinks).
        policy: the data-key policy.
        encrypt_none: encrypt ``None`` values too (by default they stay ``None``).
        on_generate: called after each GenerateDataKey (metrics).
    """

    def __init__(
        self,
        fields: Iterable[str] | str,
        source: KeySource,
        *,
        context: Mapping[str, str] | None = None,
        bind: Iterable[str] | str = (),
        encoding: str = "text",
        policy: DataKeyPolicy | None = None,
        encrypt_none: bool = False,
        clock: Callable[[], float] = time.monotonic,
        on_generate: Callable[[], None] | None = None,
    ) -> None:
        self.fields = parse_paths(fields)
        if not self.fields:
            raise ConfigurationError("name at least one field to encrypt")
        self.bind = parse_paths(bind, "bind fields")
        _check_bind(self.fields, self.bind)
        if encoding not in ENCODINGS:
            raise ConfigurationError(f"encoding must be one of {ENCODINGS}, not {encoding!r}")
        self.keys = DataKeys(
            source, FIELD_V1, context, policy, clock=clock, on_generate=on_generate
        )
        self._text = encoding == "text"
        self._encrypt_none = encrypt_none
        self.values = 0

    def reset(self) -> None:
        """Start a new bundle: the next record gets a fresh data key."""
        self.keys.reset()

    def encrypt(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return a copy of ``record`` with the fields encrypted.

        Raises:
            RecordError: a field is missing or holds a type with no encoding.
            KeySourceError: no data key could be generated.
        """
        todo: list[tuple[FieldPath, bytes]] = []
        for path in self.fields:
            value = path.get(record)
            if value is None and not self._encrypt_none:
                continue
            try:
                todo.append((path, encode_value(value)))
            except TypeError as exc:
                raise RecordError(f"wrong type: field {path.name}: {exc}") from exc
        binding = binding_for(record, self.bind)
        out = dict(record)
        if not todo:
            return out
        sealer = self.keys.sealer(len(todo))
        seal = sealer.seal_text if self._text else sealer.seal
        size = 0
        for path, plaintext in todo:
            size += len(plaintext)
            sealed = seal(plaintext, path.name, binding)
            if len(path.parts) == 1:
                out[path.name] = sealed
            else:
                path.set(out, sealed)
        self.keys.bytes += size
        self.values += len(todo)
        return out


class FieldDecryptor:
    """Decrypts fields written by ``FieldEncryptor``. Thread-safe when the cache is.

    Args:
        fields, context, bind: as given to the encryptor.
        source: a key source of the kind that wrapped the data keys.
        cache: the data-key cache (default: the process-wide one).
        on_call: called for each call made to the key source (metrics).
    """

    def __init__(
        self,
        fields: Iterable[str] | str,
        source: KeySource,
        *,
        context: Mapping[str, str] | None = None,
        bind: Iterable[str] | str = (),
        cache: DataKeyCache | None = None,
        on_call: Callable[[], None] | None = None,
    ) -> None:
        self.fields = parse_paths(fields)
        if not self.fields:
            raise ConfigurationError("name at least one field to decrypt")
        self.bind = parse_paths(bind, "bind fields")
        _check_bind(self.fields, self.bind)
        self._source = source
        self._context = check_context(context)
        self._context_key = canonical_context(self._context)
        self._cache = cache if cache is not None else shared_cache()
        self._on_call = on_call
        self.values = 0

    def decrypt_value(self, value: bytes | str, name: str, binding: bytes = b"") -> Any:
        """Decrypt one field value encrypted for field path ``name``.

        Raises:
            AuthenticationError: tampered, moved, wrong key or context (MalformedValueError:
                not a kmsbeam value at all).
            KeySourceError: the key source refused (disabled key, access denied, down).
        """
        parsed = parse(value, FIELD_V1)
        cipher = self._cache.cipher(
            self._source,
            parsed.wrapped,
            self._context,
            context_key=self._context_key,
            on_call=self._on_call,
        )
        return decode_value(open_value(parsed, cipher, name, binding))

    def decrypt(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return a copy of ``record`` with the fields decrypted (``None`` stays ``None``).

        Raises:
            RecordError: a field is missing. Otherwise as ``decrypt_value``; the failing field
                is in the exception's ``field`` attribute.
        """
        binding = binding_for(record, self.bind)
        out = dict(record)
        for path in self.fields:
            value = path.get(record)
            if value is None:
                continue
            try:
                plain = self.decrypt_value(value, path.name, binding)
            except KmsBeamError as exc:
                exc.field = path.name
                raise
            if len(path.parts) == 1:
                out[path.name] = plain
            else:
                path.set(out, plain)
            self.values += 1
        return out
