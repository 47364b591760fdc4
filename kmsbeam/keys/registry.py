"""Opening key sources from key URIs, with one cached source per URI per process.

Transforms hold a key URI string and call ``open_key_source`` on the worker; the cache makes
that cheap (one source, hence one connection or session, per URI per process). After
``os.fork()`` the child starts with an empty cache and never reuses the parent's sources.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from kmsbeam.errors import ConfigurationError
from kmsbeam.keys.source import KeySource
from kmsbeam.keys.local import LocalKeySource, keystore_home
from kmsbeam.keys.uri import KeyUri, parse_key_uri

__all__ = ["clear_key_source_cache", "keystore_home", "open_key_source"]

_cache: dict[tuple[str, str], KeySource] = {}
_lock = threading.Lock()


def clear_key_source_cache() -> None:
    """Forget every cached key source of this process (the sources stay usable)."""
    global _lock
    _cache.clear()
    _lock = threading.Lock()


os.register_at_fork(after_in_child=clear_key_source_cache)


def open_key_source(uri: str, *, create: bool = False) -> KeySource:
    """The key source for ``uri``, opened once per process and then served from a cache.

    Args:
        uri: a key URI (see ``kmsbeam.keys.uri``).
        create: for ``local:alias/NAME``, create the key on first use (check
            ``source.created`` to print a notice). Workers should leave it ``False``: a key
            they created would be one nobody else has. For ``alibaba-kms://`` and
            ``kms-emulator://`` it is ignored: kmsbeam never creates keys or aliases in a
            KMS (create them with the console, ``aliyun kms`` or the emulator's tools), so a
            missing alias is a ``KeyNotFoundError`` at the first call, saying so.

    A ``local:`` source is cached per URI and keystore home (``$KMSBEAM_HOME`` is read on
    every call), so changing the home opens another source. An ``alibaba-kms://`` or
    ``kms-emulator://`` source is cached per URI and opens without calling the KMS; all keys
    of one endpoint share one SDK client per process (``kmsbeam.alikms``), whose
    credentials and retry settings are read from the environment when it is first opened.

    Raises:
        ConfigurationError: a malformed URI or a key source not available in this version.
        KeyNotFoundError: a ``local:`` key does not exist (and is not to be created).
    """
    parsed = parse_key_uri(uri)
    if parsed.scheme in ("alibaba-kms", "kms-emulator", "pkcs11"):
        cache_key = (uri, "")
    elif parsed.scheme == "local":
        cache_key = (uri, str(keystore_home()))
    else:  # parse_key_uri knows no other scheme
        raise ConfigurationError(f"the {parsed.scheme} key source is not supported")
    with _lock:
        source = _cache.get(cache_key)
        if source is None:
            source = _cache[cache_key] = _open(parsed, Path(cache_key[1]), create)
        return source


def _open(parsed: KeyUri, home: Path, create: bool) -> KeySource:
    if parsed.scheme == "local":
        return LocalKeySource(parsed, home=home, create=create)
    if parsed.scheme == "pkcs11":
        # python-pkcs11 loads on first use only. Sources never create KEKs (a mistyped label
        # must not mint a new one): `kmsbeam keys create --key pkcs11:...` does.
        from kmsbeam.pkcs11 import open_pkcs11_source

        return open_pkcs11_source(parsed)
    from kmsbeam.alikms import AlibabaKmsKeySource  # the SDK loads on first use only

    return AlibabaKmsKeySource(parsed)
