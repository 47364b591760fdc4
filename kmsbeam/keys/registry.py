"""The registry of key sources: URI scheme -> opener, wrapped-key kind -> version reader.

Transforms hold a key URI string and call ``open_key_source`` on the worker; the cache makes
that cheap (one source, hence one connection or session, per URI per process, in
``kmsbeam.process``): after ``os.fork()`` the child opens its own, never the parent's.

A key source is added with ``register_scheme`` (and ``register_kind`` for a new wrapped-key
kind); ``open_key_source`` only looks the scheme up. The built-in sources are registered as
``"module:function"`` names, so the Alibaba SDK and python-pkcs11 load on first use only:

==============================  ==============================================  ============
scheme                          opener                                          kind
==============================  ==============================================  ============
``local``                       ``kmsbeam.keys.local.LocalKeySource``           0x01
``kms-emulator``, ``alibaba-kms``  ``kmsbeam.alikms.open_alikms_source``        0x02
``pkcs11``                      ``kmsbeam.pkcs11.open_pkcs11_source``           0x03
``alibaba-kms-instance``        ``kmsbeam.alikms.open_instance_source``         0x04
==============================  ==============================================  ============
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol, cast

from kmsbeam import process
from kmsbeam.errors import ConfigurationError, MalformedValueError
from kmsbeam.keys.local import LocalKeySource, keystore_home
from kmsbeam.keys.source import KIND_ALIBABA_KMS, KIND_ALIBABA_KMS_INSTANCE, KIND_LOCAL, KIND_PKCS11, KeySource
from kmsbeam.keys.uri import KeyUri, add_scheme, parse_key_uri

__all__ = [
    "Opener",
    "clear_key_source_cache",
    "keystore_home",
    "open_key_source",
    "register_kind",
    "register_scheme",
    "wrapped_key_version",
]


class Opener(Protocol):
    """Opens the key source of a parsed key URI (``create``: see ``open_key_source``)."""

    def __call__(self, uri: KeyUri, *, create: bool) -> KeySource: ...


@dataclass(frozen=True)
class _Scheme:
    opener: Opener | str  # or "module:function", imported at the first open
    cache_key: Callable[[KeyUri], str] | None  # what else tells two sources of one URI apart


_SCHEMES: dict[str, _Scheme] = {
    "local": _Scheme(LocalKeySource, lambda _uri: str(keystore_home())),
    "kms-emulator": _Scheme("kmsbeam.alikms:open_alikms_source", None),
    "alibaba-kms": _Scheme("kmsbeam.alikms:open_alikms_source", None),
    "alibaba-kms-instance": _Scheme("kmsbeam.alikms:open_instance_source", None),
    "pkcs11": _Scheme("kmsbeam.pkcs11:open_pkcs11_source", None),
}
_KINDS: dict[int, Callable[[bytes], str] | str] = {
    KIND_LOCAL: "kmsbeam.keys.local:wrapped_key_version",
    KIND_ALIBABA_KMS: "kmsbeam.alikms:wrapped_key_version",
    KIND_PKCS11: "kmsbeam.pkcs11:wrapped_key_version",
    KIND_ALIBABA_KMS_INSTANCE: "kmsbeam.alikms:instance_wrapped_key_version",
}


def register_scheme(
    scheme: str,
    opener: Opener | str,
    *,
    cache_key: Callable[[KeyUri], str] | None = None,
    params: Iterable[str] = (),
) -> None:
    """Make ``open_key_source`` open ``scheme:`` key URIs with ``opener``.

    Args:
        scheme: the URI scheme. A scheme ``parse_key_uri`` does not know yet is parsed as
            ``SCHEME://LOCATION/KEY?PARAMS`` (``KEY``: ``alias/NAME`` or a key id).
        opener: ``opener(parsed_uri, create=...)`` returns the source, or its
            ``"module:function"`` name (imported at the first open of the scheme).
        cache_key: what besides the URI selects one cached source (``local:``: the keystore
            home); default nothing.
        params: the query parameters a new scheme's URIs may carry.

    A scheme registered again is opened with the new opener from then on; sources opened
    before stay cached.

    Raises:
        ConfigurationError: a scheme name that is not lowercase letters, digits and ``-``.
    """
    add_scheme(scheme, params)
    _SCHEMES[scheme] = _Scheme(opener, cache_key)


def register_kind(kind: int, version_reader: Callable[[bytes], str] | str) -> None:
    """Make ``wrapped_key_version`` read wrapped keys of ``kind`` (the first byte) with
    ``version_reader`` (or its ``"module:function"`` name), the function behind the kind's
    ``KeySource.wrapped_key_version``."""
    if not 0 <= kind <= 255:
        raise ConfigurationError("a wrapped-key kind is one byte")
    _KINDS[kind] = version_reader


def wrapped_key_version(wrapped: bytes) -> str:
    """The master key version a wrapped key names, by the source of its kind; no call made.

    Raises:
        MalformedValueError: not a wrapped key of a registered kind, or a blob its source
            cannot parse.
    """
    reader = _KINDS.get(wrapped[0]) if wrapped else None
    if reader is None:
        raise MalformedValueError()
    return str(_resolve(reader)(wrapped))


def _resolve(target: Callable[..., object] | str) -> Callable[..., object]:
    if not isinstance(target, str):
        return target
    module, _, name = target.partition(":")
    return cast("Callable[..., object]", getattr(importlib.import_module(module), name))


def clear_key_source_cache() -> None:
    """Forget every cached key source of this process (the sources stay usable)."""
    process.discard("keys.source")


def open_key_source(uri: str, *, create: bool = False) -> KeySource:
    """The key source for ``uri``, opened once per process and then served from a cache.

    Args:
        uri: a key URI (see ``kmsbeam.keys.uri``).
        create: for ``local:alias/NAME``, create the key on first use (check
            ``source.created`` to print a notice). Workers should leave it ``False``: a key
            they created would be one nobody else has. For ``alibaba-kms://`` and
            ``kms-emulator://`` it is ignored: kmsbeam never creates keys or aliases in a
            KMS (create them with the console, ``aliyun kms`` or the emulator's tools), so a
            missing alias is a ``KeyNotFoundError`` at the first call, saying so. For
            ``pkcs11:`` it is ignored too (``kmsbeam keys create --key pkcs11:...`` creates
            KEKs). Other schemes: as their opener (``register_scheme``) says.

    A ``local:`` source is cached per URI and keystore home (``$KMSBEAM_HOME`` is read on
    every call), so changing the home opens another source. An ``alibaba-kms://`` or
    ``kms-emulator://`` source is cached per URI and opens without calling the KMS; all keys
    of one endpoint share one SDK client per process (``kmsbeam.alikms``), whose
    credentials and retry settings are read from the environment when it is first opened.

    Raises:
        ConfigurationError: a malformed URI, or no key source registered for its scheme.
        KeyNotFoundError: a ``local:`` key does not exist (and is not to be created).
    """
    parsed = parse_key_uri(uri)
    entry = _SCHEMES.get(parsed.scheme)
    if entry is None:  # parsed, but no source registered for it
        raise ConfigurationError(f"the {parsed.scheme} key source is not supported")
    cache_key = (uri, entry.cache_key(parsed) if entry.cache_key else "")
    return process.shared("keys.source", cache_key, lambda: _open(entry, parsed, create))


def _open(entry: _Scheme, parsed: KeyUri, create: bool) -> KeySource:
    opener = cast(Opener, _resolve(entry.opener))
    return opener(parsed, create=create)
