"""Field-level decryption of dict records (no Beam): the engine under DecryptFields.

The reader's side of ``kmsbeam.formats.fields``: puts each field's original value back, with its
type. Values of one data key share their header, so the decryptor matches headers against the
last data keys' ``Opener``s (``kmsbeam.formats._keys.Unwrapping.opener``) instead of parsing
and looking each value up again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import repeat
from operator import itemgetter
from typing import Any

from kmsbeam.formats._binding import (
    binding_for,
    check_paths,
    column_of,
    copies,
    plan_of,
    without_none,
)
from kmsbeam.formats.base import outcomes
from kmsbeam.formats._keys import Unwrapping
from kmsbeam.keys.cache import DataKeyCache
from kmsbeam.formats.codec import STR_TAG, CodecError, decode_value
from kmsbeam.formats.envelope import FIELD_V1, Opener, from_text_joint, from_text_many
from kmsbeam.formats.paths import Paths
from kmsbeam.errors import KmsBeamError, MalformedValueError
from kmsbeam.keys.source import KeySource
from kmsbeam.vault import KeyVault

__all__ = ["FieldDecryptor"]

_TEXT_ONLY = {STR_TAG[0]}  # the tags of a column holding only str values
_STR_CHAR = STR_TAG.decode("ascii")


class FieldDecryptor:
    """Decrypts fields written by ``FieldEncryptor``. Thread-safe when the cache is.

    Args:
        fields, context, bind: as given to the encryptor.
        source: a key source of the kind that wrapped the data keys.
        cache: the data-key cache (default: the process-wide one).
        on_call: called for each call made to the key source (metrics).
        vault: the key vault of field values v2 (v1 values need none).
    """

    def __init__(
        self,
        fields: Paths,
        source: KeySource,
        *,
        context: Mapping[str, str] | None = None,
        bind: Paths = (),
        cache: DataKeyCache | None = None,
        on_call: Callable[[], None] | None = None,
        vault: KeyVault | None = None,
    ) -> None:
        self.fields, self.bind = check_paths(fields, bind)
        self._keys = Unwrapping(source, context, cache, on_call, vault)
        self._plan = plan_of(self.fields)
        self.values = 0

    def decrypt_value(self, value: bytes | str, name: str, binding: bytes = b"") -> Any:
        """Decrypt one field value encrypted for field path ``name``.

        Raises:
            AuthenticationError: tampered, moved, wrong key or context (MalformedValueError:
                not a kmsbeam value at all).
            KeySourceError: the key source refused (disabled key, access denied, down).
            CodecError: the value authenticated but its plaintext breaks the value codec's
                limits or rules (too deep, too large, not canonical): a ``RecordError``.
        """
        opener, body = self._keys.opener(value, FIELD_V1)
        return decode_value(opener.open(body, name, binding))

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
            except CodecError as exc:  # authentic, but not a value: this record's failure
                raise exc.for_field(path.name) from None
            except KmsBeamError as exc:
                exc.field = path.name
                raise
            if len(path.parts) == 1:
                out[path.name] = plain
            else:
                path.set(out, plain)
            self.values += 1
        return out

    def decrypt_batch(self, records: Sequence[Mapping[str, Any]]) -> list[Any]:
        """``decrypt`` for many records at once, field by field: the same output, faster.

        Returns one entry per record, in order: the decrypted copy, or the ``KmsBeamError``
        that ``decrypt`` would have raised for it (a batch never fails as a whole).
        """
        try:
            return self._decrypt_chunk(records)
        except KmsBeamError:  # some record is bad: record by record, to say which
            return outcomes(self.decrypt, records)

    def _decrypt_chunk(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        outs, bindings = copies(records, self.bind)
        count = 0
        for name, path in self._plan:
            rows, values, kinds = without_none(column_of(outs, name, path))
            if bindings is None:
                these: Sequence[bytes] | None = None
            else:
                these = bindings if rows is None else [bindings[j] for j in rows]
            plains = _decode_column(self._open_column(name, values, these, kinds))
            targets = outs if rows is None else [outs[j] for j in rows]
            if path is None:
                for out, plain in zip(targets, plains):
                    out[name] = plain
            else:
                for out, plain in zip(targets, plains):
                    path.set(out, plain)
            count += len(plains)
        self.values += count
        return outs

    def _open_column(
        self, name: str, values: list[Any], bindings: Sequence[bytes] | None, kinds: set[type]
    ) -> list[bytes]:
        """The plaintexts of one field's values (of the types ``kinds``); one AES-GCM ``map``
        per data key."""
        if not values:
            return []
        binds: Iterable[bytes] | None = bindings
        if kinds == {str}:  # the common case: one data key for them all
            first, _ = self._keys.opener(values[0], FIELD_V1)
            texts = _after(first.header_text, values)
            if texts is not None:
                joint = from_text_joint(texts)
                if joint is not None:
                    data, step, length = joint
                    return first.open_joint(data, len(values), step, name, binds, length=length)
                return first.open_many(from_text_many(texts), name, binds)
        elif kinds == {bytes}:
            first, _ = self._keys.opener(values[0], FIELD_V1)
            if all(map(bytes.startswith, values, repeat(first.header))):
                return first.open_many(values, name, binds, offset=len(first.header))
        current: Opener | None = None
        groups: dict[int, tuple[Opener, list[int], list[bytes]]] = {}
        for j, value in enumerate(values):
            body = current.body_of(value) if current is not None else None
            if current is None or body is None:
                current, body = self._keys.opener(value, FIELD_V1)
            group = groups.get(id(current))
            if group is None:
                group = groups[id(current)] = (current, [], [])
            group[1].append(j)
            group[2].append(body)
        out: list[bytes] = [b""] * len(values)
        for op, index, bodies in groups.values():
            these = None if bindings is None else [bindings[j] for j in index]
            for j, plain in zip(index, op.open_many(bodies, name, these)):
                out[j] = plain
        return out


def _after(head: str, values: list[str]) -> list[str] | None:
    """The texts after ``head``, if every value starts with it; else None. Values of one length
    are cut with ``removeprefix``: one without the prefix would keep its length, so one length
    after the cut means every value had it."""
    size = len(values[0])
    if len(set(map(len, values))) == 1:
        bodies = list(map(str.removeprefix, values, repeat(head)))
        if len(set(map(len, bodies))) == 1 and len(bodies[0]) == size - len(head):
            return bodies
        return None
    if all(map(str.startswith, values, repeat(head))):
        return [v[len(head) :] for v in values]
    return None


def _decode_column(opened: list[bytes]) -> list[Any]:
    """``decode_value`` of each plaintext; a column of text values in one pass (the common case).

    Raises:
        MalformedValueError, CodecError: a value does not decode (the caller then goes record
            by record, to say which).
    """
    if opened and set(map(itemgetter(0), opened)) == _TEXT_ONLY:
        # Every plaintext is the tag 0x05 then UTF-8. Joined, they decode as one text (0x05 is
        # ASCII: no sequence runs across it), and when 0x05 occurs only as the k tags, the
        # text split at it is the k values.
        try:
            text = b"".join(opened).decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedValueError() from None
        if text.count(_STR_CHAR) == len(opened):
            return text.split(_STR_CHAR)[1:]
        return [p[1:].decode("utf-8") for p in opened]
    return [decode_value(p) for p in opened]
