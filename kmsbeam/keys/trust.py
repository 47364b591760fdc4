"""Trusted key sources: data never picks a server, a module or a PIN.

A key URI found inside data (a dataset's ``_kmsbeam.json``, an object header, an export or
rotation manifest, a PME key text) is only a *hint*. ``TrustedKeySources`` holds the key
sources the caller configured -- key URIs from the command line or API arguments, the
environment variable ``KMSBEAM_KEY_SOURCES`` (comma-separated key URIs) and the file named by
``KMSBEAM_KEY_SOURCES_FILE`` (one key URI per line, ``#`` comments) -- and resolves each hint
against them:

==================  =========================================================================
hint                opened as
==================  =========================================================================
``local:KEY``       the caller's own embedded keystore (``$KMSBEAM_HOME``): no connection and
                    no code loading, so always allowed
``kms-emulator://`` only when a configured URI names the same endpoint (host and port); the
                    hint's key on the configured URI
``alibaba-kms://``  only when a configured URI names the same region, ``endpoint`` and ``ca``;
                    the hint's key on the configured URI
``alibaba-kms-``    only when a configured URI names the same gateway host (and port) and
``instance://``     ``ca``; the hint's key on the configured URI
``pkcs11:``         only when a configured ``pkcs11:`` URI names the same token; the hint's
                    KEK label on the *configured* ``module-path``, ``pin-source`` and slot.
                    A module path or PIN source written in data is never used, opened or
                    stat'ed
anything else       ``UntrustedKeySourceError``: one sentence saying what to configure, which
                    never repeats the data's URI (at most its scheme)
==================  =========================================================================

The resolved URI is the caller's (configured) URI with the hint's key name: transforms get that
string, so workers open only sources the caller named.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlencode

from kmsbeam.errors import ConfigurationError
from kmsbeam.keys.source import KeySource
from kmsbeam.keys.uri import SCHEMES, KeyUri, parse_key_uri

__all__ = [
    "KEY_SOURCES_ENV",
    "KEY_SOURCES_FILE_ENV",
    "TrustedKeySources",
    "UntrustedKeySourceError",
    "with_key",
]

KEY_SOURCES_ENV = "KMSBEAM_KEY_SOURCES"
KEY_SOURCES_FILE_ENV = "KMSBEAM_KEY_SOURCES_FILE"
_PKCS11_PATH = ("token", "object", "id")


class UntrustedKeySourceError(ConfigurationError):
    """Data names a key source the caller did not configure (the message never repeats it)."""

    def __init__(self, scheme: str = "") -> None:
        article = "an" if scheme[:1] in ("a", "e", "i", "o", "u") else "a"
        kind = f"{article} {scheme} key source" if scheme in SCHEMES else "a key source"
        super().__init__(
            f"the data names {kind} that this job was not configured with, and kmsbeam never "
            "opens a key source because data names it: pass --key (or key=) with that key "
            f"source's URI, or list it in {KEY_SOURCES_ENV} (comma-separated key URIs)"
        )


def _endpoint(uri: KeyUri) -> tuple[str, ...]:
    """What makes two URIs of one scheme the same key source (the key name aside)."""
    if uri.scheme == "kms-emulator":
        return (uri.scheme, uri.location.lower())
    if uri.scheme == "alibaba-kms-instance":
        return (uri.scheme, uri.location.lower(), uri.param("ca") or "")
    if uri.scheme == "alibaba-kms":
        return (uri.scheme, uri.location, uri.param("endpoint") or "", uri.param("ca") or "")
    if uri.scheme == "pkcs11":
        return (uri.scheme, uri.location)  # the token label
    return (uri.scheme,)


def with_key(configured: KeyUri, hint: KeyUri) -> str:
    """The configured URI naming the hint's key (and nothing else from the hint)."""
    if configured.scheme == "pkcs11":
        names = [("token", configured.location)]
        names += [(n, v) for n, v in hint.params if n in ("object", "id")]
        rest = [(n, v) for n, v in configured.params if n not in _PKCS11_PATH]
        path = ";".join(f"{n}={quote(v, safe='')}" for n, v in names)
        return f"pkcs11:{path}" + (f"?{urlencode(rest)}" if rest else "")
    query = f"?{urlencode(configured.params)}" if configured.params else ""
    return f"{configured.scheme}://{configured.location}/{hint.key}{query}"


@dataclass(frozen=True)
class TrustedKeySources:
    """The key sources the caller configured; hints found in data resolve against them.

    Build one with ``TrustedKeySources.configured(*uris)``, which adds the environment's
    (``KMSBEAM_KEY_SOURCES``, ``KMSBEAM_KEY_SOURCES_FILE``). Picklable (URI strings only).

    Attributes:
        uris: the configured key URIs (checked when constructed).
    """

    uris: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        uris = tuple(dict.fromkeys(u for u in self.uris if u))
        for uri in uris:
            parse_key_uri(uri)  # the caller's own URI: its error may name it
        object.__setattr__(self, "uris", uris)

    @classmethod
    def configured(
        cls, *uris: str | None, environ: Mapping[str, str] | None = None
    ) -> TrustedKeySources:
        """``uris`` (``None`` skipped) plus the key sources named by the environment.

        Raises:
            ConfigurationError: a configured URI is malformed, or the file cannot be read.
        """
        env = os.environ if environ is None else environ
        found = [u for u in uris if u]
        found += [u.strip() for u in env.get(KEY_SOURCES_ENV, "").split(",") if u.strip()]
        name = env.get(KEY_SOURCES_FILE_ENV, "")
        if name:
            try:
                text = Path(name).read_text(encoding="utf-8")
            except OSError as exc:
                raise ConfigurationError(
                    f"cannot read {KEY_SOURCES_FILE_ENV} ({exc.strerror}); give a file with "
                    "one key URI per line"
                ) from None
            lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
            found += [line for line in lines if line]
        return cls(tuple(found))

    @classmethod
    def of(cls, value: TrustedKeySources | Iterable[str] | None) -> TrustedKeySources:
        """``value`` as is, a sequence of URIs plus the environment's, or the environment's."""
        if isinstance(value, TrustedKeySources):
            return value
        if isinstance(value, str):
            return cls.configured(value)
        return cls.configured(*(value or ()))

    def with_uris(self, *uris: str | None) -> TrustedKeySources:
        """These sources plus ``uris`` (``None`` skipped)."""
        return TrustedKeySources(self.uris + tuple(u for u in uris if u))

    def __repr__(self) -> str:
        return f"TrustedKeySources({len(self.uris)} key URIs)"

    def resolve(self, hint: str | None) -> str:
        """The key URI to open for a key URI found in data (see the module docstring).

        Raises:
            UntrustedKeySourceError: the hint names no configured key source (or is malformed).
        """
        if not isinstance(hint, str) or not hint:
            raise UntrustedKeySourceError()
        scheme = hint.partition(":")[0]
        try:
            parsed = parse_key_uri(hint)
        except ConfigurationError:
            raise UntrustedKeySourceError(scheme) from None
        if parsed.scheme == "local":
            return f"local:{parsed.key}"
        want = _endpoint(parsed)
        for uri in self.uris:
            configured = parse_key_uri(uri)
            if _endpoint(configured) == want:
                return uri if uri == hint else with_key(configured, parsed)
        raise UntrustedKeySourceError(parsed.scheme)

    def resolve_all(self, hints: Iterable[str]) -> dict[str, str]:
        """``{hint: resolved URI}`` for each distinct hint."""
        return {h: self.resolve(h) for h in dict.fromkeys(hints)}

    def open(self, hint: str | None) -> KeySource:
        """The key source for a key URI found in data, opened only once resolved."""
        from kmsbeam.keys.registry import open_key_source

        return open_key_source(self.resolve(hint), create=False)
