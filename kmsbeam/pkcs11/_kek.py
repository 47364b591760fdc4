"""One KEK on a PKCS#11 token: found (or created) on the process's token session, the calls
made with it under the token lock, the blobs it writes and reads, and seeds that pass through
host memory (``Pkcs11KeySource.rewrap_to`` between tokens: the only place kmsbeam does that)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import pkcs11.exceptions as px
from pkcs11 import Attribute, KeyType

from kmsbeam.errors import ConfigurationError, KeyNotFoundError, KmsBeamError
from kmsbeam.keys.source import KIND_PKCS11
from kmsbeam.pkcs11 import _ops as ops
from kmsbeam.pkcs11._blob import Blob, BlobError, derive_on_host, version_name
from kmsbeam.pkcs11._config import Pkcs11Config
from kmsbeam.pkcs11._errors import invalid, kek_error
from kmsbeam.pkcs11._session import TokenSession, attach

__all__ = ["Kek"]

T = TypeVar("T")


class Kek:
    """The KEK ``config`` names, on its token's session (shared by the process).

    ``create`` makes the KEK when it is not on the token (``created`` then says so).
    ``counts`` counts the key-source operations made with it (``call(..., count=)``).

    Raises:
        KeyNotFoundError: no such KEK (and not ``create``); ConfigurationError: it is not an
            AES key allowed to wrap and unwrap; what ``attach`` raises for PIN, module, token.
    """

    def __init__(self, config: Pkcs11Config, *, create: bool = False) -> None:
        self.config = config
        self.token: TokenSession = attach(config)
        self.created = False
        self.counts = {"generate_data_key": 0, "decrypt_data_key": 0, "rewrap": 0}
        try:
            self.label, self.id = self.call(self._find, "finding the KEK")
        except KeyNotFoundError:
            if not create:
                raise
            self.call(lambda s: ops.create_kek_object(self.token, s, config), "creating the KEK")
            self.created = True
            self.label, self.id = self.call(self._find, "finding the KEK")

    @property
    def version(self) -> str:
        """``TOKEN/KEK-LABEL/KEK-ID-HEX``: the version name blobs under this KEK carry."""
        return version_name(self.config.token, self.label, self.id)

    def call(self, fn: Callable[[Any], T], doing: str, count: str = "") -> T:
        """``fn(session)`` under the token lock, PKCS#11 errors mapped to kmsbeam errors;
        ``counts[count]`` goes up by one when it succeeds."""

        def counted(s: Any) -> T:
            out = fn(s)
            if count:
                self.counts[count] += 1
            return out

        try:
            return self.token.run(counted)
        except KmsBeamError:
            raise
        except px.PKCS11Error as exc:
            raise kek_error(exc, self.config, doing) from exc

    def handle(self, s: Any) -> Any:
        """The KEK's object handle in session ``s`` (found once, then cached by the token)."""
        return self.token.key(s, self.config.label, self.config.key_id)

    def _find(self, s: Any) -> tuple[str, bytes]:
        self.token.count("C_GetAttributeValue")
        names = [Attribute.LABEL, Attribute.ID, Attribute.KEY_TYPE, Attribute.WRAP, Attribute.UNWRAP]
        a = self.handle(s).get_attributes(names)
        may_wrap = a.get(Attribute.WRAP) and a.get(Attribute.UNWRAP)
        if a.get(Attribute.KEY_TYPE) != KeyType.AES or not may_wrap:
            raise ConfigurationError(
                f"the {self.config.kek_name()} is not an AES key allowed to wrap and unwrap "
                "(CKA_WRAP and CKA_UNWRAP)"
            )
        return str(a.get(Attribute.LABEL) or ""), bytes(a.get(Attribute.ID) or b"")

    def wrapped(self, wrapped_seed: bytes, tag: bytes) -> bytes:
        """The wrapped key (kind byte and blob) of a seed this KEK wrapped."""
        blob = Blob(self.config.token, self.label, self.id, wrapped_seed, tag)
        return bytes([KIND_PKCS11]) + blob.encode()

    def parse(self, wrapped: bytes) -> Blob:
        """The blob of a wrapped key of this token (under any of its KEKs).

        Raises:
            AuthenticationError: not a PKCS#11 wrapped key, malformed, or of another token.
        """
        if not isinstance(wrapped, (bytes, bytearray, memoryview)):
            raise TypeError("a wrapped key is bytes")
        data = bytes(wrapped)
        if not data or data[0] != KIND_PKCS11:
            raise invalid()
        try:
            blob = Blob.decode(data[1:])
        except BlobError:
            raise invalid() from None
        if blob.token != self.config.token:
            raise invalid("OtherToken")
        return blob

    def seed_to_host(self, blob: Blob, ctx: bytes) -> bytes:
        """The seed of ``blob`` in host memory, its tag checked against ``ctx`` (canonical)."""
        return self.call(lambda s: ops.seed_to_host(self.token, s, blob, ctx), "unwrapping a data key")

    def wrap_host_seed(self, seed: bytes, ctx: bytes) -> bytes:
        """A seed from host memory imported, wrapped under this KEK and tagged for ``ctx``."""
        token = self.token

        def op(s: Any) -> bytes:
            kek = self.handle(s)
            obj = ops.import_seed(token, s, seed)
            try:
                return ops.wrap_seed(token, kek, obj)
            finally:
                ops.destroy(token, obj)

        return self.wrapped(self.call(op, "wrapping a copied data key", "rewrap"), derive_on_host(seed, ctx)[1])
