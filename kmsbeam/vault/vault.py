"""``KeyVault``: the wrapped data keys of key-vault values (field value v2, record v2).

A v2 value names its data key by K alone; the vault maps K to the wrapped key. Writers on
many workers never coordinate: each data key is new (its K is unique), so its first entry
(generation 1) has a name no other writer uses, and it is created (durably) before the
encryptor seals a value under the key. A crash can leave an entry no value uses, never a value
without an entry. Rotation (``kmsbeam vault rotate``) adds generation n+1 with the same K and
never touches a data file; a reader takes the newest generation that unwraps to a key whose
commitment is K, and falls back to older ones (a half-done or tampered rotation cannot lose a
key). Workers resolve each K once per process (``resolve``; the data-key cache then holds the
unwrapped key).
"""

from __future__ import annotations

import hmac
import json
import threading
from collections.abc import Callable, Mapping
from typing import Protocol, TypeVar

from kmsbeam.errors import (
    AuthenticationError, ConfigurationError, FormatError, KeyDisabledError, KeyNotFoundError,
    RecordError,
)  # fmt: skip
from kmsbeam.vault.entry import MAX_ENTRY_BYTES, VaultEntry, entry_name, parse_entry_name
from kmsbeam.vault.store import VaultStore, open_store

__all__ = [
    "KeyVault",
    "MARKER",
    "VaultEntryError",
    "VaultEntryMissingError",
    "check_vault_uri",
    "key_id_of",
]

MARKER = "_kmsbeam_vault.json"
MARKER_TEXT = b'{"format":"kmsbeam.vault.v1"}\n'
_MAX_RESOLVED = 65536


class VaultEntryMissingError(RecordError):
    """A value's data key has no entry in the key vault (the record's failure)."""

    def __init__(self, key_id: bytes, vault_uri: str) -> None:
        super().__init__(
            f"key-vault entry missing: data key {key_id.hex()} is not in the key vault {vault_uri}"
        )
        self.key_id = key_id


class VaultEntryError(RecordError):
    """A value's data key has entries in the key vault, but none is a readable entry."""

    def __init__(self, key_id: bytes, vault_uri: str) -> None:
        super().__init__(
            f"key-vault entry unreadable: data key {key_id.hex()} has no valid entry in the "
            f"key vault {vault_uri}"
        )
        self.key_id = key_id


class _Committed(Protocol):
    @property
    def commitment(self) -> bytes: ...


C = TypeVar("C", bound=_Committed)


class KeyVault:
    """The key vault at ``uri`` (a local path or, with ``kmsbeam.transforms`` imported, any Beam
    filesystem prefix). Picklable as its URI; thread-safe."""

    _resolved: dict[tuple[str, bytes], bytes] = {}  # (vault, K) -> wrapped key that worked
    _resolved_lock = threading.Lock()

    def __init__(self, uri: str, store: VaultStore | None = None) -> None:
        check_vault_uri(uri)
        self._opened = store
        self._uri = uri
        self._name = uri.rstrip("/") or uri  # v and v/ are one vault
        self._marked = False

    @property
    def _store(self) -> VaultStore:
        """The store, opened on first use (so a vault unpickled on a worker opens there)."""
        if self._opened is None:
            self._opened = open_store(self._uri)
        return self._opened

    @property
    def uri(self) -> str:
        return self._uri

    def __repr__(self) -> str:
        return f"KeyVault({self._uri!r})"

    def __reduce__(self) -> tuple[type[KeyVault], tuple[str]]:
        return (KeyVault, (self._uri,))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyVault) and other._name == self._name

    def __hash__(self) -> int:
        return hash(("KeyVault", self._name))

    # -- writing ---------------------------------------------------------------------------

    def prepare(self) -> None:
        """Make the prefix a vault (write its marker file if missing): a check, on the driver,
        that the vault can be written before any worker needs it.

        Raises:
            KeySourceUnavailableError: the store cannot be written.
        """
        self._marked = False
        self._mark()

    def _mark(self) -> None:
        """Create the vault's marker file once (it tells ``vault`` commands a prefix is one)."""
        if not self._marked:
            if self._store.read(MARKER) is None:
                self._store.create(MARKER, MARKER_TEXT)
            self._marked = True

    def put(self, entry: VaultEntry, *, durable: bool = True) -> bool:
        """Create ``entry`` (durable when this returns, or with ``durable=False`` after the
        next ``sync``): True; False if an entry of that key id
        and generation exists with the same wrapped key already (a retried write).

        Raises:
            FormatError: another entry holds that name (a rotation raced this one).
            KeySourceUnavailableError: the store failed.
        """
        data = entry.encode()
        if len(data) > MAX_ENTRY_BYTES:  # readers refuse it: never write one
            raise ConfigurationError(
                f"a key-vault entry is at most {MAX_ENTRY_BYTES // 1024} KiB: the encryption "
                "context is too large for a key vault"
            )
        self._mark()
        if self._store.create(entry.name, data, durable=durable):
            return True
        held = self._store.read(entry.name)
        if held is not None:
            try:
                if VaultEntry.decode(held, entry.name).wrapped == entry.wrapped:
                    return False
            except FormatError:
                pass
        raise FormatError(f"the key vault {self._uri} already holds another {entry.name}")

    def sync(self) -> None:
        """Make the entries ``put(..., durable=False)`` so far durable."""
        self._store.sync()

    def record(self, key_id: bytes, wrapped: bytes, master_key: str, master_key_version: str,
               context: Mapping[str, str]) -> VaultEntry:  # fmt: skip
        """Write generation 1 of a new data key (the writer's entry) and return it."""
        entry = VaultEntry(key_id, 1, wrapped, master_key, master_key_version, context)
        self.put(entry)
        self._remember(key_id, wrapped)
        return entry

    def remove(self, key_id: bytes) -> int:
        """Delete every generation of ``key_id`` (``kmsbeam vault gc --yes``): values under it
        can never be decrypted again. Returns how many entries were deleted."""
        gens = self.generations(key_id)
        for gen in gens:
            self._store.delete(entry_name(key_id, gen))
        with self._resolved_lock:
            self._resolved.pop((self._name, key_id), None)
        return len(gens)

    # -- reading ---------------------------------------------------------------------------

    def generations(self, key_id: bytes) -> list[int]:
        """The generations the vault holds for ``key_id``, newest first."""
        gens = []
        for name in self._store.list(key_id.hex() + "/"):
            parsed = parse_entry_name(name)
            if parsed is not None and parsed[0] == key_id:
                gens.append(parsed[1])
        return sorted(gens, reverse=True)

    def read(self, key_id: bytes, generation: int) -> VaultEntry | None:
        """One entry, None if absent.

        Raises:
            FormatError: the file is not a valid entry of that name.
        """
        name = entry_name(key_id, generation)
        data = self._store.read(name)
        return None if data is None else VaultEntry.decode(data, name)

    def newest(self, key_id: bytes, generations: list[int] | None = None) -> VaultEntry | None:
        """The newest valid entry of ``key_id`` (not unwrapped: see ``resolve``), among
        ``generations`` when a listing gave them already (newest first)."""
        for gen in self.generations(key_id) if generations is None else generations:
            try:
                entry = self.read(key_id, gen)
            except FormatError:
                continue
            if entry is not None:
                return entry
        return None

    def key_ids(self) -> dict[bytes, list[int]]:
        """Every key id in the vault with its generations (newest first); other names (the
        marker, temporary files) are skipped."""
        out: dict[bytes, list[int]] = {}
        for name in self._store.list(""):
            parsed = parse_entry_name(name)
            if parsed is not None:
                out.setdefault(parsed[0], []).append(parsed[1])
        for gens in out.values():
            gens.sort(reverse=True)
        return out

    def is_vault(self) -> bool:
        """Whether the prefix holds a vault marker (``vault`` commands refuse other prefixes)."""
        data = self._store.read(MARKER)
        return data is not None and _marker_ok(data)

    def resolve(
        self, key_id: bytes, unwrap: Callable[[bytes], tuple[C, float]], *, fresh: bool = False
    ) -> tuple[C, float]:
        """The data key named ``key_id``: ``unwrap(wrapped)`` of the newest entry whose key
        has commitment ``key_id`` (``unwrap`` gives what has a ``commitment`` and an expiry, as
        ``Unwrapping.entry`` does). One lookup per key id and process; later calls go straight
        to ``unwrap`` of the key that worked (``fresh``: read the vault again, as a check must).

        Raises:
            VaultEntryMissingError: no entry for ``key_id``. VaultEntryError: no valid one.
            AuthenticationError: no entry unwraps to a key with commitment ``key_id``.
            KeyNotFoundError: no entry did, and one was under a key the source does not have
                (older generations are tried first).
            KeyDisabledError, other KeySourceError: as ``unwrap`` raises them (a disabled key
                is a revocation: the search stops).
        """
        with self._resolved_lock:
            known = None if fresh else self._resolved.get((self._name, key_id))
        if known is not None:
            try:
                return self._checked(key_id, unwrap(known))
            except (AuthenticationError, KeyNotFoundError):  # e.g. its old master key retired
                pass  # (a disabled one too: the newest generation may be under another key)
        gens = self.generations(key_id)
        if not gens:
            raise VaultEntryMissingError(key_id, self._uri)
        failure: Exception = VaultEntryError(key_id, self._uri)
        for gen in gens:
            try:
                entry = self.read(key_id, gen)
            except FormatError:
                continue
            if entry is None:
                continue
            try:
                result = self._checked(key_id, unwrap(entry.wrapped))
            except (AuthenticationError, KeyNotFoundError) as exc:
                # a forged or swapped entry, or one under a key this source does not have: try
                # older ones. A disabled key is a revocation: it stops the search (the job fails)
                if isinstance(exc, KeyDisabledError):
                    raise
                if not isinstance(failure, KeyNotFoundError):  # the first key-source answer wins
                    failure = exc
                continue
            self._remember(key_id, entry.wrapped)
            return result
        raise failure

    @staticmethod
    def _checked(key_id: bytes, result: tuple[C, float]) -> tuple[C, float]:
        if not hmac.compare_digest(result[0].commitment, key_id):
            raise AuthenticationError()
        return result

    def _remember(self, key_id: bytes, wrapped: bytes) -> None:
        with self._resolved_lock:
            if len(self._resolved) >= _MAX_RESOLVED:
                self._resolved.clear()
            self._resolved[(self._name, key_id)] = wrapped

    @classmethod
    def forget(cls) -> None:
        """Forget every resolved key id (tests; after a rotation in this process)."""
        with cls._resolved_lock:
            cls._resolved.clear()


def check_vault_uri(uri: object) -> str:
    """``uri`` if it can name a key vault: a non-empty path or URI prefix with no credentials
    (``user@host``), query or fragment (which could hold them); errors never repeat it.

    Raises:
        ConfigurationError: it cannot. TypeError: not a string.
    """
    if not isinstance(uri, str):
        raise TypeError("a key vault is a path or URI prefix string such as 'oss://bucket/_keys/'")
    if not uri.strip():
        raise ConfigurationError("a key vault is a path or URI prefix, such as oss://bucket/_keys/")
    if "://" in uri:
        if "@" in uri.split("://", 1)[1].split("/", 1)[0]:
            raise ConfigurationError("a key vault URI must not carry credentials (user@host)")
        if "?" in uri or "#" in uri:
            raise ConfigurationError("a key vault URI is a prefix without a query or fragment "
                                     "(credentials come from the filesystem's own configuration)")  # fmt: skip
    return uri


def _marker_ok(data: bytes) -> bool:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("format") == "kmsbeam.vault.v1"


def key_id_of(text: str) -> bytes:
    """A key id from its 32 hex digits (``--only-key``, CLI output).

    Raises:
        FormatError: not 32 hex digits.
    """
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raw = b""
    if len(raw) != 16 or raw.hex() != text.lower():
        raise FormatError("a key id is 32 hex digits")
    return raw
