"""``AlibabaKmsKeySource``: data keys from Alibaba Cloud KMS or the kmsbeam emulator.

Both ``alibaba-kms://REGION/KEY`` and ``kms-emulator://HOST:PORT/KEY`` speak KMS API
2016-01-20 through the official SDK. Wrapped keys are ``0x02 || CiphertextBlob`` (raw bytes;
the layout and its version name: ``kmsbeam.alikms._blob``).

=====================  ===================================================================
KeySource method       KMS action
=====================  ===================================================================
generate_data_key      ``GenerateDataKey`` (KeySpec AES_256, NumberOfBytes 32)
decrypt_data_key       ``Decrypt``
rewrap                 ``ReEncrypt`` to this source's key (server side: the DEK never leaves)
describe_key           ``DescribeKey`` and ``ListAliasesByKeyId``
current_version        ``DescribeKey`` (the primary version; automatic rotation changes it)
key_versions           ``DescribeKey`` and ``ListKeyVersions`` (every page)
=====================  ===================================================================

The encryption context is sent as a JSON object (the SDK takes a dict) and is bound by the
KMS as AAD; an empty context is not sent. Credentials: see ``kmsbeam.alikms._credentials``;
retries: ``kmsbeam.alikms._retry``; errors: ``kmsbeam.alikms._errors``. Every attempt of every
call (retries included) first takes a token of the process's KMS call budget, when one is
installed (``kmsbeam.keys.budget``; ``kmsbeam.alikms._calls``).

Caveats:
- Opening a source makes no call: a missing key or alias, a denied permission or an
  unreachable KMS shows at the first call, as a ``KeyNotFoundError`` (and so on) naming it.
- kmsbeam never creates keys or aliases in a remote KMS.
- Decrypt unwraps a data key of any key the caller may use, not only this source's key.
"""

from __future__ import annotations

import base64
import binascii
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from kmsbeam.alikms._blob import blob_of, wrapped_from_text, wrapped_key_version
from kmsbeam.alikms._calls import call_kms, malformed
from kmsbeam.alikms._client import Endpoint, SdkClient, endpoint_for, sdk_module, shared_client
from kmsbeam.alikms._retry import Retrier, RetryPolicy
from kmsbeam.errors import AccessDeniedError, ConfigurationError, KeySourceError
from kmsbeam.keys.source import KIND_ALIBABA_KMS, DataKey, KeyInfo, check_context, enabled_primary_version
from kmsbeam.keys.uri import KeyUri, parse_key_uri
from kmsbeam.kms import data_key_from_base64

__all__ = ["AlibabaKmsKeySource", "open_alikms_source"]

DEK_BYTES = 32


def _models() -> Any:
    return sdk_module("alibabacloud_kms20160120.models")


def open_alikms_source(uri: KeyUri, *, create: bool = False) -> AlibabaKmsKeySource:
    """The source for a parsed ``alibaba-kms://`` or ``kms-emulator://`` URI (what
    ``kmsbeam.open_key_source`` calls). ``create`` is ignored: kmsbeam never creates keys or
    aliases in a KMS, so a missing one is a ``KeyNotFoundError`` at the first call."""
    return AlibabaKmsKeySource(uri)


class AlibabaKmsKeySource:
    """A ``KeySource`` over one key of Alibaba Cloud KMS or the kmsbeam KMS emulator.

    Args:
        uri: ``alibaba-kms://REGION/KEY[?endpoint=HOST[:PORT]&ca=/abs/ca.pem]`` or
            ``kms-emulator://HOST:PORT/KEY``, KEY being ``alias/NAME`` or a key id.
        retry: retry bounds; default ``RetryPolicy.from_env()`` (``KMSBEAM_KMS_*``).
        sleep, clock, random: injectable for tests (``time.sleep``, ``time.monotonic``,
            ``random.random``).

    Raises:
        ConfigurationError: a malformed URI, region, endpoint, CA path or retry setting, or
            half of an access key in the environment.

    Thread-safe. Pickling carries only the URI (and an explicitly given ``RetryPolicy``): the
    copy builds or reuses its own process's client, with that process's credentials.
    """

    created = False  # a remote key is never created by kmsbeam

    def __init__(
        self,
        uri: str | KeyUri,
        *,
        retry: RetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        random: Callable[[], float] = random.random,
    ) -> None:
        parsed = uri if isinstance(uri, KeyUri) else parse_key_uri(uri)
        if parsed.scheme not in ("alibaba-kms", "kms-emulator"):
            raise ConfigurationError(
                f"AlibabaKmsKeySource takes alibaba-kms:// and kms-emulator:// key URIs, "
                f"not {parsed.scheme}:"
            )
        self._uri = str(parsed)
        self._key = parsed.key
        self._endpoint = endpoint_for(parsed)
        self._explicit_retry = retry
        self._retrier = Retrier(
            retry if retry is not None else RetryPolicy.from_env(),
            sleep=sleep,
            clock=clock,
            random=random,
        )
        shared_client(self._endpoint)  # missing credentials fail here, not at the first call

    # -- identity ---------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return self._uri

    @property
    def kind(self) -> int:
        return KIND_ALIBABA_KMS

    @property
    def key(self) -> str:
        """The key the URI names (``alias/NAME`` or a key id)."""
        return self._key

    @property
    def endpoint(self) -> Endpoint:
        return self._endpoint

    @property
    def retry_policy(self) -> RetryPolicy:
        return self._retrier.policy

    def stats(self) -> dict[str, int]:
        """Calls made by this source: ``attempts``, ``retries`` and ``gave_up`` so far."""
        r = self._retrier
        return {"attempts": r.attempts, "retries": r.retries, "gave_up": r.gave_up}

    def __repr__(self) -> str:
        return f"AlibabaKmsKeySource({self._uri!r})"

    def __reduce__(self) -> tuple[object, tuple[str, RetryPolicy | None]]:
        return (_reopen, (self._uri, self._explicit_retry))

    # -- KeySource ----------------------------------------------------------------------------
    def generate_data_key(self, context: Mapping[str, str] | None = None) -> DataKey:
        request = _models().GenerateDataKeyRequest(
            key_id=self._key,
            key_spec="AES_256",
            number_of_bytes=DEK_BYTES,
            encryption_context=check_context(context) or None,
        )
        body = self._call("GenerateDataKey", self._key, lambda c: c.generate_data_key(request))
        try:
            dek = base64.b64decode(body.plaintext or "", validate=True)
        except (binascii.Error, ValueError):
            dek = b""
        if len(dek) != DEK_BYTES:
            raise self._malformed("GenerateDataKey", body, "a data key of the wrong size")
        wrapped = self._wrap(body, "GenerateDataKey")
        return DataKey(dek, wrapped, str(body.key_id or ""), str(body.key_version_id or ""))

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Unwrap a wrapped key of any key this caller may use (the blob names its key)."""
        request = _models().DecryptRequest(
            ciphertext_blob=base64.b64encode(self._blob(wrapped)).decode("ascii"),
            encryption_context=check_context(context) or None,
        )
        body = self._call("Decrypt", "", lambda c: c.decrypt(request))
        return data_key_from_base64(body.plaintext or "")

    def rewrap(
        self,
        wrapped: bytes,
        context: Mapping[str, str] | None = None,
        new_context: Mapping[str, str] | None = None,
    ) -> bytes:
        """Re-wrap under this source's key with ``ReEncrypt``; the DEK never leaves the KMS.

        ``new_context=None`` keeps ``context``. The caller needs ``kms:ReEncrypt*`` (Alibaba
        RAM: ``kms:ReEncrypt``) on both the old and the new key.
        """
        source = check_context(context)
        destination = source if new_context is None else check_context(new_context)
        request = _models().ReEncryptRequest(
            ciphertext_blob=base64.b64encode(self._blob(wrapped)).decode("ascii"),
            destination_key_id=self._key,
            source_encryption_context=source or None,
            destination_encryption_context=destination or None,
        )
        body = self._call("ReEncrypt", self._key, lambda c: c.re_encrypt(request))
        return self._wrap(body, "ReEncrypt")

    def describe_key(self) -> KeyInfo:
        """``DescribeKey``; the aliases too if the caller may list them (else the URI's)."""
        models = _models()
        meta = self._key_metadata()
        try:
            listed = self._call(
                "ListAliasesByKeyId",
                self._key,
                lambda c: c.list_aliases_by_key_id(
                    models.ListAliasesByKeyIdRequest(key_id=meta.key_id, page_size=100)
                ),
            )
            rows = listed.aliases.alias if listed.aliases and listed.aliases.alias else []
            aliases = tuple(sorted(str(a.alias_name) for a in rows if a.alias_name))
        except AccessDeniedError:
            aliases = (self._key,) if self._key.startswith("alias/") else ()
        return KeyInfo(
            key_id=str(meta.key_id),
            state=str(meta.key_state or ""),
            primary_version=str(meta.primary_key_version or ""),
            description=str(meta.description or ""),
            aliases=aliases,
            arn=str(meta.arn or ""),
            created=str(meta.creation_date or ""),
        )

    def wrapped_key_version(self, wrapped: bytes) -> str:
        """The key version id ``wrapped`` names (any key of this KMS); no call."""
        return wrapped_key_version(wrapped)

    def current_version(self) -> str:
        """The key's primary version id, if it is Enabled: one ``DescribeKey``."""
        meta = self._key_metadata()
        return enabled_primary_version(self._uri, str(meta.key_state or ""), str(meta.primary_key_version or ""))

    def key_versions(self) -> tuple[str, ...]:
        """Every version id of this key (``ListKeyVersions``, all pages), oldest first."""
        models = _models()
        key_id = str(self._key_metadata().key_id)
        versions: list[str] = []
        page = 1
        while True:
            request = models.ListKeyVersionsRequest(key_id=key_id, page_number=page, page_size=100)
            body = self._call("ListKeyVersions", self._key, lambda c: c.list_key_versions(request))
            rows = body.key_versions.key_version if body.key_versions and body.key_versions.key_version else []
            versions.extend(str(v.key_version_id) for v in rows if v.key_version_id)
            if not rows or len(versions) >= int(body.total_count or 0):
                return tuple(versions)
            page += 1

    # -- plumbing -----------------------------------------------------------------------------
    def _key_metadata(self) -> Any:
        """One ``DescribeKey``: the SDK's key metadata (with a key id)."""
        describe = _models().DescribeKeyRequest(key_id=self._key)
        body = self._call("DescribeKey", self._key, lambda c: c.describe_key(describe))
        meta = body.key_metadata
        if meta is None or not meta.key_id:
            raise self._malformed("DescribeKey", body, "no key metadata")
        return meta

    def _sdk(self) -> SdkClient:
        return shared_client(self._endpoint)  # this process's (kmsbeam.process)

    def _call(self, action: str, key: str, call: Callable[[Any], Any]) -> Any:
        """One KMS action (``kmsbeam.alikms._calls.call_kms``): the response body."""
        return call_kms(self._endpoint, self._retrier, action, key, call)

    def _wrap(self, body: Any, action: str) -> bytes:
        wrapped = wrapped_from_text(body.ciphertext_blob or "")
        if wrapped is None:
            raise self._malformed(action, body, "a CiphertextBlob that is not canonical base64")
        return wrapped

    def _malformed(self, action: str, body: Any, what: str) -> KeySourceError:
        return malformed(self._endpoint, action, body, what)

    _blob = staticmethod(blob_of)


def _reopen(uri: str, retry: RetryPolicy | None) -> AlibabaKmsKeySource:
    return AlibabaKmsKeySource(uri, retry=retry)
