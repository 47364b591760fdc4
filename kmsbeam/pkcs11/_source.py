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
blob layout and derivations are in ``kmsbeam.pkcs11._blob``; the KEK, the calls made with it
and the blobs it writes, in ``kmsbeam.pkcs11._kek``.

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

from collections.abc import Mapping
from typing import Any

import pkcs11.exceptions as px
from pkcs11 import Attribute

from kmsbeam.errors import ConfigurationError, KeySourceError
from kmsbeam.keys.source import KIND_PKCS11, DataKey, KeyInfo, canonical_context
from kmsbeam.keys.uri import KeyUri
from kmsbeam.pkcs11 import _ops as ops
from kmsbeam.pkcs11._blob import wrapped_key_version
from kmsbeam.pkcs11._config import Pkcs11Config
from kmsbeam.pkcs11._errors import hsm_error
from kmsbeam.pkcs11._kek import Kek
from kmsbeam.pkcs11._library import call_counts
from kmsbeam.pkcs11._session import attach

__all__ = ["Pkcs11KeySource", "create_kek", "open_pkcs11_source"]

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
        self.kek = Kek(self._config, create=create)  # the KEK this source wraps with
        self._token = self.kek.token
        self.created = self.kek.created
        self.counts = self.kek.counts

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
        return self.kek.version

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
            kek = self.kek.handle(s)
            seed = ops.generate_seed(token, s)
            try:
                dek, tag = ops.sign(token, seed, ctx)
                return dek, tag, ops.wrap_seed(token, kek, seed)
            finally:
                ops.destroy(token, seed)

        dek, tag, wrapped = self.kek.call(op, "generating a data key", "generate_data_key")
        key_id, version = self.kek.label or self.kek.id.hex(), self.kek.id.hex()
        return DataKey(dek, self.kek.wrapped(wrapped, tag), key_id, version)

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Unwrap with the KEK the blob names (on this token); the context tag is checked first."""
        blob, ctx, token = self.kek.parse(wrapped), canonical_context(context), self._token

        def op(s: Any) -> bytes:
            seed = ops.unwrap_seed(token, s, blob)
            try:
                return ops.sign(token, seed, ctx, expect=blob.tag)[0]
            finally:
                ops.destroy(token, seed)

        return self.kek.call(op, "unwrapping a data key", "decrypt_data_key")

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
        blob, old, token = self.kek.parse(wrapped), canonical_context(context), self._token
        new = old if new_context is None else canonical_context(new_context)

        def op(s: Any) -> tuple[bytes, bytes]:
            kek = self.kek.handle(s)
            seed = ops.unwrap_seed(token, s, blob)
            try:
                tag = ops.sign(token, seed, old, expect=blob.tag, dek=False)[1]
                if new != old:
                    tag = ops.sign(token, seed, new, dek=False)[1]
                return ops.wrap_seed(token, kek, seed), tag
            finally:
                ops.destroy(token, seed)

        try:
            out, tag = self.kek.call(op, "rewrapping a data key", "rewrap")
        except KeySourceError as exc:
            if exc.code not in _REFUSED:
                raise
            raise KeySourceError(
                f"the PKCS#11 module refused to rewrap inside the HSM ({exc.code}): use "
                "rewrap_to(..., allow_host_copy=True) to move the seed through host memory",
                code=exc.code,
            ) from exc
        return self.kek.wrapped(out, tag)

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
        if target.kek.token is self._token:
            return target.rewrap(wrapped, context, new_context)
        if not allow_host_copy:
            raise ConfigurationError(
                f"the target KEK is on token {target.config.token!r}, not on {self._config.token!r}: "
                "an HSM cannot move a key between tokens; pass allow_host_copy=True to move the "
                "seed through host memory"
            )
        blob, old = self.kek.parse(wrapped), canonical_context(context)
        new = old if new_context is None else canonical_context(new_context)
        return target.kek.wrap_host_seed(self.kek.seed_to_host(blob, old), new)

    def describe_key(self) -> KeyInfo:
        def op(s: Any) -> dict[Any, Any]:
            self._token.count("C_GetAttributeValue")
            names = [Attribute.VALUE_LEN, Attribute.SENSITIVE, Attribute.EXTRACTABLE]
            return dict(self.kek.handle(s).get_attributes(names))

        a = self.kek.call(op, "describing the KEK")
        flags = ("sensitive" if a.get(Attribute.SENSITIVE) else "NOT sensitive",
                 "EXTRACTABLE" if a.get(Attribute.EXTRACTABLE) else "never extractable")  # fmt: skip
        return KeyInfo(
            key_id=self.kek.label or self.kek.id.hex(),
            state="Enabled",
            primary_version=self.kek.id.hex(),
            description=f"AES-{8 * int(a.get(Attribute.VALUE_LEN) or 0)} KEK on PKCS#11 token "
            f"{self._config.token!r} ({', '.join(flags)})",
            arn=self._config.uri.partition("?")[0],
        )


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
