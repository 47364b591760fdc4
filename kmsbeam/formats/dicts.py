"""The two formats of dict records: ``FieldFormat`` (field values v1 at chosen paths) and
``RecordFormat`` (the whole record as one record v1 payload), as ``kmsbeam.formats.base.Format``.

Both are picklable configurations over their engines (``kmsbeam.formats.fields``,
``kmsbeam.formats.records``); their ``rewrap`` and ``inspect`` read value headers only
(``kmsbeam.formats.values``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from kmsbeam.errors import KmsBeamError
from kmsbeam.formats._binding import check_paths, is_text, kept_names
from kmsbeam.formats.values import rewrap_paths, value_use
from kmsbeam.formats.base import Context, Engines, Hook, KeyRewrap, KeyUse, merge_uses
from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1
from kmsbeam.formats.fields import FieldDecryptor, FieldEncryptor
from kmsbeam.formats.paths import FieldPath, Paths
from kmsbeam.formats.records import DEFAULT_PAYLOAD_FIELD, RecordDecryptor, RecordEncryptor
from kmsbeam.keys.cache import DataKeyCache
from kmsbeam.keys.policy import DataKeyPolicy
from kmsbeam.keys.source import KeySource
from kmsbeam.vault import KeyVault

__all__ = ["FieldFormat", "RecordFormat"]


def _uses(record: Mapping[str, Any], paths: Iterable[FieldPath], fmt: int) -> list[KeyUse]:
    uses = []
    for path in paths:
        value = path.get(record)
        if value is not None:
            try:
                uses.append(value_use(value, fmt, path.name))
            except KmsBeamError as exc:
                exc.field = path.name
                raise
    return merge_uses(uses)


@dataclass(frozen=True)
class FieldFormat(Engines[FieldEncryptor, FieldDecryptor]):
    """Field values v1 at chosen paths of dict records (``docs/FORMAT.md``, "Field value v1").

    Args:
        fields: dotted paths of the encrypted values (list, or one comma-separated string).
        bind: cleartext fields identifying the record, bound into every value's AAD.
        encoding: "text" (URL-safe base64 str) or "bytes" (what the encryptor writes; the
            decryptor and ``rewrap`` take both).
        encrypt_none: encrypt ``None`` values too.
        vault: a key vault (``kmsbeam.vault.KeyVault``): the encryptor writes field values v2
            (``docs/FORMAT.md``, "Field value v2"), its data keys in the vault; the decryptor
            reads v2 values from it (and v1 values as always).

    Raises (construction):
        ConfigurationError: no field, overlapping paths, a bind field also encrypted, or an
            unknown encoding.
    """

    fields: tuple[FieldPath, ...]
    bind: tuple[FieldPath, ...] = ()
    encoding: str = "text"
    encrypt_none: bool = False
    vault: KeyVault | None = None
    name: ClassVar[str] = "fields"
    section: ClassVar[str] = "Field value v1 (format byte 0x01)"

    def __init__(
        self,
        fields: Paths,
        *,
        bind: Paths = (),
        encoding: str = "text",
        encrypt_none: bool = False,
        vault: KeyVault | None = None,
    ) -> None:
        paths, bound = check_paths(fields, bind)
        is_text(encoding)
        set_ = object.__setattr__
        set_(self, "fields", paths)
        set_(self, "bind", bound)
        set_(self, "encoding", encoding)
        set_(self, "encrypt_none", encrypt_none)
        set_(self, "vault", vault)

    def _encryptor(self, source: KeySource, context: Context, policy: DataKeyPolicy | None,
                   on_generate: Hook) -> FieldEncryptor:
        return FieldEncryptor(self.fields, source, context=context, bind=self.bind,
                              encoding=self.encoding, policy=policy, encrypt_none=self.encrypt_none,
                              on_generate=on_generate, vault=self.vault)  # fmt: skip

    def _decryptor(self, source: KeySource, context: Context, cache: DataKeyCache | None,
                   on_call: Hook) -> FieldDecryptor:
        return FieldDecryptor(self.fields, source, context=context, bind=self.bind, cache=cache,
                              on_call=on_call, vault=self.vault)  # fmt: skip

    def rewrap(self, data: Mapping[str, Any], rewrap: KeyRewrap) -> dict[str, Any]:
        """A copy of the record with each value's header rewrapped (``None`` kept).

        Raises:
            RecordError: a field is missing. Otherwise as ``KeyRewrap.rewrap_key``, with
                ``error.field`` set.
        """
        return rewrap_paths(data, self.fields, FIELD_V1, rewrap)

    def inspect(self, data: Mapping[str, Any]) -> list[KeyUse]:
        """The data key of each encrypted field (``where``: the field path)."""
        return _uses(data, self.fields, FIELD_V1)


@dataclass(frozen=True)
class RecordFormat(Engines[RecordEncryptor, RecordDecryptor]):
    """Whole records as one record v1 payload (``docs/FORMAT.md``, "Record v1").

    Args:
        keep: top-level fields left in cleartext (and bound into the AAD).
        payload_field: the field that holds the encrypted record.
        encoding: "text" or "bytes", as for ``FieldFormat``.
        vault: a key vault: records v2 (``docs/FORMAT.md``, "Record v2"), as for ``FieldFormat``.
    """

    keep: tuple[str, ...] = ()
    payload_field: str = DEFAULT_PAYLOAD_FIELD
    encoding: str = "text"
    vault: KeyVault | None = None
    name: ClassVar[str] = "record"
    section: ClassVar[str] = "Record v1 (format byte 0x02)"

    def __init__(
        self,
        *,
        keep: Iterable[str] | str = (),
        payload_field: str = DEFAULT_PAYLOAD_FIELD,
        encoding: str = "text",
        vault: KeyVault | None = None,
    ) -> None:
        is_text(encoding)
        set_ = object.__setattr__
        set_(self, "keep", kept_names(keep, payload_field))
        set_(self, "payload_field", payload_field)
        set_(self, "encoding", encoding)
        set_(self, "vault", vault)

    def _encryptor(self, source: KeySource, context: Context, policy: DataKeyPolicy | None,
                   on_generate: Hook) -> RecordEncryptor:
        return RecordEncryptor(source, keep=self.keep, payload_field=self.payload_field, context=context,
                               encoding=self.encoding, policy=policy, on_generate=on_generate,
                               vault=self.vault)  # fmt: skip

    def _decryptor(self, source: KeySource, context: Context, cache: DataKeyCache | None,
                   on_call: Hook) -> RecordDecryptor:
        return RecordDecryptor(source, keep=self.keep, payload_field=self.payload_field, context=context,
                               cache=cache, on_call=on_call, vault=self.vault)  # fmt: skip

    def rewrap(self, data: Mapping[str, Any], rewrap: KeyRewrap) -> dict[str, Any]:
        """A copy of the record with its payload's header rewrapped.

        Raises:
            RecordError: no payload field. Otherwise as ``KeyRewrap.rewrap_key``.
        """
        return rewrap_paths(data, (FieldPath(self.payload_field),), RECORD_V1, rewrap)

    def inspect(self, data: Mapping[str, Any]) -> list[KeyUse]:
        """The data key of the payload (``where``: the payload field)."""
        return _uses(data, (FieldPath(self.payload_field),), RECORD_V1)
