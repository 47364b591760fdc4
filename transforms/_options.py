"""Transform arguments checked at construction: key URIs, modes and encodings, paths, lifetimes.

Every public transform takes its key first, then what the key protects (fields, columns, a
destination or a path); everything else is keyword-only. A mistake here raises when the
transform is built, on the driver, never on a worker.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from typing import Any, Literal, TypeVar, get_args

from kmsbeam import ConfigurationError, DataKeyPolicy, parse_key_uri, parse_paths
from kmsbeam.keys.cache import check_ttl
from kmsbeam.keys.strict import KeyRequirement
from kmsbeam.vault import KeyVault

__all__ = ["ENCODINGS", "REWRAP_MODES", "Encoding", "RewrapMode", "cache_ttl", "choice", "key_uri",
           "names", "policy_for", "policy_with_age", "required_keys", "streaming", "vault_of"]  # fmt: skip

Encoding = Literal["text", "bytes"]  # text: URL-safe base64 (JSON, CSV); bytes: binary sinks
RewrapMode = Literal["fields", "record"]  # values of EncryptFields, or of EncryptRecords
ENCODINGS: tuple[Encoding, ...] = get_args(Encoding)
REWRAP_MODES: tuple[RewrapMode, ...] = get_args(RewrapMode)

_T = TypeVar("_T", bound=str)


def choice(value: object, allowed: tuple[_T, ...], name: str) -> _T:
    """``value`` if it is one of ``allowed``; otherwise a ``ConfigurationError`` naming them."""
    for option in allowed:
        if value == option and isinstance(value, str):
            return option
    raise ConfigurationError(f"{name} must be one of {', '.join(map(repr, allowed))}, not {value!r}")


def key_uri(key: object, example: str = "local:alias/pii") -> str:
    """A key URI string, parsed now (a malformed one or a secret in it fails here)."""
    if not isinstance(key, str):
        raise TypeError(f"key is a key URI string such as {example!r}")
    parse_key_uri(key)
    return key


def names(value: Iterable[str] | str) -> tuple[str, ...]:
    """Dotted field paths (a list, or one comma-separated string), checked."""
    return tuple(p.name for p in parse_paths(value)) if value else ()


def policy_with_age(policy: DataKeyPolicy | None, data_key_max_age: float | None) -> DataKeyPolicy:
    """``policy`` (default ``DataKeyPolicy()``) with ``max_age_seconds`` replaced when
    ``data_key_max_age`` is given (seconds; positive and finite)."""
    policy = policy or DataKeyPolicy()
    if data_key_max_age is None:
        return policy
    return replace(policy, max_age_seconds=check_ttl(data_key_max_age, "the data-key max age"))


def streaming(pcoll: Any) -> bool:
    """Whether ``pcoll`` is part of a streaming pipeline (``--streaming``) or unbounded."""
    from apache_beam.options.pipeline_options import StandardOptions

    options = pcoll.pipeline.options
    return bool(options.view_as(StandardOptions).streaming) or not pcoll.is_bounded


def policy_for(policy: DataKeyPolicy, pcoll: Any) -> DataKeyPolicy:
    """``policy`` with ``across_bundles=None`` decided for the pipeline of ``pcoll``: data keys
    outlive their bundle in a streaming pipeline, not in batch (``DataKeyPolicy``)."""
    if policy.across_bundles is not None:
        return policy
    return replace(policy, across_bundles=streaming(pcoll))


def cache_ttl(key_cache_ttl: float | None) -> float | None:
    """The data-key cache TTL of a decrypting DoFn (``None``: the default 60 s)."""
    return None if key_cache_ttl is None else check_ttl(key_cache_ttl, "the key cache TTL")


def required_keys(keys: Iterable[str] | str) -> tuple[str, ...]:
    """``require_keys=`` (strict mode, ``kmsbeam.keys.strict``): key URIs, checked here; values
    wrapped under any other master key become dead letters ("key not allowed")."""
    if isinstance(keys, str):
        keys = (keys,)
    keys = tuple(keys)
    return KeyRequirement(keys).keys if keys else ()


def vault_of(key_vault: str | None) -> KeyVault | None:
    """``key_vault=``: a key vault prefix on any Beam filesystem (``None``: no vault, v1
    values). The store is opened where it is first used (on the worker)."""
    if key_vault is None:
        return None
    return KeyVault(key_vault)  # checked: kmsbeam.vault.check_vault_uri
