"""``Pkcs11KeySource``: data keys wrapped by a key-encryption key (KEK) that stays in an HSM.

=====================  ===================================================================
KeySource method       PKCS#11 operations (one lock held around all of them)
=====================  ===================================================================
generate_data_key      C_GenerateKey (32-byte generic-secret seed S, a session object:
                       sensitive, extractable only by wrapping, CKA_SIGN), 2x C_Sign
                       (CKM_SHA256_HMAC: the DEK and the context tag), C_WrapKey
                       (CKM_AES_KEY_WRAP under the KEK), C_DestroyObject
decrypt_data_key       C_UnwrapKey (into the same kind of session object), 2x C_Sign
                       (tag checked first, then the DEK), C_DestroyObject
rewrap                 C_UnwrapKey, C_Sign (old tag), [C_Sign (new tag)], C_WrapKey under
                       this source's KEK, C_DestroyObject: S never leaves the HSM
describe_key           C_FindObjects (cached) and C_GetAttributeValue
current_version,       none: the version name of this source's KEK, ``TOKEN/KEK-LABEL/
key_versions           KEK-ID-HEX`` (``wrapped_key_version`` reads the same name from a blob)
=====================  ===================================================================

Choice: the HSM generates S (not ``os.urandom`` + import), so neither the KEK nor S is ever
in host memory in plaintext; only the DEK derived from S is (kmsbeam encrypts locally). The
blob layout and derivations are in ``kmsbeam.pkcs11._blob``.

Caveats:
- Login is per process: every source of one token in a process shares one session, logged
  in with the first PIN; a later source whose PIN differs is refused (``AccessDeniedError``).
- ``decrypt_data_key`` and ``rewrap`` unwrap with the KEK the blob names, on this source's
  token: after a rotation the new KEK's URI still reads data not yet rewrapped.
- Moving a seed to another token or module (``rewrap_to``) needs the seed in host memory;
  kmsbeam does it only when asked (``allow_host_copy=True``).
- ``create_kek`` is not atomic across processes: create KEKs from one place (the CLI).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pkcs11.exceptions as px
from pkcs11 import Attribute, KeyType

from kmsbeam.errors import ConfigurationError, KeyNotFoundError, KeySourceError, KmsBeamError
from kmsbeam.keys.source import KIND_PKCS11, DataKey, KeyInfo, canonical_context
from kmsbeam.pkcs11 import _ops as ops
from kmsbeam.pkcs11._blob import Blob, BlobError, derive_on_host, version_name, wrapped_key_version
from kmsbeam.pkcs11._config import Pkcs11Config
from kmsbeam.pkcs11._errors import hsm_error, invalid, kek_error
from kmsbeam.pkcs11._session import TokenSession, attach, call_counts
from kmsbeam.keys.uri import KeyUri

__all__ = ["Pkcs11KeySource", "create_kek", "open_pkcs11_source"]

T = TypeVar("T")
_REFUSED = {"KeyUnextractable", "KeyNotWrappable", "TemplateInconsistent", "AttributeSensitive"}

class Pkcs11KeySource:
    """A ``KeySource`` over one KEK of a PKCS#11 token (see the module docstring).

    Args:
        uri: a ``pkcs11:`` key URI (``kmsbeam.pkcs11._config``), or its parsed ``KeyUri``.
        create: create the KEK if it is not on the token (the CLI's ``keys create``;
            workers leave it ``False``). ``created`` then says whether this call made it.

    Raises:
        ConfigurationError, KeyNotFoundError, AccessDeniedError, KeySourceUnavailableError:
            the URI, PIN source, module, token or KEK is wrong or unreachable (the message
            names which; never the PIN).

    Thread-safe. Pickling carries only the URI: the copy reads the PIN source and logs in
    (once per process) where it is unpickled.
    """

    def __init__(self, uri: str | KeyUri, *, create: bool = False) -> None:
        self._config = Pkcs11Config.from_uri(uri)
        self._token: TokenSession = attach(self._config)
        self.created = False
        self.counts = {"generate_data_key": 0, "decrypt_data_key": 0, "rewrap": 0}
        try:
            self._label, self._id = self._call(self._find_own, "finding the KEK")
        except KeyNotFoundError:
            if not create:
                raise
            self._call(lambda s: ops.create_kek_object(self._token, s, self._config), "creating the KEK")
            self.created = True
            self._label, self._id = self._call(self._find_own, "finding the KEK")

    # -- identity -------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return self._config.uri

    @property
    def kind(self) -> int:
        return KIND_PKCS11

    @property
    def config(self) -> Pkcs11Config:
        return self._config

    def current_version(self) -> str:
        """``TOKEN/KEK-LABEL/KEK-ID-HEX``: the KEK this source wraps with (no call)."""
        return version_name(self._config.token, self._label, self._id)

    def key_versions(self) -> tuple[str, ...]:
        """This source's KEK only: a KEK has no versions (``current_version``)."""
        return (self.current_version(),)

    def wrapped_key_version(self, wrapped: bytes) -> str:
        """The KEK a wrapped key names, of any token (``wrapped_key_version``); no call."""
        return wrapped_key_version(wrapped)

    def __repr__(self) -> str:
        return f"Pkcs11KeySource({self._config.uri!r})"

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (_reopen, (self._config.uri,))

    def stats(self) -> dict[str, int]:
        """This source's operations, and the PKCS#11 operations of this process's module."""
        return {**self.counts, **call_counts(self._config.module_path)}

    # -- KeySource ------------------------------------------------------------------------
    def generate_data_key(self, context: Mapping[str, str] | None = None) -> DataKey:
        ctx, token = canonical_context(context), self._token

        def op(s: Any) -> tuple[bytes, bytes, bytes]:
            kek = self._own_kek(s)
            seed = ops.generate_seed(token, s)
            try:
                dek, tag = ops.sign(token, seed, ctx)
                return dek, tag, ops.wrap_seed(token, kek, seed)
            finally:
                ops.destroy(token, seed)

        dek, tag, wrapped = self._call(op, "generating a data key", "generate_data_key")
        key_id, version = self._label or self._id.hex(), self._id.hex()
        return DataKey(dek, self._wrapped(wrapped, tag), key_id, version)

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Unwrap with the KEK the blob names (on this token); the context tag is checked first."""
        blob, ctx, token = self._parse(wrapped), canonical_context(context), self._token

        def op(s: Any) -> bytes:
            seed = ops.unwrap_seed(token, s, blob)
            try:
                return ops.sign(token, seed, ctx, expect=blob.tag)[0]
            finally:
                ops.destroy(token, seed)

        return self._call(op, "unwrapping a data key", "decrypt_data_key")

    def rewrap(
        self,
        wrapped: bytes,
        context: Mapping[str, str] | None = None,
        new_context: Mapping[str, str] | None = None,
    ) -> bytes:
        """Re-wrap under this source's KEK inside the HSM (``new_context=None`` keeps ``context``).

        The blob may name any KEK of this token (the old one of a rotation). The seed is
        unwrapped into a sensitive session object, checked against ``context``, re-tagged if
        the context changes, wrapped with this KEK and destroyed: it never reaches the host.

        Raises:
            AuthenticationError: tampered blob, wrong context, KEK gone, another token.
            KeySourceError: the module refuses to wrap an unwrapped key (then use
                ``rewrap_to(..., allow_host_copy=True)``).
        """
        blob, old, token = self._parse(wrapped), canonical_context(context), self._token
        new = old if new_context is None else canonical_context(new_context)

        def op(s: Any) -> tuple[bytes, bytes]:
            kek = self._own_kek(s)
            seed = ops.unwrap_seed(token, s, blob)
            try:
                tag = ops.sign(token, seed, old, expect=blob.tag, dek=False)[1]
                if new != old:
                    tag = ops.sign(token, seed, new, dek=False)[1]
                return ops.wrap_seed(token, kek, seed), tag
            finally:
                ops.destroy(token, seed)

        try:
            out, tag = self._call(op, "rewrapping a data key", "rewrap")
        except KeySourceError as exc:
            if exc.code not in _REFUSED:
                raise
            raise KeySourceError(
                f"the PKCS#11 module refused to rewrap inside the HSM ({exc.code}): use "
                "rewrap_to(..., allow_host_copy=True) to move the seed through host memory",
                code=exc.code,
            ) from exc
        return self._wrapped(out, tag)

    def rewrap_to(
        self,
        wrapped: bytes,
        context: Mapping[str, str] | None,
        target: Pkcs11KeySource,
        new_context: Mapping[str, str] | None = None,
        *,
        allow_host_copy: bool = False,
    ) -> bytes:
        """Re-wrap a wrapped key of this source's token under ``target``'s KEK (rotation).

        On the same token this is ``target.rewrap`` (inside the HSM). To another token or
        module the seed has to pass through host memory: refused unless ``allow_host_copy``.
        """
        if not isinstance(target, Pkcs11KeySource):
            raise TypeError("rewrap_to takes a Pkcs11KeySource target")
        if target._token is self._token:
            return target.rewrap(wrapped, context, new_context)
        if not allow_host_copy:
            raise ConfigurationError(
                f"the target KEK is on token {target._config.token!r}, not on {self._config.token!r}: "
                "an HSM cannot move a key between tokens; pass allow_host_copy=True to move the "
                "seed through host memory"
            )
        blob, old = self._parse(wrapped), canonical_context(context)
        new = old if new_context is None else canonical_context(new_context)
        seed = self._call(lambda s: ops.seed_to_host(self._token, s, blob, old), "unwrapping a data key")
        return target._wrap_host_seed(seed, new)

    def describe_key(self) -> KeyInfo:
        def op(s: Any) -> dict[Any, Any]:
            self._token.count("C_GetAttributeValue")
            names = [Attribute.VALUE_LEN, Attribute.SENSITIVE, Attribute.EXTRACTABLE]
            return dict(self._own_kek(s).get_attributes(names))

        a = self._call(op, "describing the KEK")
        flags = ("sensitive" if a.get(Attribute.SENSITIVE) else "NOT sensitive",
                 "EXTRACTABLE" if a.get(Attribute.EXTRACTABLE) else "never extractable")  # fmt: skip
        return KeyInfo(
            key_id=self._label or self._id.hex(),
            state="Enabled",
            primary_version=self._id.hex(),
            description=f"AES-{8 * int(a.get(Attribute.VALUE_LEN) or 0)} KEK on PKCS#11 token "
            f"{self._config.token!r} ({', '.join(flags)})",
            arn=self._config.uri.partition("?")[0],
        )

    # -- internals ------------------------------------------------------------------------
    def _call(self, fn: Callable[[Any], T], doing: str, count: str = "") -> T:
        """``fn(session)`` under the token lock, PKCS#11 errors mapped to kmsbeam errors;
        ``counts[count]`` goes up by one when it succeeds."""

        def counted(s: Any) -> T:
            out = fn(s)
            if count:
                self.counts[count] += 1
            return out

        try:
            return self._token.run(counted)
        except KmsBeamError:
            raise
        except px.PKCS11Error as exc:
            raise kek_error(exc, self._config, doing) from exc

    def _find_own(self, s: Any) -> tuple[str, bytes]:
        self._token.count("C_GetAttributeValue")
        names = [Attribute.LABEL, Attribute.ID, Attribute.KEY_TYPE, Attribute.WRAP, Attribute.UNWRAP]
        a = self._own_kek(s).get_attributes(names)
        may_wrap = a.get(Attribute.WRAP) and a.get(Attribute.UNWRAP)
        if a.get(Attribute.KEY_TYPE) != KeyType.AES or not may_wrap:
            raise ConfigurationError(
                f"the {self._config.kek_name()} is not an AES key allowed to wrap and unwrap "
                "(CKA_WRAP and CKA_UNWRAP)"
            )
        return str(a.get(Attribute.LABEL) or ""), bytes(a.get(Attribute.ID) or b"")

    def _own_kek(self, s: Any) -> Any:
        return self._token.key(s, self._config.label, self._config.key_id)

    def _wrapped(self, wrapped_seed: bytes, tag: bytes) -> bytes:
        blob = Blob(self._config.token, self._label, self._id, wrapped_seed, tag)
        return bytes([KIND_PKCS11]) + blob.encode()

    def _parse(self, wrapped: bytes) -> Blob:
        if not isinstance(wrapped, (bytes, bytearray, memoryview)):
            raise TypeError("a wrapped key is bytes")
        data = bytes(wrapped)
        if not data or data[0] != KIND_PKCS11:
            raise invalid()
        try:
            blob = Blob.decode(data[1:])
        except BlobError:
            raise invalid() from None
        if blob.token != self._config.token:
            raise invalid("OtherToken")
        return blob

    def _wrap_host_seed(self, seed: bytes, ctx: bytes) -> bytes:
        token = self._token

        def op(s: Any) -> bytes:
            kek = self._own_kek(s)
            obj = ops.import_seed(token, s, seed)
            try:
                return ops.wrap_seed(token, kek, obj)
            finally:
                ops.destroy(token, obj)

        wrapped = self._call(op, "wrapping a copied data key", "rewrap")
        return self._wrapped(wrapped, derive_on_host(seed, ctx)[1])


def create_kek(uri: str | KeyUri) -> KeyInfo:
    """Create the URI's KEK on its token (``kmsbeam keys create --key pkcs11:...``).

    The KEK is an AES-256 token object: sensitive, never extractable, not modifiable, allowed
    to wrap and unwrap only; a random 8-byte CKA_ID unless the URI gives ``id=``.

    Raises:
        ConfigurationError: a key with that label (or id) already exists, or a bad URI; and
            what opening a ``Pkcs11KeySource`` raises for PIN, module and token problems.
    """
    config = Pkcs11Config.from_uri(uri)
    token = attach(config)
    try:
        token.run(lambda s: ops.create_kek_object(token, s, config))
    except px.PKCS11Error as exc:
        raise hsm_error(exc, f"creating the {config.kek_name()}") from exc
    return Pkcs11KeySource(config.uri).describe_key()


def open_pkcs11_source(uri: KeyUri, *, create: bool = False) -> Pkcs11KeySource:
    """The key source for a parsed ``pkcs11:`` URI (what ``kmsbeam.open_key_source`` calls).

    ``create`` is ignored: a source opened by URI never creates a KEK (a mistyped label must
    not mint a new one); ``create_kek`` (``kmsbeam keys create --key pkcs11:...``) does.
    """
    return Pkcs11KeySource(uri)


def _reopen(uri: str) -> Pkcs11KeySource:
    return Pkcs11KeySource(uri)
