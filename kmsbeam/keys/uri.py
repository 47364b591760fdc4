"""Key URIs: one picklable string names a key and the key source that holds it.

=====================================================  =====================================
URI                                                    key source
=====================================================  =====================================
``local:alias/NAME`` or ``local:KEYID``                embedded keystore (``$KMSBEAM_HOME``)
``kms-emulator://HOST:PORT/alias/NAME`` (or key id)    kmsbeam KMS emulator over HTTP
``alibaba-kms://REGION/alias/NAME`` (or key id)        Alibaba Cloud KMS, ``?endpoint=&ca=``
``alibaba-kms-instance://HOST/alias/NAME?ca=PATH``     a KMS 3.0 instance gateway (ClientKey)
``pkcs11:token=LABEL;object=KEK?module-path=...``      a PKCS#11 HSM (RFC 7512 style)
=====================================================  =====================================

Secrets never go in a key URI: credentials come from the key source's own chain (environment,
credentials file, role) and a PIN from ``pin-source=env:VAR`` or ``file:PATH``. A URI that
carries something that looks like a secret is refused without echoing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

from kmsbeam.errors import ConfigurationError

__all__ = ["DEFAULT_KEY_URI", "KeyUri", "add_scheme", "parse_key_uri"]

#: the zero-setup default of the CLI: an embedded-keystore key created on first use
DEFAULT_KEY_URI = "local:alias/kmsbeam-default"

SCHEMES = ("local", "kms-emulator", "alibaba-kms", "alibaba-kms-instance", "pkcs11")  # the built-in ones
_SCHEME_NAME = re.compile(r"^[a-z][a-z0-9\-]{0,31}$")
_KEY_NAME = re.compile(r"^(alias/[A-Za-z0-9_/\-]{1,255}|[A-Za-z0-9][A-Za-z0-9\-]{0,127})$")
_SECRET_NAMES = ("secret", "password", "passwd", "pin-value", "pin", "access-key", "access_key")
_QUERY_KEYS: dict[str, set[str]] = {  # every scheme parse_key_uri takes: its query parameters
    "local": set(),
    "kms-emulator": {"region"},
    "alibaba-kms": {"endpoint", "ca"},
    "alibaba-kms-instance": {"ca"},
    "pkcs11": {"module-path", "pin-source", "slot-id"},
}


@dataclass(frozen=True)
class KeyUri:
    """A parsed key URI. ``str(uri)`` gives the canonical form back.

    Attributes:
        scheme: one of ``local``, ``kms-emulator``, ``alibaba-kms``, ``pkcs11``.
        location: host:port for the emulator, the region for Alibaba KMS, "" otherwise.
        key: ``alias/NAME`` or a key id (for PKCS#11, the object label).
        params: the remaining attributes (query parameters, PKCS#11 path attributes).
    """

    scheme: str
    location: str
    key: str
    params: tuple[tuple[str, str], ...] = field(default=())
    raw: str = field(default="", compare=False)

    @property
    def is_alias(self) -> bool:
        return self.key.startswith("alias/")

    def param(self, name: str, default: str | None = None) -> str | None:
        for k, v in self.params:
            if k == name:
                return v
        return default

    def __str__(self) -> str:
        return self.raw or self.key


def add_scheme(scheme: str, params: Iterable[str] = ()) -> None:
    """Parse ``scheme`` URIs from now on, as ``SCHEME://LOCATION/KEY?PARAMS`` with the query
    parameters ``params`` (``kmsbeam.keys.registry.register_scheme`` calls this; a known
    scheme keeps its syntax).

    Raises:
        ConfigurationError: not a scheme name (lowercase letters, digits, ``-``).
    """
    if not isinstance(scheme, str) or not _SCHEME_NAME.match(scheme):
        raise ConfigurationError("a key URI scheme is lowercase letters, digits and '-'")
    _QUERY_KEYS.setdefault(scheme, set(params))  # secret-looking names are refused when parsing


def _a(scheme: str) -> str:
    """``a pkcs11``, ``an alibaba-kms``: the article for a scheme in a message."""
    return f"{'an' if scheme[:1] in 'aeiou' else 'a'} {scheme}"


def _refuse_secrets(uri: str) -> None:
    names = re.findall(r"[?&;:]([A-Za-z0-9_\-]+)=", uri)
    secret_named = any(n.lower() in _SECRET_NAMES or "secret" in n.lower() for n in names)
    if secret_named or re.match(r"^[a-z0-9\-]+://[^/?]*@", uri):
        raise ConfigurationError(
            "key URIs must not carry credentials, PINs or other secrets; use the key source's "
            "credential chain or pin-source=env:VAR instead"
        )


def _check_key(key: str, uri_scheme: str) -> str:
    if not _KEY_NAME.match(key):
        raise ConfigurationError(
            f"bad key name in {_a(uri_scheme)} key URI: expected alias/NAME or a key id "
            "(letters, digits, '-', '_' and '/')"
        )
    return key


def parse_key_uri(uri: str) -> KeyUri:
    """Parse and validate a key URI.

    Raises:
        ConfigurationError: the URI is malformed, of an unknown scheme, or carries a secret.
    """
    if not isinstance(uri, str) or not uri:
        raise ConfigurationError("a key URI must be a non-empty string such as local:alias/pii")
    _refuse_secrets(uri)
    scheme, sep, rest = uri.partition(":")
    if not sep or scheme not in _QUERY_KEYS:
        raise ConfigurationError(
            f"unknown key URI scheme {scheme!r}: use one of " + ", ".join(f"{s}:" for s in _QUERY_KEYS)
        )
    if scheme == "local":
        if rest.startswith("//") or "?" in rest:
            raise ConfigurationError("local key URIs look like local:alias/NAME or local:KEYID")
        return KeyUri("local", "", _check_key(rest, scheme), (), uri)
    if scheme == "pkcs11":
        return _parse_pkcs11(uri, rest)
    if not rest.startswith("//"):
        raise ConfigurationError(f"{scheme} key URIs look like {scheme}://LOCATION/alias/NAME")
    body, _, query = rest[2:].partition("?")
    location, slash, key = body.partition("/")
    if not location or not slash:
        raise ConfigurationError(f"{scheme} key URIs look like {scheme}://LOCATION/alias/NAME")
    if scheme == "kms-emulator" and not re.match(r"^[A-Za-z0-9.\-\[\]:]+:\d{1,5}$", location):
        raise ConfigurationError("kms-emulator key URIs need HOST:PORT, e.g. 127.0.0.1:9800")
    params = _query(query, scheme)
    return KeyUri(scheme, location, _check_key(key, scheme), params, uri)


def _query(query: str, scheme: str) -> tuple[tuple[str, str], ...]:
    pairs = tuple(parse_qsl(query, keep_blank_values=True)) if query else ()
    allowed = _QUERY_KEYS[scheme]
    for name, _ in pairs:
        if name not in allowed:
            raise ConfigurationError(
                f"unknown parameter {name!r} in {_a(scheme)} key URI"
                + (f" (allowed: {', '.join(sorted(allowed))})" if allowed else "")
            )
    return pairs


def _parse_pkcs11(uri: str, rest: str) -> KeyUri:
    path, _, query = rest.partition("?")
    attrs: dict[str, str] = {}
    for part in filter(None, path.split(";")):
        name, eq, value = part.partition("=")
        if not eq:
            raise ConfigurationError("pkcs11 key URIs look like pkcs11:token=LABEL;object=KEK?...")
        attrs[name] = unquote(value)
    for name in attrs:
        if name not in {"token", "object", "id", "slot-id"}:
            raise ConfigurationError(f"unknown attribute {name!r} in a pkcs11 key URI")
    if not attrs.get("token") or not (attrs.get("object") or attrs.get("id")) or "" in attrs.values():
        raise ConfigurationError("pkcs11 key URIs need token=LABEL and object=LABEL (or id=)")
    params = tuple(sorted(attrs.items())) + _query(query, "pkcs11")
    return KeyUri("pkcs11", attrs["token"], attrs.get("object", attrs.get("id", "")), params, uri)
