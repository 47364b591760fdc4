"""Strict decryption: refuse values whose data key is wrapped under a master key not required.

The AWS Encryption SDK's lesson: a reader that accepts whatever key the ciphertext names
decrypts data an attacker (or a mistake) put under another key, and reports the wrong key.
``KeyRequirement(["local:alias/pii"])`` names the master keys a job accepts; its
``checked(cache)`` wraps the data-key cache the decryptors use (``FieldDecryptor``,
``RecordDecryptor``, ``CellDecryptor``: ``cache=``) so that each wrapped key is checked
*before* any lookup or key-source call:

- every wrapped key names its master key version without a call
  (``kmsbeam.keys.registry.wrapped_key_version``: the KeyVersionId of a KMS blob, ``TOKEN/KEK/ID``
  of a PKCS#11 blob);
- the required keys' versions are learnt once per process and key (``ListKeyVersions`` for a
  KMS key, the KEK itself for PKCS#11: ``KeySource.key_versions``);
- a value under any other version raises ``KeyNotAllowedError`` (a ``RecordError``: a dead
  letter with the stable reason ``key not allowed ...``, or the job's failure without dead
  letters). No Decrypt call is made for it and nothing is cached.

``KeyUse`` (the same wrapper with no requirement) records which versions unwrapped data keys,
so summaries and manifests name the versions actually used (the Beam layer reports them as
metrics, ``kmsbeam.key_versions/<version>``).

Rotation's side of strict mode (``RequiredRewrapSource``, ``strict_rewrap``) lives in
``kmsbeam.keys._strict_rewrap`` and is public from here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NoReturn

from kmsbeam import process
from kmsbeam.keys.cache import DataKeyCache, shared_cache
from kmsbeam.formats.envelope import KeyCipher, parse
from kmsbeam.errors import ConfigurationError, KmsBeamError, RecordError
from kmsbeam.keys.source import KeySource
from kmsbeam.formats.paths import FieldPath
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.keys.trust import with_key
from kmsbeam.keys._strict_rewrap import RequiredRewrapSource, strict_rewrap
from kmsbeam.keys.uri import KeyUri, parse_key_uri

__all__ = ["KeyNotAllowedError", "KeyRequirement", "KeyUse", "RequiredRewrapSource", "qualify_key", "strict_rewrap"]

_NOT_ALLOWED = ("key not allowed: the value's data key is wrapped under a master key that "
                "--require-key (require_keys=) does not list")  # fmt: skip


class KeyNotAllowedError(RecordError):
    """A value's data key is wrapped under a master key the reader does not require (no
    detail: the stable dead-letter reason ``key not allowed ...``)."""

    def __init__(self, message: str = _NOT_ALLOWED, *, code: str | None = None) -> None:
        super().__init__(message, code=code)


def qualify_key(item: str, base: str) -> str:
    """A ``--require-key`` item as a key URI: a URI as given, or a bare key id / ``alias/NAME``
    (a KEK label for PKCS#11) in the key source of ``base`` (the job's key URI)."""
    item = item.strip()
    if ":" in item.split("/", 1)[0]:
        parse_key_uri(item)
        return item
    at = parse_key_uri(base)
    if at.scheme == "local":
        uri = f"local:{item}"
    else:
        hint = KeyUri(at.scheme, at.location, item, (("object", item),) if at.scheme == "pkcs11" else ())
        uri = with_key(at, hint)
    parse_key_uri(uri)
    return uri


def _versions_of(uri: str) -> frozenset[str]:
    from kmsbeam.keys.registry import keystore_home, open_key_source

    slot = f"{uri}\0{keystore_home()}" if uri.startswith("local:") else uri
    return process.shared("keys.versions", slot, lambda: frozenset(open_key_source(uri).key_versions()))


class KeyRequirement:
    """The master keys a reader accepts (picklable: key URIs only).

    Args:
        keys: key URIs (the caller's own; see ``qualify_key`` for bare key ids).

    Raises:
        ConfigurationError: no key, or a malformed URI.
    """

    def __init__(self, keys: Iterable[str] | str) -> None:
        uris = (keys,) if isinstance(keys, str) else tuple(keys)
        if not uris:
            raise ConfigurationError("name at least one required key (--require-key KEYID)")
        for uri in uris:
            parse_key_uri(uri)
        self.keys: tuple[str, ...] = tuple(dict.fromkeys(uris))

    def __repr__(self) -> str:
        return f"KeyRequirement({list(self.keys)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, KeyRequirement) and other.keys == self.keys

    def __hash__(self) -> int:
        return hash(self.keys)

    def versions(self) -> dict[str, frozenset[str]]:
        """{required key URI: its version names}, learnt once per process."""
        return {uri: _versions_of(uri) for uri in self.keys}

    def allowed(self) -> frozenset[str]:
        return frozenset().union(*self.versions().values())

    def check(self, wrapped: bytes) -> str:
        """The version ``wrapped`` names, if required; else ``KeyNotAllowedError``."""
        version = _version(wrapped)
        if version not in self.allowed():
            raise KeyNotAllowedError()
        return version

    def check_record(self, record: Mapping[str, Any], paths: Sequence[FieldPath], fmt: int,
                     also: str | None = None) -> None:  # fmt: skip
        """Check the values at ``paths`` (``None`` skipped) before a rotation touches them;
        ``also``: a version accepted besides the required ones (the rotation's target: values
        already under it are left as they are).

        Raises:
            KeyNotAllowedError: with ``field`` set to the first refused value's path.
        """
        for path in paths:
            value = path.get(record)
            if value is None:
                continue
            try:
                self.check_value(value, fmt, also)
            except KeyNotAllowedError as exc:
                exc.field = path.name
                raise

    def check_value(self, value: Any, fmt: int, also: str | None = None) -> None:
        """``check_record`` for one value (a value that does not parse is left to the caller)."""
        try:
            version = wrapped_key_version(parse(value, fmt).wrapped)
        except KmsBeamError:
            return
        if version not in self.allowed() and version != also:
            raise KeyNotAllowedError()

    def checked(self, cache: DataKeyCache | None = None) -> KeyUse:
        """A cache for the decryptors' ``cache=`` that refuses other keys before any call."""
        return KeyUse(cache, self)


def _version(wrapped: bytes) -> str:
    try:
        return wrapped_key_version(bytes(wrapped))
    except KmsBeamError:
        raise KeyNotAllowedError() from None


class KeyUse(DataKeyCache):
    """A data-key cache in front of another (``entry``/``cipher``/``now`` delegate to it) that
    checks each wrapped key against a ``KeyRequirement`` (if any) before the lookup and records
    the versions that unwrapped. Thread-safe; never pickles (like the cache)."""

    def __init__(self, cache: DataKeyCache | None = None, requirement: KeyRequirement | None = None) -> None:
        super().__init__(1)  # holds nothing itself: every lookup goes to ``cache``
        self._cache = cache if cache is not None else shared_cache()
        self.requirement = requirement
        self._lock = threading.Lock()
        self._used: set[str] = set()
        self._new: set[str] = set()

    def __repr__(self) -> str:
        return f"KeyUse({self.requirement!r}, versions={len(self.used)})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyUse holds a data-key cache and never pickles")

    def now(self) -> float:
        return self._cache.now()

    def clear(self) -> None:
        self._cache.clear()

    def __len__(self) -> int:
        return len(self._cache)

    def entry(self, source: KeySource, wrapped: bytes, context: Mapping[str, str] | None = None, *,
              context_key: bytes | None = None,
              on_call: Callable[[], None] | None = None) -> tuple[KeyCipher, float]:  # fmt: skip
        """``DataKeyCache.entry`` after the check (a refused key makes no call, caches nothing)."""
        if self.requirement is not None:
            version = self.requirement.check(wrapped)
        else:
            version = None
        found = self._cache.entry(source, wrapped, context, context_key=context_key, on_call=on_call)
        if version is None:
            try:
                version = wrapped_key_version(bytes(wrapped))
            except KmsBeamError:
                return found
        with self._lock:
            if version not in self._used:
                self._used.add(version)
                self._new.add(version)
        return found

    def cipher(self, source: KeySource, wrapped: bytes, context: Mapping[str, str] | None = None, *,
               context_key: bytes | None = None, on_call: Callable[[], None] | None = None) -> KeyCipher:  # fmt: skip
        return self.entry(source, wrapped, context, context_key=context_key, on_call=on_call)[0]

    @property
    def used(self) -> frozenset[str]:
        """Every version that unwrapped a data key through this object."""
        with self._lock:
            return frozenset(self._used)

    def take_new(self) -> frozenset[str]:
        """The versions first used since the last call (for metrics: each reported once)."""
        with self._lock:
            new, self._new = frozenset(self._new), set()
        return new

    def forget_reported(self) -> None:
        """Report every used version again at the next ``take_new`` (a new bundle)."""
        with self._lock:
            self._new = set(self._used)
