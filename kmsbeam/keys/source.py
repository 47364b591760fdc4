"""The KeySource protocol: what every key source (local, emulator, Alibaba KMS, PKCS#11) does.

A key source generates data keys (DEKs) under a master key and unwraps them again. kmsbeam
encrypts locally with the DEK and stores only the *wrapped key*, which is self-describing:

::

    wrapped key = kind (1 byte) || blob (the key source's own ciphertext of the DEK)

    kind 0x01  kmsbeam KMS engine, embedded keystore (``local:``)
    kind 0x02  Alibaba Cloud KMS protocol: kmsbeam emulator or Alibaba Cloud KMS
    kind 0x03  PKCS#11 HSM
    kind 0x04  Alibaba Cloud KMS instance gateway (KMS 3.0, ClientKey): emulator or Alibaba

Every wrapped key names the master key *version* that wrapped it; the source of its kind reads
that name without unwrapping anything (``KeySource.wrapped_key_version``), and rotation
compares it with ``current_version()`` to skip keys already under the target:

====  ==========================================================  =========================
kind  version name read from the blob (``wrapped_key_version``)    ``current_version()``
====  ==========================================================  =========================
0x01  KeyVersionId, the blob's first 36 bytes (``kmsbeam.kms``)     the key's primary version
0x02  (the same layout: emulator, Alibaba Cloud KMS)                (one ``DescribeKey``)
0x03  ``TOKEN/KEK-LABEL/KEK-ID-HEX`` from the PKCS#11 blob          the source's own KEK
0x04  KeyVersionId kept beside the gateway's blob                  one ``AdvanceEncrypt`` probe
====  ==========================================================  =========================

Each layout lives in its source's package; ``kmsbeam.keys.registry.wrapped_key_version``
reads a wrapped key of any registered kind without a source.

Security rules every implementation keeps:
- The encryption context (a flat ``str -> str`` map) is bound as AAD by the source; the
  same context must be given to unwrap.
- A plaintext DEK lives only in a ``DataKey`` (which refuses to pickle and hides its bytes
  from ``repr``) or in a cipher object; it is never logged, pickled or put in a metric.
- A wrapped key that does not unwrap (tampered, truncated, from another source or context)
  raises ``AuthenticationError``; availability and permission problems raise the matching
  ``KeySourceError`` subclass.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn, Protocol, runtime_checkable

from kmsbeam.errors import ConfigurationError, KeyDisabledError

__all__ = [
    "KIND_ALIBABA_KMS",
    "KIND_ALIBABA_KMS_INSTANCE",
    "KIND_LOCAL",
    "KIND_PKCS11",
    "Context",
    "DataKey",
    "KeyInfo",
    "KeySource",
    "canonical_context",
    "check_context",
    "enabled_primary_version",
]

KIND_LOCAL = 0x01
KIND_ALIBABA_KMS = 0x02
KIND_PKCS11 = 0x03
KIND_ALIBABA_KMS_INSTANCE = 0x04

Context = Mapping[str, str]


def check_context(context: Mapping[str, str] | None) -> dict[str, str]:
    """Validate an encryption context and return it as a plain dict (``{}`` for ``None``)."""
    if context is None:
        return {}
    if not isinstance(context, Mapping):
        raise TypeError("an encryption context is a mapping of str to str")
    out: dict[str, str] = {}
    for k, v in context.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("an encryption context is a flat mapping of str to str")
        if not k:
            raise ConfigurationError("encryption context keys must not be empty")
        out[k] = v
    return out


def canonical_context(context: Mapping[str, str] | None) -> bytes:
    """The canonical byte form of a context: UTF-8 JSON, keys sorted, no whitespace.

    Key order does not matter (``{"a": "1", "b": "2"}`` and ``{"b": "2", "a": "1"}`` are the
    same context), and the empty context is ``{}``.
    """
    return json.dumps(
        check_context(context), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode("utf-8")


class DataKey:
    """A freshly generated data key: the plaintext DEK and its wrapped form.

    The plaintext never pickles and never appears in ``repr``; drop the object as soon as
    the DEK has been handed to a cipher.
    """

    __slots__ = ("_plaintext", "key_id", "key_version", "wrapped")

    def __init__(self, plaintext: bytes, wrapped: bytes, key_id: str, key_version: str) -> None:
        if len(plaintext) not in (16, 24, 32):
            raise ValueError("a data key is 16, 24 or 32 bytes")
        self._plaintext = bytes(plaintext)
        self.wrapped = bytes(wrapped)
        self.key_id = key_id
        self.key_version = key_version

    @property
    def plaintext(self) -> bytes:
        return self._plaintext

    def __repr__(self) -> str:
        return f"DataKey(key_id={self.key_id!r}, key_version={self.key_version!r}, plaintext=<hidden>)"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a DataKey holds a plaintext data key and never pickles")


@dataclass(frozen=True)
class KeyInfo:
    """What a key source says about a master key (no key material)."""

    key_id: str
    state: str
    primary_version: str
    description: str = ""
    aliases: tuple[str, ...] = ()
    arn: str = ""
    created: str = ""


@runtime_checkable
class KeySource(Protocol):
    """A source of data keys under one master key.

    Implementations are built on the worker (they hold connections and sessions); only the
    key URI string travels in a pipeline.
    """

    @property
    def uri(self) -> str:
        """The key URI this source was opened with (never carries a secret)."""
        ...

    @property
    def kind(self) -> int:
        """The wrapped-key kind byte this source writes and reads (``KIND_*``)."""
        ...

    def generate_data_key(self, context: Mapping[str, str] | None = None) -> DataKey:
        """Generate a 32-byte DEK under the master key, wrapped with ``context`` as AAD."""
        ...

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Unwrap a wrapped key (kind byte included) and return the plaintext DEK.

        Raises:
            AuthenticationError: the wrapped key is not one this source can unwrap with
                this context.
            KeyDisabledError, AccessDeniedError, KeySourceUnavailableError: as named.
        """
        ...

    def rewrap(
        self,
        wrapped: bytes,
        context: Mapping[str, str] | None = None,
        new_context: Mapping[str, str] | None = None,
    ) -> bytes:
        """Re-wrap a wrapped key of this source under this source's master key (rotation)."""
        ...

    def describe_key(self) -> KeyInfo:
        """Describe the master key this source was opened for."""
        ...

    @property
    def created(self) -> bool:
        """Whether opening this source created its master key (an ``open_key_source(...,
        create=True)`` of a ``local:alias/`` that did not exist yet): the caller prints a
        notice. ``False`` for every source that never creates keys."""
        ...

    def wrapped_key_version(self, wrapped: bytes) -> str:
        """The name of the master key version that wrapped ``wrapped`` (kind byte included),
        read from the blob without unwrapping and without a call (see the module docstring).

        Args:
            wrapped: a wrapped key of this source's kind, possibly under another master key.

        Returns:
            The version name, comparable with ``current_version()`` and ``key_versions()``.

        Raises:
            MalformedValueError: not a wrapped key of this kind, or a blob it cannot parse.
        """
        ...

    def current_version(self) -> str:
        """The master key version new wraps of this source name now.

        A KMS key's primary version changes with automatic rotation, so a KMS source asks
        each time (one ``DescribeKey``, nothing else): a caller that needs it repeatedly keeps
        the answer (``Rewrapper.check_target``). A PKCS#11 source names its own KEK (no call).

        Returns:
            The version name ``wrapped_key_version`` gives keys wrapped by this source now.

        Raises:
            KeyDisabledError: the key is not Enabled. KeyNotFoundError: it does not exist.
            ConfigurationError: the key source names no primary version.
            KeySourceError: as the call raises it (unavailable, access denied).
        """
        ...

    def key_versions(self) -> tuple[str, ...]:
        """Every version name a data key wrapped under this master key can carry, for filters
        such as ``kmsbeam rotate --only-key``: all versions of a KMS key (oldest first), the
        KEK itself for PKCS#11.

        Returns:
            Version names as ``wrapped_key_version`` gives them.

        Raises:
            KeyNotFoundError, KeySourceError: as the listing call raises them.
        """
        ...


def enabled_primary_version(uri: str, state: str, primary_version: str) -> str:
    """``current_version()`` of a KMS key from its DescribeKey answer (state and primary
    version): the primary version, if the key may wrap now.

    Raises:
        KeyDisabledError: ``state`` is not ``Enabled``.
        ConfigurationError: there is no primary version.
    """
    if state != "Enabled":
        raise KeyDisabledError(f"the key {uri} is {state}, not Enabled")
    if not primary_version:
        raise ConfigurationError(f"the key source of {uri} names no primary key version")
    return primary_version
