"""Field-level encryption of dict records (no Beam): the engine under EncryptFields/DecryptFields.

A ``FieldEncryptor`` replaces the value at each field path with an encrypted field value
(envelope format 0x01, see ``kmsbeam.formats.envelope``); a ``FieldDecryptor`` puts the original
value back, with its type. ``None`` stays ``None`` (not encrypted) unless ``encrypt_none``.

Record identity: values may be bound to the record through ``bind`` fields (cleartext fields
such as a customer id). Their values enter the AAD, so an encrypted value copied into another
record fails to decrypt. Both sides must name the same ``bind`` fields.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kmsbeam.formats._binding import MISSING as _MISSING
from kmsbeam.formats._binding import (
    binding_for,
    check_paths,
    column_of,
    copies,
    encoded,
    is_text,
    plan_of,
    without_none,
)
from kmsbeam.formats.base import outcomes
from kmsbeam.formats._keys import Sealing
from kmsbeam.formats._lanes import Lanes
from kmsbeam.formats.codec import STR_TAG
from kmsbeam.formats.envelope import FIELD_V1
from kmsbeam.errors import KmsBeamError, RecordError
from kmsbeam.formats.field_decryptor import FieldDecryptor
from kmsbeam.keys.source import KeySource
from kmsbeam.formats.paths import FieldPath, Paths
from kmsbeam.keys.policy import DataKeyPolicy
from kmsbeam.vault import KeyVault

__all__ = ["FieldDecryptor", "FieldEncryptor", "binding_for"]  # FieldDecryptor: re-exported

_STR_CHAR = STR_TAG.decode("ascii")


class FieldEncryptor:
    """Encrypts chosen fields of dict records. One per worker thread; not thread-safe.

    Args:
        fields: dotted paths to encrypt (list, or one comma-separated string).
        source: the key source (``kmsbeam.keys.registry.open_key_source(uri)``).
        context: the encryption context for the data keys (must be given again to decrypt).
        bind: cleartext fields that identify the record; bound into every value's AAD.
        encoding: "text" (URL-safe base64 str, for JSON/CSV) or "bytes" (binary sinks).
        policy: the data-key policy.
        encrypt_none: encrypt ``None`` values too (by default they stay ``None``).
        on_generate: called after each GenerateDataKey (metrics).
        vault: a key vault (``kmsbeam.vault.KeyVault``): write field values v2, each data key
            in the vault (written before any value under it); None: field values v1.
    """

    def __init__(
        self,
        fields: Paths,
        source: KeySource,
        *,
        context: Mapping[str, str] | None = None,
        bind: Paths = (),
        encoding: str = "text",
        policy: DataKeyPolicy | None = None,
        encrypt_none: bool = False,
        clock: Callable[[], float] = time.monotonic,
        on_generate: Callable[[], None] | None = None,
        vault: KeyVault | None = None,
    ) -> None:
        self.fields, self.bind = check_paths(fields, bind)
        self._text = is_text(encoding)
        self._sealing = Sealing(source, FIELD_V1, context, policy, clock=clock, on_generate=on_generate,
                                vault=vault)  # fmt: skip
        self.keys = self._sealing.keys
        self._encrypt_none = encrypt_none
        # (name, None) for top-level fields, (name, path) for nested ones
        self._plan = plan_of(self.fields)
        self._lanes: dict[str, Lanes] = {}  # per field: its plaintexts in one reusable buffer
        self.values = 0

    def reset(self) -> None:
        """A bundle boundary: the next record gets a fresh data key (or, with
        ``DataKeyPolicy(across_bundles=True)``, one this process kept)."""
        self._sealing.reset()

    def encrypt(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Return a copy of ``record`` with the fields encrypted.

        Raises:
            RecordError: a field is missing or holds a type with no encoding.
            KeySourceError: no data key could be generated.
        """
        out = record.copy() if type(record) is dict else dict(record)
        names: list[str] = []
        plains: list[bytes] = []
        nested: list[FieldPath] = []
        for name, path in self._plan:
            if path is None:  # a top-level field: the common case, without FieldPath.get
                value = out.get(name, _MISSING)
                if value is _MISSING:
                    raise RecordError(f"missing field: {name}")
            else:
                value = path.get(out)
            if value is None and not self._encrypt_none:
                continue
            if type(value) is str:
                try:
                    plains.append(STR_TAG + value.encode("utf-8"))
                except UnicodeEncodeError:  # a lone surrogate: the codec's error, per record
                    plains.append(encoded(value, name))
            else:
                plains.append(encoded(value, name))
            names.append(name)
            if path is not None:
                nested.append(path)
        binding = binding_for(record, self.bind) if self.bind else b""
        if not names:
            return out
        sealer = self._sealing.sealer(len(names), 1, sum(map(len, plains)))
        if self._text:
            sealed: list[Any] = sealer.seal_many_text(names, plains, binding)
        else:
            sealed = sealer.seal_many(names, plains, binding)
        if nested:
            by_name = dict(zip(names, sealed))
            for path in nested:
                path.set(out, by_name.pop(path.name))
            out.update(by_name)
        else:
            out.update(zip(names, sealed))
        self.values += len(names)
        return out


    def encrypt_batch(self, records: Sequence[Mapping[str, Any]]) -> list[Any]:
        """``encrypt`` for many records at once, field by field: the same output, faster.

        Returns one entry per record, in order: the encrypted copy, or the ``KmsBeamError``
        that ``encrypt`` would have raised for it (a batch never fails as a whole).
        """
        try:
            return self._encrypt_all(records)
        except KmsBeamError:  # some record is bad, or no data key: record by record
            return outcomes(self.encrypt, records)

    def _encrypt_all(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Checks everything before sealing anything; then seals field by field, in runs of
        records under one data key each (``Sealing.runs``)."""
        outs, bindings = copies(records, self.bind)
        columns: list[tuple[str, FieldPath | None, list[int] | None, Sequence[bytes | memoryview]]] = []
        try:
            for name, path in self._plan:
                values = column_of(outs, name, path)
                rows: list[int] | None = None
                if self._encrypt_none:
                    kinds = set(map(type, values))
                else:
                    rows, values, kinds = without_none(values)
                columns.append((name, path, rows, self._plaintexts(name, values, kinds)))
            runs = self._sealing.runs(len(outs), [c[2] for c in columns], [c[3] for c in columns])
            for sealer, start, stop, spans in runs:
                seal = sealer.seal_column_text if self._text else sealer.seal_column
                for (name, path, rows, plains), (a, b) in zip(columns, spans):
                    if rows is None:
                        targets = outs[start:stop]
                        binds = None if bindings is None else bindings[start:stop]
                    else:
                        targets = [outs[j] for j in rows[a:b]]
                        binds = None if bindings is None else [bindings[j] for j in rows[a:b]]
                    sealed = seal(name, plains[a:b], binds)
                    if path is None:
                        for out, value in zip(targets, sealed):
                            out[name] = value
                    else:
                        for out, value in zip(targets, sealed):
                            path.set(out, value)
                    self.values += b - a
        finally:
            for lanes in self._lanes.values():
                lanes.clear()  # no plaintext stays behind in a scratch buffer
        return outs

    def _plaintexts(
        self, name: str, values: list[Any], kinds: set[type]
    ) -> Sequence[bytes | memoryview]:
        """The codec encodings of one column's values. A column of ASCII strings of one length
        (the common case) is encoded in one call into this field's reusable ``Lanes``.

        Raises:
            RecordError: a value has no encoding (the caller then goes record by record).
        """
        try:
            if kinds <= {str}:
                if values and len(set(map(len, values))) == 1:
                    joint = _STR_CHAR + _STR_CHAR.join(values)
                    if joint.isascii():
                        width = len(values[0]) + 1
                        lanes = self._lanes.get(name)
                        if lanes is None or lanes.k != len(values) or lanes.width != width:
                            lanes = self._lanes[name] = Lanes(len(values), width)
                        return lanes.fill(joint.encode("ascii"))
                return [STR_TAG + v.encode("utf-8") for v in values]
            return [encoded(v, name) for v in values]
        except UnicodeEncodeError:  # a lone surrogate: record by record, to say which
            raise RecordError("invalid text") from None
