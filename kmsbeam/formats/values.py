"""Envelope values in place: rewrap one value's header, or name its data key, without
decrypting (the fields, record and cells formats and ``Rewrapper`` share these).

A value is ``header || body`` (``kmsbeam.formats.envelope``); only the header holds key
material, so both operations read the header alone: for a text value, its base64 prefix.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Mapping, MutableMapping
from typing import Any

from kmsbeam.errors import KmsBeamError, MalformedValueError
from kmsbeam.formats.base import MOVED, KeyRewrap, KeyUse, outcomes
from kmsbeam.formats.envelope import V2, from_text, parse, reheader, to_text
from kmsbeam.formats.paths import FieldPath

__all__ = [
    "KIND_NAMES", "kind_name", "rewrap_paths", "rewrap_records", "rewrap_value", "text_header_length",
    "value_use", "wrapped_version",
]  # fmt: skip

KIND_NAMES = {1: "local keystore", 2: "Alibaba Cloud KMS protocol", 3: "PKCS#11"}

_DUMMY_BODY = bytes(21)  # counter, one ciphertext byte and the tag: the shortest body parse() takes
_MAX_TEXTS = 65536
_texts: MutableMapping[Any, dict[tuple[int, str], tuple[str, str]]] = weakref.WeakKeyDictionary()
_texts_lock = threading.Lock()
_sizes: dict[str, int] = {}  # a text value's first 4 characters (format byte, L) -> header length
_Memo = dict[tuple[int, str], tuple[str, str]]  # (format byte, old header text) -> (new header text, status)
_last: tuple[Any, _Memo | None] = (None, None)  # (weak reference to a rewrapper, its text memo)


def text_header_length(value: str) -> int:
    """The length of a text value's header in characters (the header is 3k bytes).

    Raises:
        MalformedValueError: too short to be a value.
    """
    if len(value) < 4:
        raise MalformedValueError()
    first = from_text(value[:4])  # format byte and L
    if first[0] in V2:  # fmt || K || 0x00: 18 bytes
        if len(value) < 24 + 28:
            raise MalformedValueError()
        return 24
    wlen = int.from_bytes(first[1:3], "big")
    kend = 3 + wlen + 16
    size = (kend + (-kend % 3)) // 3 * 4
    if wlen == 0 or len(value) < size + 28:  # + the shortest body, 21 bytes
        raise MalformedValueError()
    return size


def kind_name(kind: int) -> str:
    """How reports name a wrapped key's kind byte."""
    return KIND_NAMES.get(kind, f"kind {kind:#04x}")


def wrapped_version(wrapped: bytes) -> str:
    """The master key version a wrapped key names ("" when its kind is not known)."""
    from kmsbeam.keys.registry import wrapped_key_version  # kmsbeam.keys imports formats

    try:
        return wrapped_key_version(wrapped)
    except MalformedValueError:
        return ""


def _header(value: object, fmt: int) -> bytes:
    """The header of a binary or text value (a text value's prefix only is decoded)."""
    if isinstance(value, str):
        return from_text(value[: text_header_length(value)])
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise MalformedValueError()
    return parse(value, fmt, vault=True).header


def _new_header(header: bytes, fmt: int, rewrap: KeyRewrap) -> tuple[bytes, str]:
    """``(new header, status)``: a rewrapper that moves values between v1 and v2
    (``Rewrapper.new_header``, key vaults) makes the whole header; otherwise the wrapped key in
    a v1 header is replaced. The header is new exactly when it differs from ``header``."""
    move = getattr(rewrap, "new_header", None)
    if move is not None:
        made: tuple[bytes, str] = move(header, fmt)
        return made
    parsed = parse(header + _DUMMY_BODY, fmt)
    wrapped, status = rewrap.rewrap_key(parsed.wrapped, parsed.commitment)
    if status not in MOVED:
        return header, status
    new = reheader(header + _DUMMY_BODY, fmt, wrapped)
    assert isinstance(new, bytes)
    return new[: -len(_DUMMY_BODY)], status


def _text_memo(rewrap: KeyRewrap) -> dict[tuple[int, str], tuple[str, str]] | None:
    global _last
    ref, memo = _last  # one read of a tuple: the memo of the rewrapper asked for last
    if ref is not None and ref() is rewrap:
        return memo
    try:
        with _texts_lock:
            memo = _texts.get(rewrap)
            if memo is None:
                memo = _texts[rewrap] = {}
        _last = (weakref.ref(rewrap), memo)
        return memo
    except TypeError:  # a rewrapper without weak references: no memo
        return None


def rewrap_value(value: Any, fmt: int, rewrap: KeyRewrap) -> Any:
    """``value`` (binary or text) with its data key rewrapped through ``rewrap``, or
    ``value`` itself when the key stays (already under the target, or filtered out). Bytes
    after the header are never touched.

    Raises:
        MalformedValueError / AuthenticationError: not a value, or a tampered header.
        KeySourceError: the rewrap was refused (no permission, old key deleted, ...).
    """
    return _rewrap(value, fmt, rewrap, _text_memo(rewrap) if isinstance(value, str) else None)[0]


def _rewrap(value: Any, fmt: int, rewrap: KeyRewrap, memo: dict[tuple[int, str], tuple[str, str]] | None
            ) -> tuple[Any, Any, Any]:  # fmt: skip
    """``(new value, its old header, its new header)``; text headers are base64 prefixes."""
    if isinstance(value, str):
        head = _text_size(value)
        prefix = value[:head]
        hit = None if memo is None else memo.get((fmt, prefix))
        if hit is None:
            new, status = _new_header(from_text(prefix), fmt, rewrap)
            hit = (to_text(new), status)
            if memo is not None and len(memo) < _MAX_TEXTS:
                memo[(fmt, prefix)] = hit
        else:
            rewrap.count(hit[1])
        return (hit[0] + value[head:], prefix, hit[0]) if hit[0] != prefix else (value, prefix, prefix)
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise MalformedValueError()
    data = bytes(value)
    header = parse(data, fmt, vault=True).header
    new, status = _new_header(header, fmt, rewrap)
    return (new + data[len(header) :], header, new) if new != header else (value, header, header)


def rewrap_paths(
    record: Mapping[str, Any], paths: Iterable[FieldPath], fmt: int, rewrap: KeyRewrap,
    heads: MutableMapping[Any, Any] | None = None,
) -> dict[str, Any]:
    """A copy of ``record`` with the values at ``paths`` rewrapped (``None`` kept).

    ``heads``, when given, maps each value's header to its new header (text values: their
    base64 prefixes) once the whole record rewrapped: the data keys a rewrap saw, without
    reading any value again (``kmsbeam.rotation.inventory``).

    Raises:
        RecordError: a path is missing. Otherwise as ``rewrap_value``, with ``field`` set.
    """
    out = dict(record)
    done: list[tuple[Any, Any]] = []
    memo = _text_memo(rewrap)
    for path in paths:
        value = path.get(record)
        if value is None:
            continue
        try:
            new, old_head, new_head = _rewrap(value, fmt, rewrap, memo)
        except KmsBeamError as exc:
            exc.field = path.name
            raise
        if new is not value:
            path.set(out, new)
        done.append((old_head, new_head))
    if heads is not None:
        heads.update(done)
    return out


def rewrap_records(
    records: Iterable[Mapping[str, Any]], paths: Iterable[FieldPath], fmt: int, rewrap: KeyRewrap,
    heads: MutableMapping[Any, Any] | None = None,
) -> list[Any]:
    """``rewrap_paths`` of each record: its result, or the ``KmsBeamError`` it raised
    (``kmsbeam.formats.base.outcomes``), with the same counts and ``heads``.

    The common case runs without a call per value: top-level paths whose values are text that
    starts with the header text a record before it in the batch had (values of one data key
    share it), which ``_rewrap`` would find in its memo. Every other record (a missing or
    ``None`` value, another header, a nested path) takes ``rewrap_paths``, and its last
    header becomes the one the next records are compared with.
    """
    paths = tuple(paths)
    memo = _text_memo(rewrap)
    if memo is None or any(len(p.parts) != 1 for p in paths):
        return outcomes(lambda r: rewrap_paths(r, paths, fmt, rewrap, heads), records)
    names = [p.name for p in paths]
    per_record = len(names)
    results: list[Any] = []
    prefix, new, status, moved, n = "", "", "", False, 0  # the header text compared with, its memo entry, values seen
    size = minimum = 1 << 62  # no value is that long: the first record takes rewrap_paths
    counts: dict[str, int] = {}
    for record in records:
        if type(record) is dict:
            out = dict(record)
            for name in names:
                value = out.get(name)
                if type(value) is not str or len(value) < minimum or not value.startswith(prefix):
                    break
                if moved:
                    out[name] = new + value[size:]
            else:
                results.append(out)
                n += per_record
                continue
        seen: dict[Any, Any] = {}
        result = outcomes(lambda r: rewrap_paths(r, paths, fmt, rewrap, seen), (record,))[0]
        results.append(result)
        if heads is not None:
            heads.update(seen)
        last = next(reversed(seen), None)
        hit = memo.get((fmt, last)) if isinstance(last, str) else None
        if hit is not None and isinstance(last, str):
            if n:
                counts[status] = counts.get(status, 0) + n
            prefix, (new, status), n = last, hit, 0
            moved = new != last
            size, minimum = len(last), len(last) + 28  # as _text_size: the shortest body
    if n:
        counts[status] = counts.get(status, 0) + n
    for key, count in counts.items():
        rewrap.count(key, count)
    return results


def _text_size(value: str) -> int:
    """``text_header_length(value)``, remembered by the first 4 characters (format byte, L)."""
    size = _sizes.get(value[:4])
    if size is None or len(value) < size + 28:
        size = text_header_length(value)
        if len(_sizes) < 4096:
            _sizes[value[:4]] = size
    return size


def value_use(value: Any, fmt: int, where: str) -> KeyUse:
    """The data key of one value, from its header alone.

    Raises:
        MalformedValueError: not a value of format ``fmt``.
    """
    parsed = parse(_header(value, fmt) + _DUMMY_BODY, fmt, vault=True)
    wrapped = parsed.wrapped
    if not wrapped:  # a v2 value: its key is in a key vault (kind and version there)
        return KeyUse(where, parsed.commitment.hex())
    return KeyUse(where, parsed.commitment.hex(), wrapped[0], wrapped_version(wrapped))
