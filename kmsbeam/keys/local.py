"""The ``local:`` key source: data keys from the embedded keystore (``$KMSBEAM_HOME``).

The KMS engine runs in-process over ``keystore.db`` in the keystore home. Wrapped keys are
``KIND_LOCAL || CiphertextBlob`` (see ``kmsbeam.kms.KmsEngine`` for the blob); the blob holds
the base64 text of the data key, as Alibaba Cloud KMS does, but callers only see raw bytes.
A wrapped key names its master key version by the blob's first 36 bytes, the KeyVersionId
(``wrapped_key_version``; ``kmsbeam.kms.wrapped_blob_version``).

Caveats: the keystore is a file on one machine. A pipeline whose workers run elsewhere must
ship the keystore to them or use a KMS; a worker never creates keys on its own (unpickled and
``open_key_source`` sources open with ``create=False``).
"""

from __future__ import annotations

import os
import threading
import weakref
from collections.abc import Mapping
from pathlib import Path

from kmsbeam import process
from kmsbeam.errors import AuthenticationError, ConfigurationError, KeyNotFoundError
from kmsbeam.keys.source import KIND_LOCAL, DataKey, KeyInfo, enabled_primary_version
from kmsbeam.kms import (
    KEYSTORE_FILENAME,
    KeyMetadata,
    KeyStore,
    KmsEngine,
    data_key_from_base64,
    wrapped_blob_version,
)
from kmsbeam.keys.uri import KeyUri, parse_key_uri

__all__ = ["LocalKeySource", "keystore_home", "shared_engine", "wrapped_key_version"]

def keystore_home() -> Path:
    """The default keystore directory: ``$KMSBEAM_HOME``, else ``~/.kmsbeam``."""
    env = os.environ.get("KMSBEAM_HOME")
    return Path(env).expanduser().absolute() if env else Path.home() / ".kmsbeam"


def shared_engine(home: Path, *, create: bool = False) -> KmsEngine:
    """This process's engine for the keystore in ``home`` (one SQLite connection each; a
    forked child opens its own: ``kmsbeam.process``).

    Raises:
        KeyNotFoundError: there is no keystore in ``home`` and ``create`` is false.
    """
    home = Path(home).expanduser().absolute()
    engines = process.shared("keys.local.engines", None, _Engines)
    with engines.lock:
        engine = engines.by_home.get(str(home))
        if engine is None:
            if not create and not (home / KEYSTORE_FILENAME).exists():
                raise KeyNotFoundError(
                    f"there is no kmsbeam keystore at {home / KEYSTORE_FILENAME}; create a key "
                    "with `kmsbeam keys create --alias NAME` or set KMSBEAM_HOME"
                )
            engine = engines.by_home[str(home)] = KmsEngine(KeyStore(home, create=create))
        return engine


class _Engines:
    """This process's engines by home, while a source uses them (then reopened, re-checked)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.by_home: weakref.WeakValueDictionary[str, KmsEngine] = weakref.WeakValueDictionary()


def wrapped_key_version(wrapped: bytes) -> str:
    """The key version id a ``local:`` wrapped key names, read without a call.

    Raises:
        MalformedValueError: not a wrapped key of kind 0x01, or too short to name a version.
    """
    return wrapped_blob_version(wrapped, KIND_LOCAL)


def _invalid() -> AuthenticationError:
    return AuthenticationError(code="InvalidCiphertext")


class LocalKeySource:
    """A ``KeySource`` over one key of the embedded keystore.

    Args:
        uri: ``local:alias/NAME`` or ``local:KEYID`` (or its parsed ``KeyUri``).
        home: the keystore directory; default ``keystore_home()``.
        create: for an alias URI, create the key and alias if the alias does not exist yet
            (``created`` then says whether this call created it, for the caller's notice).
        engine: an engine to use instead of this process's shared one for ``home``.

    Raises:
        KeyNotFoundError: no such key or alias (or no keystore file) and nothing to create;
            the message says what to do. A failed lookup creates no file.

    Pickling carries only the URI and the home directory; the copy re-opens the keystore with
    ``create=False``, so a worker can use the key but never invents a new one.
    """

    def __init__(
        self,
        uri: str | KeyUri,
        *,
        home: Path | None = None,
        create: bool = False,
        engine: KmsEngine | None = None,
    ) -> None:
        parsed = uri if isinstance(uri, KeyUri) else parse_key_uri(uri)
        if parsed.scheme != "local":
            raise ConfigurationError(f"LocalKeySource takes local: key URIs, not {parsed.scheme}:")
        self._uri = f"local:{parsed.key}"
        self._key = parsed.key
        if engine is not None:
            self._engine = engine
            self._home = Path(home) if home is not None else engine.store.directory
        else:
            self._home = Path(home).expanduser().absolute() if home else keystore_home()
            if not create and not (self._home / KEYSTORE_FILENAME).exists():
                raise self._not_found(None)
            self._engine = shared_engine(self._home, create=create)
        self.created = False
        if create and parsed.is_alias:
            meta, self.created = self._engine.get_or_create_alias(self._key)
        else:
            meta = self._lookup()
        self._key_id = meta.key_id

    def _lookup(self) -> KeyMetadata:
        try:
            return self._engine.describe_key(self._key)
        except KeyNotFoundError as exc:
            if type(exc) is not KeyNotFoundError:
                raise
            raise self._not_found(exc.code) from exc

    def _not_found(self, code: str | None) -> KeyNotFoundError:
        if self._key.startswith("alias/"):
            todo = f"create it with `kmsbeam keys create --alias {self._key[len('alias/') :]}`"
            code = code or "Forbidden.AliasNotFound"
        else:
            todo = "list the keys with `kmsbeam keys list`"
            code = code or "Forbidden.KeyNotFound"
        where = self._home / KEYSTORE_FILENAME
        return KeyNotFoundError(f"no key {self._key} in the keystore at {where}; {todo}", code=code)

    @property
    def uri(self) -> str:
        return self._uri

    @property
    def kind(self) -> int:
        return KIND_LOCAL

    @property
    def home(self) -> Path:
        return self._home

    @property
    def key_id(self) -> str:
        """The KeyId the URI named when the source was opened."""
        return self._key_id

    def __repr__(self) -> str:
        return f"LocalKeySource({self._uri!r}, home={str(self._home)!r})"

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (_reopen, (self._uri, str(self._home)))

    def generate_data_key(self, context: Mapping[str, str] | None = None) -> DataKey:
        result = self._engine.generate_data_key(self._key, 32, context)
        return DataKey(
            plaintext=result.plaintext,
            wrapped=bytes([KIND_LOCAL]) + result.ciphertext_blob,
            key_id=result.key_id,
            key_version=result.key_version_id,
        )

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Unwrap a wrapped key of any key in this keystore (the blob names its key)."""
        return data_key_from_base64(self._engine.decrypt(self._blob(wrapped), context).plaintext)

    def rewrap(
        self,
        wrapped: bytes,
        context: Mapping[str, str] | None = None,
        new_context: Mapping[str, str] | None = None,
    ) -> bytes:
        """Re-wrap under this source's key in the engine (the DEK never comes out).

        ``new_context=None`` keeps ``context``.
        """
        destination = context if new_context is None else new_context
        result = self._engine.re_encrypt(self._blob(wrapped), self._key, context, destination)
        return bytes([KIND_LOCAL]) + result.ciphertext_blob

    def wrapped_key_version(self, wrapped: bytes) -> str:
        """The key version id ``wrapped`` names (any key of the keystore); no engine call."""
        return wrapped_key_version(wrapped)

    def current_version(self) -> str:
        """The key's primary version id, if it is Enabled (``KeySource.current_version``)."""
        meta = self._lookup()
        return enabled_primary_version(self._uri, meta.key_state, meta.primary_key_version)

    def key_versions(self) -> tuple[str, ...]:
        """Every version id of this key, oldest first."""
        return tuple(v.key_version_id for v in self._engine.list_key_versions(self._key))

    def describe_key(self) -> KeyInfo:
        meta = self._engine.describe_key(self._key)
        aliases = tuple(a.alias_name for a in self._engine.list_aliases_by_key_id(meta.key_id))
        return KeyInfo(
            key_id=meta.key_id,
            state=meta.key_state,
            primary_version=meta.primary_key_version,
            description=meta.description,
            aliases=aliases,
            arn=meta.arn,
            created=meta.creation_date,
        )

    @staticmethod
    def _blob(wrapped: bytes) -> bytes:
        if not isinstance(wrapped, (bytes, bytearray, memoryview)):
            raise TypeError("a wrapped key is bytes")
        wrapped = bytes(wrapped)
        if not wrapped or wrapped[0] != KIND_LOCAL:
            raise _invalid()
        return wrapped[1:]


def _reopen(uri: str, home: str) -> LocalKeySource:
    return LocalKeySource(uri, home=Path(home))
