"""Rotation without Beam: rewrap data keys to a new master key, for every format.

``Rewrapper.rewrap_key(wrapped, K)`` is the one place a data key is rewrapped; it is the
``KeyRewrap`` each format's ``rewrap`` calls (``kmsbeam.formats.base``), so what is specific to
a format (where its key material sits) stays in the format. Every format names a data key by
its commitment K, so a rewrap replaces only key material: for a field or record value the
header (bytes ``H..`` stay identical), for an object its key block. One data key serves many
values, so the work is one key-source call per *distinct data key*, not per value::

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

import threading
from collections.abc import Callable, Iterable, Mapping

from kmsbeam.errors import AuthenticationError, ConfigurationError, RecordError
from kmsbeam.formats.base import ALREADY, FILTERED, MOVED, RESUMED, REWRAPPED
from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1, V2_OF, make_header, parse
from kmsbeam.formats.paths import FieldPath, parse_paths
from kmsbeam.keys.cache import DataKeyCache, shared_cache
from kmsbeam.keys.calls import count_call
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.keys.source import KeySource, canonical_context, check_context
from kmsbeam.rotation.memo import RewrapMemo, shared_memo
from kmsbeam.vault import KeyVault, VaultEntryMissingError

__all__ = [
    "ALREADY",
    "FILTERED",
    "RESUMED",
    "REWRAPPED",
    "RewrapMemo",
    "Rewrapper",
    "record_paths",
    "shared_memo",
]


class Rewrapper:
    """Rewraps data keys under ``to_source``: the ``KeyRewrap`` of every format's ``rewrap``
    (``FieldFormat(...).rewrap(record, rewrapper)``, ``ObjectFormat().rewrap(header, ...)``).

    Thread-safe: concurrent values of one data key coalesce into one rewrap, and results are
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
        memo: the data keys already handled (default: this object's own; see ``shared_memo``,
            whose key must include the target version).
        target_version: the target's version if already known (``current_version()``).
        known: data keys moved by an earlier run (``kmsbeam.rotation.journal.read_journal``:
            K -> new wrapped key under ``target_version``); used without a call (``RESUMED``).
        on_moved: called after each rewrap call with ``(K, old version, new version, new
            wrapped key)``, e.g. ``JournalWriter.moved``; a failure there fails the value.
        vault_in: the key vault of v2 input values (``new_header`` reads their keys there).
        vault_out: write v2 values with their keys in this vault (a v1 dataset moves to a
            vault: ``kmsbeam rotate --key-vault``); None: write v1 values (a vault dataset
            moves back to self-contained values).

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
        vault_in: KeyVault | None = None,
        vault_out: KeyVault | None = None,
    ) -> None:
        self._vault_in, self._vault_out = vault_in, vault_out
        self._vault_lock = threading.Lock()
        self._vault_keys: dict[bytes, bytes] = {}  # K -> wrapped key read from vault_in
        self._published: set[bytes] = set()  # K written to (or found in) vault_out
        self._source = to_source
        self._context = check_context(context)
        self._context_key = canonical_context(self._context)
        self._only = None if only_versions is None else frozenset(only_versions)
        self._verify = verify
        self._cache = cache if cache is not None else shared_cache()
        self._on_call, self._on_verify = on_call, on_verify
        self._memo = memo if memo is not None else RewrapMemo()
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

    @property
    def target_uri(self) -> str:
        """The target key URI (a format records it as a hint where it keeps one)."""
        return self._source.uri

    @property
    def context(self) -> dict[str, str]:
        """The encryption context of the data keys (kept)."""
        return dict(self._context)

    # -- one data key (kmsbeam.formats.base.KeyRewrap) ------------------------------------
    def rewrap_key(self, wrapped: bytes, commitment: bytes) -> tuple[bytes, str]:
        """``(wrapped key to write, status)`` for the data key ``wrapped`` with commitment K;
        one key-source call per distinct data key (``memo``); counted in ``counts``.

        Raises:
            MalformedValueError: not a wrapped key of a known kind.
            ConfigurationError: a key of another kind than the target's (re-encrypt instead).
            AuthenticationError: the new key's commitment is not K (a tampered header).
            KeySourceError: the rewrap was refused (no permission, old key deleted, ...).
        """
        wrapped = bytes(wrapped)
        result = self._memo.get(commitment + wrapped, lambda: self._rewrap_key(wrapped, commitment))
        self.counts[result[1]] += 1
        return result

    # -- headers between v1 and v2 (key vaults) -------------------------------------------
    def new_header(self, header: bytes, fmt: int) -> tuple[bytes, str]:
        """``(new header, status)`` of a value header of ``fmt``'s family (v1 or v2): its data
        key rewrapped as ``rewrap_key`` does, written as a v2 header with the key in
        ``vault_out`` (created there first, durably) or, without ``vault_out``, as a v1 header
        (a v2 header's key read from ``vault_in``). Bytes after the header never change: v1
        and v2 values share their AAD.

        Raises:
            VaultEntryMissingError: a v2 value whose key ``vault_in`` lacks (or no vault_in).
            Otherwise as ``rewrap_key``.
        """
        parsed = parse(header + bytes(21), fmt, vault=True)
        was_v2 = not parsed.wrapped
        kid = parsed.commitment
        wrapped = self._vault_key(kid) if was_v2 else parsed.wrapped
        new_wrapped, status = self.rewrap_key(wrapped, kid)
        if status == FILTERED:
            return header, status
        if self._vault_out is not None:
            self._publish(kid, new_wrapped)
            return make_header(V2_OF.get(fmt, fmt), b"", kid), status
        if was_v2 or status in MOVED:
            return make_header(fmt, new_wrapped, kid), status
        return header, status

    def _vault_key(self, kid: bytes) -> bytes:
        with self._vault_lock:
            known = self._vault_keys.get(kid)
        if known is not None:
            return known
        if self._vault_in is None:
            raise RecordError("key-vault value: its data key is in a key vault, and none was given")
        entry = self._vault_in.newest(kid)
        if entry is None:
            raise VaultEntryMissingError(kid, self._vault_in.uri)
        with self._vault_lock:
            self._vault_keys[kid] = entry.wrapped
        return entry.wrapped

    def _publish(self, kid: bytes, wrapped: bytes) -> None:
        """Make sure ``vault_out`` holds data key ``kid`` before any value names it there."""
        assert self._vault_out is not None
        with self._vault_lock:
            if kid in self._published:
                return
        if not self._vault_out.generations(kid):
            self._vault_out.record(kid, wrapped, self._source.uri,
                                   self._source.wrapped_key_version(wrapped), self._context)  # fmt: skip
        with self._vault_lock:
            self._published.add(kid)

    def count(self, status: str, n: int = 1) -> None:
        """Count ``n`` values that got ``status`` from a format's own memo (no ``rewrap_key``)."""
        self.counts[status] += n

    def _rewrap_key(self, wrapped: bytes, commitment: bytes) -> tuple[bytes, str]:
        if wrapped[:1] != bytes((self._source.kind,)):
            wrapped_key_version(wrapped)  # a key of no known kind: MalformedValueError
            raise ConfigurationError(
                f"a data key of kind {wrapped[0]:#04x} cannot be rewrapped to "
                f"{self._source.uri} (another kind of key source): re-encrypt instead"
            )
        version = self._source.wrapped_key_version(wrapped)
        if version == self.check_target():
            return wrapped, ALREADY
        if self._only is not None and version not in self._only:
            return wrapped, FILTERED
        journaled = self._known.get(commitment)
        if journaled is not None:
            return journaled, RESUMED
        if self._on_call is not None:
            self._on_call()
        self.calls += 1
        count_call("kms_calls_rewrap")
        new_wrapped = self._source.rewrap(wrapped, self._context)
        if self._verify:
            cipher = self._cache.cipher(
                self._source, new_wrapped, self._context,
                context_key=self._context_key, on_call=self._on_verify,
            )  # fmt: skip
            if cipher.commitment != commitment:
                raise AuthenticationError()
        if self._on_moved is not None:
            new_version = self._source.wrapped_key_version(new_wrapped)
            self._on_moved(commitment, version, new_version, new_wrapped)
        return new_wrapped, REWRAPPED


def record_paths(mode: str, fields: Iterable[str] | str, payload_field: str) -> tuple[tuple[FieldPath, ...], int]:
    """The paths and format byte of a dataset's encrypted values: ``("fields", [...])`` or
    ``("record", payload field)``."""
    if mode == "fields":
        return parse_paths(fields), FIELD_V1
    if mode == "record":
        return (FieldPath(payload_field),), RECORD_V1
    raise ConfigurationError(f"unknown mode {mode!r}: fields or record")

