"""The KeySource protocol: what every key source (local, emulator, Alibaba KMS, PKCS#11) does.

A key source generates data keys (DEKs) under a master key and unwraps them again. kmsbeam
encrypts locally with the DEK and stores only the *wrapped key*, which is self-describing:

::

    wrapped key = kind (1 byte) || blob (the key source's own ciphertext of the DEK)

    kind 0x01  kmsbeam KMS engine, embedded keystore (``local:``)
    kind 0x02  Alibaba Cloud KMS protocol: kmsbeam emulator or Alibaba Cloud KMS
    kind 0x03  PKCS#11 HSM

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

from kmsbeam.errors import ConfigurationError

__all__ = [
    "KIND_ALIBABA_KMS",
    "KIND_LOCAL",
    "KIND_PKCS11",
    "Context",
    "DataKey",
    "KeyInfo",
    "KeySource",
    "canonical_context",
    "check_context",
]

KIND_LOCAL = 0x01
KIND_ALIBABA_KMS = 0x02
KIND_PKCS11 = 0x03

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
