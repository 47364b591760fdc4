"""Rotation without Beam: rewrap the data keys of field and record values to a new master key.

A value's header names its data key by the commitment K (``kmsbeam.formats.envelope``), so a rewrap
replaces only the header: bytes ``H..`` of every value stay identical. One data key serves a
whole bundle of values, so the work is one key-source call per *distinct header*, not per
value::

    value = header(fmt, L, wrapped key, K, P) || body      -> new header || the same body

How a wrapped key is found to be under the target already (idempotency, no call made):
every wrapped key names the master key *version* that wrapped it, and the target source reads
that name without unwrapping anything (``KeySource.wrapped_key_version``; the name of each
kind is in ``kmsbeam.keys.source``). A value whose version equals the target's
``current_version()`` is skipped; a second run over rotated data therefore makes no data-key
call. (Learning the current version is one ``DescribeKey`` per run for a KMS target, since
automatic rotation changes it; a caller that already knows it passes ``target_version`` and
makes no call at all.) Data keys an earlier,
interrupted run moved come from its journal (``known``, ``kmsbeam.rotation.journal``) without
a call, and ``on_moved`` journals each new rewrap.

Every rewrapped key is checked before it is used: it is unwrapped once through the data-key
cache (one extra call per data key, which also warms the cache for later reads) and its DEK
must have the value's commitment K. A source that rewrapped the wrong key, or a value whose
header was tampered with, fails with ``AuthenticationError`` and nothing is written for it.

Rewraps are done by the *target* source (``KeySource.rewrap``): server-side ``ReEncrypt``
for ``local:``, ``kms-emulator://`` and ``alibaba-kms://`` (any key of the same KMS), in-HSM
for PKCS#11 KEKs of the same token. Moving a data key between kinds (e.g. KMS to HSM) is not
a rewrap: ``ConfigurationError`` says to re-encrypt instead.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kmsbeam.keys.cache import DataKeyCache, shared_cache
from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1, from_text, parse, reheader, to_text
from kmsbeam.errors import (
    AuthenticationError,
    ConfigurationError,
    KmsBeamError,
    MalformedValueError,
)
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.keys.source import KeySource, canonical_context, check_context
from kmsbeam.formats.paths import FieldPath, parse_paths
from kmsbeam.rotation.memo import RewrapMemo, shared_memo

__all__ = [
    "ALREADY",
    "FILTERED",
    "RESUMED",
    "REWRAPPED",
    "RewrapMemo",
    "Rewrapper",
    "record_paths",
    "shared_memo",
    "source_key_versions",
    "target_key_version",
    "wrapped_key_version",
]

REWRAPPED = "rewrapped"  # the header was replaced
ALREADY = "already"  # the key is under the target's current version: left as it is
FILTERED = "filtered"  # not under one of the versions asked for: left as it is
RESUMED = "resumed"  # rewrapped with the new key a journal recorded (no call)

_MOVED = (REWRAPPED, RESUMED)
_DUMMY_BODY = 21  # counter, one ciphertext byte and the tag: the shortest body parse() takes


def target_key_version(source: KeySource) -> str:
    """``source.current_version()`` (``KeySource.current_version``)."""
    return source.current_version()


def source_key_versions(source: KeySource) -> tuple[str, ...]:
    """``source.key_versions()`` (``KeySource.key_versions``), for filters such as
    ``kmsbeam rotate --only-key``."""
    return source.key_versions()


class Rewrapper:
    """Rewraps the data keys of field (0x01) and record (0x02) values under ``to_source``.

    Thread-safe: concurrent values of one header coalesce into one rewrap, and results are
    kept in the ``memo``, so Rewrappers sharing one memo (one per worker process) make one
    call per distinct data key.

    Args:
        to_source: the target key source (it must be able to rewrap the old keys: see the
            module docstring).
        context: the encryption context the data keys were generated with (kept).
        only_versions: rewrap only keys under these versions (``KeySource.wrapped_key_version``
            names); others are left as they are (``FILTERED``).
        verify: unwrap each new key once and check its commitment before using it.
        cache: the data-key cache used for that check (default: the process-wide one).
        on_call: called once per rewrap call; ``on_verify`` once per verifying unwrap call.
        memo: the headers already handled (default: this object's own; see ``shared_memo``,
            whose key must include the target version).
        target_version: the target's version if already known (``current_version()``).
        known: data keys moved by an earlier run (``kmsbeam.rotation.journal.read_journal``:
            K -> new wrapped key under ``target_version``); used without a call (``RESUMED``).
        on_moved: called after each rewrap call with ``(K, old version, new version, new
            wrapped key)``, e.g. ``JournalWriter.moved``; a failure there fails the value.

    Raises (construction): nothing; the target is described at the first value, or by
    ``check_target()`` up front (recommended: a disabled or unknown key then fails before
    anything is written).
    """

    def __init__(
        self,
        to_source: KeySource,
        *,
        context: Mapping[str, str] | None = None,
        only_versions: Iterable[str] | None = None,
        verify: bool = True,
        cache: DataKeyCache | None = None,
        on_call: Callable[[], None] | None = None,
        on_verify: Callable[[], None] | None = None,
        memo: RewrapMemo | None = None,
        target_version: str | None = None,
        known: Mapping[bytes, bytes] | None = None,
        on_moved: Callable[[bytes, str, str, bytes], None] | None = None,
    ) -> None:
        self._source = to_source
        self._context = check_context(context)
        self._context_key = canonical_context(self._context)
        self._only = None if only_versions is None else frozenset(only_versions)
        self._verify = verify
        self._cache = cache if cache is not None else shared_cache()
        self._on_call, self._on_verify = on_call, on_verify
        self._memo = memo if memo is not None else RewrapMemo()
        self._texts: dict[str, tuple[str, str]] = {}  # text header -> (text to write, status)
        self._target = target_version
        self._known = dict(known or {})
        self._on_moved = on_moved
        self.calls = 0
        self.counts = {REWRAPPED: 0, ALREADY: 0, FILTERED: 0, RESUMED: 0}

    def __repr__(self) -> str:
        return f"Rewrapper(to={self._source.uri!r}, headers={len(self._memo)})"

    def check_target(self) -> str:
        """Describe the target now (its version name); a disabled or unknown key raises."""
        if self._target is None:
            self._target = self._source.current_version()
        return self._target

    # -- one header ---------------------------------------------------------------------
    def new_header(self, header: bytes, fmt: int) -> tuple[bytes, str]:
        """``(header to write, status)`` for a value header; one call per distinct header."""
        return self._memo.get(header, lambda: self._rewrap_header(header, fmt))

    def _rewrap_header(self, header: bytes, fmt: int) -> tuple[bytes, str]:
        parsed = parse(header + bytes(_DUMMY_BODY), fmt)  # a header and a minimal dummy body
        if parsed.wrapped[0] != self._source.kind:
            wrapped_key_version(parsed.wrapped)  # a key of no known kind: MalformedValueError
            raise ConfigurationError(
                f"a data key of kind {parsed.wrapped[0]:#04x} cannot be rewrapped to "
                f"{self._source.uri} (another kind of key source): re-encrypt instead"
            )
        version = self._source.wrapped_key_version(parsed.wrapped)
        if version == self.check_target():
            return header, ALREADY
        if self._only is not None and version not in self._only:
            return header, FILTERED
        journaled = self._known.get(parsed.commitment)
        if journaled is not None:
            return self._reheader(header, fmt, journaled), RESUMED
        if self._on_call is not None:
            self._on_call()
        self.calls += 1
        new_wrapped = self._source.rewrap(parsed.wrapped, self._context)
        if self._verify:
            cipher = self._cache.cipher(
                self._source, new_wrapped, self._context,
                context_key=self._context_key, on_call=self._on_verify,
            )  # fmt: skip
            if cipher.commitment != parsed.commitment:
                raise AuthenticationError()
        if self._on_moved is not None:
            new_version = self._source.wrapped_key_version(new_wrapped)
            self._on_moved(parsed.commitment, version, new_version, new_wrapped)
        return self._reheader(header, fmt, new_wrapped), REWRAPPED

    @staticmethod
    def _reheader(header: bytes, fmt: int, wrapped: bytes) -> bytes:
        new = reheader(header + bytes(_DUMMY_BODY), fmt, wrapped)
        assert isinstance(new, bytes)
        return new[:-_DUMMY_BODY]

    # -- values and records ---------------------------------------------------------------
    def rewrap_value(self, value: bytes | str, fmt: int = FIELD_V1) -> bytes | str:
        """``value`` (binary or text) with its data key rewrapped, or unchanged when already
        under the target (or filtered out). Bytes after the header are never touched.

        Raises:
            MalformedValueError / AuthenticationError: not a value, or a tampered header.
            KeySourceError: the rewrap was refused (no permission, old key deleted, ...).
        """
        if isinstance(value, str):
            head = _text_header_length(value)
            prefix = value[:head]
            hit = self._texts.get(prefix)
            if hit is None:
                new, status = self.new_header(from_text(prefix), fmt)
                hit = (to_text(new), status)
                if len(self._texts) < 65536:
                    self._texts[prefix] = hit
            self.counts[hit[1]] += 1
            return hit[0] + value[head:] if hit[1] in _MOVED else value
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise MalformedValueError()
        data = bytes(value)
        header = parse(data, fmt).header
        new, status = self.new_header(header, fmt)
        self.counts[status] += 1
        return new + data[len(header) :] if status in _MOVED else value

    def rewrap_record(
        self, record: Mapping[str, Any], paths: Sequence[FieldPath], fmt: int = FIELD_V1
    ) -> dict[str, Any]:
        """A copy of ``record`` with the values at ``paths`` rewrapped (``None`` kept).

        Raises:
            RecordError: a path is missing. Otherwise as ``rewrap_value``, with ``field`` set.
        """
        out = dict(record)
        for path in paths:
            value = path.get(record)
            if value is None:
                continue
            try:
                new = self.rewrap_value(value, fmt)
            except KmsBeamError as exc:
                exc.field = path.name
                raise
            if new is not value:
                path.set(out, new)
        return out

    def rewrap_batch(
        self, records: Sequence[Mapping[str, Any]], paths: Sequence[FieldPath], fmt: int = FIELD_V1
    ) -> list[Any]:
        """``rewrap_record`` for each record: the copy, or the ``KmsBeamError`` it raised."""
        out: list[Any] = []
        for record in records:
            try:
                out.append(self.rewrap_record(record, paths, fmt))
            except KmsBeamError as exc:
                out.append(exc)
        return out


def record_paths(mode: str, fields: Iterable[str] | str, payload_field: str) -> tuple[tuple[FieldPath, ...], int]:
    """The paths and format byte of a dataset's encrypted values: ``("fields", [...])`` or
    ``("record", payload field)``."""
    if mode == "fields":
        return parse_paths(fields), FIELD_V1
    if mode == "record":
        return (FieldPath(payload_field),), RECORD_V1
    raise ConfigurationError(f"unknown mode {mode!r}: fields or record")


def _text_header_length(value: str) -> int:
    """The length of a text value's header in characters (the header is 3k bytes)."""
    if len(value) < 4:
        raise MalformedValueError()
    first = from_text(value[:4])  # format byte and L
    wlen = int.from_bytes(first[1:3], "big")
    kend = 3 + wlen + 16
    size = (kend + (-kend % 3)) // 3 * 4
    if wlen == 0 or len(value) < size + 28:  # + the shortest body, 21 bytes
        raise MalformedValueError()
    return size
