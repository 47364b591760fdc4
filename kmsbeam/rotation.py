"""Rotation without Beam: rewrap the data keys of field and record values to a new master key.

A value's header names its data key by the commitment K (``kmsbeam.envelope``), so a rewrap
replaces only the header: bytes ``H..`` of every value stay identical. One data key serves a
whole bundle of values, so the work is one key-source call per *distinct header*, not per
value::

    value = header(fmt, L, wrapped key, K, P) || body      -> new header || the same body

How a wrapped key is found to be under the target already (idempotency, no call made):
every wrapped key names the master key *version* that wrapped it, and ``wrapped_key_version``
reads that name without unwrapping anything:

====  =========================================================  ===========================
kind  version name read from the blob                            the target's, from
====  =========================================================  ===========================
0x01  KeyVersionId, the blob's first 36 bytes                    ``describe_key()``'s
0x02  (the same layout: emulator, Alibaba Cloud KMS)             ``primary_version``
0x03  ``TOKEN/KEK-LABEL/KEK-ID-HEX`` from the PKCS#11 blob       the source's own KEK
====  =========================================================  ===========================

A value whose version equals the target's current version is skipped; a second run over
rotated data therefore makes no data-key call. (It still makes one ``DescribeKey`` per run
for a KMS target, to learn the primary version, which automatic rotation changes.)

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

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from kmsbeam.cache import DataKeyCache, shared_cache
from kmsbeam.envelope import FIELD_V1, RECORD_V1, from_text, parse, reheader, to_text
from kmsbeam.errors import (
    AuthenticationError,
    ConfigurationError,
    KeyDisabledError,
    KmsBeamError,
    MalformedValueError,
)
from kmsbeam.keysource import (
    KIND_ALIBABA_KMS,
    KIND_LOCAL,
    KIND_PKCS11,
    KeySource,
    canonical_context,
    check_context,
)
from kmsbeam.paths import FieldPath, parse_paths

__all__ = [
    "ALREADY",
    "FILTERED",
    "REWRAPPED",
    "RewrapMemo",
    "Rewrapper",
    "pkcs11_kek_name",
    "record_paths",
    "shared_memo",
    "target_key_version",
    "wrapped_key_version",
]

REWRAPPED = "rewrapped"  # the header was replaced
ALREADY = "already"  # the key is under the target's current version: left as it is
FILTERED = "filtered"  # not under one of the versions asked for: left as it is

_VERSION_ID = 36  # KeyVersionId, ASCII, at the start of an engine / Alibaba blob
_DUMMY_BODY = 21  # counter, one ciphertext byte and the tag: the shortest body parse() takes


def pkcs11_kek_name(token: str, label: str, kek_id: bytes) -> str:
    """The version name of a PKCS#11 KEK: ``TOKEN/LABEL/ID-HEX``."""
    return f"{token}/{label}/{kek_id.hex()}"


def wrapped_key_version(wrapped: bytes) -> str:
    """The master key version a wrapped key names (see the module docstring); no call made.

    Raises:
        MalformedValueError: not a wrapped key of a known kind.
    """
    if len(wrapped) > 1 + _VERSION_ID and wrapped[0] in (KIND_LOCAL, KIND_ALIBABA_KMS):
        try:
            return wrapped[1 : 1 + _VERSION_ID].decode("ascii")
        except UnicodeDecodeError:
            raise MalformedValueError() from None
    if wrapped[:1] == bytes((KIND_PKCS11,)):
        from kmsbeam.pkcs11._blob import Blob, BlobError  # no PKCS#11 library needed

        try:
            blob = Blob.decode(wrapped[1:])
        except BlobError:
            raise MalformedValueError() from None
        return pkcs11_kek_name(blob.token, blob.kek_label, blob.kek_id)
    raise MalformedValueError()


def target_key_version(source: KeySource) -> str:
    """The version new wraps of ``source`` name; fails unless the key is usable.

    Raises:
        KeyDisabledError: the key is not Enabled. KeyNotFoundError: it does not exist.
    """
    own = getattr(source, "kek_version_name", None)
    if callable(own):  # PKCS#11: the KEK this source wraps with
        return str(own())
    info = source.describe_key()
    if info.state != "Enabled":
        raise KeyDisabledError(f"the target key {source.uri} is {info.state}, not Enabled")
    if not info.primary_version:
        raise ConfigurationError(f"the key source of {source.uri} names no primary key version")
    return info.primary_version


class _Flight:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.result: tuple[bytes, str] | None = None
        self.error: BaseException | None = None


class RewrapMemo:
    """Value headers already handled (old header -> new header and status), LRU, thread-safe.

    Concurrent misses for one header coalesce: the first caller runs the rewrap, the others
    wait for its result (or its error; errors are not remembered). Share one per target, context
    and filter in a process (``shared_memo``) so a worker makes one call per data key.
    Headers hold wrapped keys and commitments only: no key material.
    """

    def __init__(self, max_entries: int = 65536) -> None:
        self._max = max_entries
        self._lock = threading.Lock()
        self._done: OrderedDict[bytes, tuple[bytes, str]] = OrderedDict()
        self._flights: dict[bytes, _Flight] = {}

    def __len__(self) -> int:
        return len(self._done)

    def get(self, header: bytes, run: Callable[[], tuple[bytes, str]]) -> tuple[bytes, str]:
        """The remembered result for ``header``, else ``run()``'s (once for all callers)."""
        with self._lock:
            done = self._done.get(header)
            if done is not None:
                self._done.move_to_end(header)
                return done
            flight = self._flights.get(header)
            leader = flight is None
            if flight is None:
                flight = self._flights[header] = _Flight()
        if not leader:
            flight.done.wait()
            if flight.error is not None:
                raise flight.error
            assert flight.result is not None
            return flight.result
        try:
            flight.result = result = run()
            with self._lock:
                self._done[header] = result
                while len(self._done) > self._max:
                    self._done.popitem(last=False)
            return result
        except BaseException as exc:
            flight.error = exc
            raise
        finally:
            with self._lock:
                self._flights.pop(header, None)
            flight.done.set()


_memos: dict[tuple[Any, ...], RewrapMemo] = {}
_memos_lock = threading.Lock()
_memos_pid = [os.getpid()]


def shared_memo(*key: Any) -> RewrapMemo:
    """The process-wide memo for ``key`` (e.g. target URI, context, filter); a fresh one in a
    forked child."""
    with _memos_lock:
        if _memos_pid[0] != os.getpid():
            _memos.clear()
            _memos_pid[0] = os.getpid()
        memo = _memos.get(key)
        if memo is None:
            memo = _memos[key] = RewrapMemo()
        return memo


class Rewrapper:
    """Rewraps the data keys of field (0x01) and record (0x02) values under ``to_source``.

    Thread-safe: concurrent values of one header coalesce into one rewrap, and results are
    kept in the ``memo``, so Rewrappers sharing one memo (one per worker process) make one
    call per distinct data key.

    Args:
        to_source: the target key source (it must be able to rewrap the old keys: see the
            module docstring).
        context: the encryption context the data keys were generated with (kept).
        only_versions: rewrap only keys under these versions (``wrapped_key_version``
            names); others are left as they are (``FILTERED``).
        verify: unwrap each new key once and check its commitment before using it.
        cache: the data-key cache used for that check (default: the process-wide one).
        on_call: called once per rewrap call; ``on_verify`` once per verifying unwrap call.
        memo: the headers already handled (default: this object's own; see ``shared_memo``,
            whose key must include the target version).
        target_version: the target's version if already known (``target_key_version``).

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
        self.calls = 0
        self.counts = {REWRAPPED: 0, ALREADY: 0, FILTERED: 0}

    def __repr__(self) -> str:
        return f"Rewrapper(to={self._source.uri!r}, headers={len(self._memo)})"

    def check_target(self) -> str:
        """Describe the target now (its version name); a disabled or unknown key raises."""
        if self._target is None:
            self._target = target_key_version(self._source)
        return self._target

    # -- one header ---------------------------------------------------------------------
    def new_header(self, header: bytes, fmt: int) -> tuple[bytes, str]:
        """``(header to write, status)`` for a value header; one call per distinct header."""
        return self._memo.get(header, lambda: self._rewrap_header(header, fmt))

    def _rewrap_header(self, header: bytes, fmt: int) -> tuple[bytes, str]:
        parsed = parse(header + bytes(_DUMMY_BODY), fmt)  # a header and a minimal dummy body
        version = wrapped_key_version(parsed.wrapped)
        if parsed.wrapped[0] != self._source.kind:
            raise ConfigurationError(
                f"a data key of kind {parsed.wrapped[0]:#04x} cannot be rewrapped to "
                f"{self._source.uri} (another kind of key source): re-encrypt instead"
            )
        if version == self.check_target():
            return header, ALREADY
        if self._only is not None and version not in self._only:
            return header, FILTERED
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
        new = reheader(header + bytes(_DUMMY_BODY), fmt, new_wrapped)
        assert isinstance(new, bytes)
        return new[:-_DUMMY_BODY], REWRAPPED

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
            return hit[0] + value[head:] if hit[1] == REWRAPPED else value
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise MalformedValueError()
        data = bytes(value)
        header = parse(data, fmt).header
        new, status = self.new_header(header, fmt)
        self.counts[status] += 1
        return new + data[len(header) :] if status == REWRAPPED else value

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
