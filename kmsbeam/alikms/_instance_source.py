"""``AlibabaKmsInstanceKeySource``: data keys from a KMS 3.0 instance through its gateway.

``alibaba-kms-instance://HOST[:PORT]/KEY?ca=/abs/ca.pem`` reaches a KMS instance's gateway
(``kst-xxx.cryptoservice.kms.aliyuncs.com`` from the instance's VPC, or the emulator's
instance gateway) with a ClientKey, through the official instance SDK
(``alibabacloud-dkms-gcs``, run apart: ``kmsbeam.alikms._instance_sdk``). KEY is
``alias/NAME`` or a key id. Wrapped keys are kind 0x04 (``kmsbeam.alikms._instance_blob``).

=====================  ======================================================================
KeySource method       instance API action
=====================  ======================================================================
generate_data_key      ``AdvanceGenerateDataKey`` (32 bytes; the key's primary version)
decrypt_data_key       ``AdvanceDecrypt`` (the blob names its key and version)
rewrap                 ``AdvanceDecrypt`` then ``AdvanceEncrypt`` of the data key to this key:
                       the instance API has no ReEncrypt, so the data key passes through this
                       process's memory (never the data, never a disk or a log)
describe_key           one ``AdvanceEncrypt`` probe (the instance API has no DescribeKey):
                       key id and primary version; state ``Enabled`` if it answered
current_version        the same probe's KeyVersionId
key_versions           the current version only (the instance API cannot list versions;
                       list them through ``alibaba-kms://`` with a RAM identity)
=====================  ======================================================================

The Advance* actions are the ones Alibaba documents for keys with automatic rotation: a blob
names the version that made it, so data keys wrapped before a rotation still unwrap.

The AAD is the canonical encryption context (``canonical_context``: ``{}`` when empty).

Credentials and the CA certificate (never in the key URI, display data, pickles or errors):

=================================  ===========================================================
``KMSBEAM_KMS_CLIENT_KEY_FILE``    the ClientKey file (``clientKey_KAAP...json``) path, or
``KMSBEAM_KMS_CLIENT_KEY``         the ClientKey file's content
``KMSBEAM_KMS_CLIENT_KEY_PASSWORD``  its password, or
``..._PASSWORD_FILE``              a file holding it (a trailing newline is dropped)
``ca=`` (key URI)                  the instance CA certificate file (absolute path), or
``KMSBEAM_KMS_INSTANCE_CA``        the CA certificate as a path or as PEM content
=================================  ===========================================================

Every worker reads these from its own environment when it first opens the source, as the
``alibaba-kms://`` source reads its credential chain. Retries: ``kmsbeam.alikms._retry``
(``KMSBEAM_KMS_*``); the KMS call budget (``kmsbeam.keys.budget``) is taken per attempt.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from kmsbeam._private_files import check_secret_file
from kmsbeam.alikms._calls import gave_up
from kmsbeam.alikms._errors import classify_gateway, with_request_id
from kmsbeam.alikms._instance_blob import instance_blob, instance_wrapped, instance_wrapped_key_version
from kmsbeam.alikms._instance_sdk import GatewayFailure, GatewaySettings, shared_gateway
from kmsbeam.alikms._retry import GaveUp, Retrier, RetryPolicy
from kmsbeam.errors import ConfigurationError, KeySourceError
from kmsbeam.keys.budget import acquire_kms_call
from kmsbeam.keys.source import KIND_ALIBABA_KMS_INSTANCE, DataKey, KeyInfo, canonical_context
from kmsbeam.keys.uri import KeyUri, parse_key_uri

__all__ = ["CLIENT_KEY_ENV", "AlibabaKmsInstanceKeySource", "gateway_settings", "open_instance_source"]

DEK_BYTES = 32
SCHEME = "alibaba-kms-instance"
CLIENT_KEY_ENV = {
    "file": "KMSBEAM_KMS_CLIENT_KEY_FILE",
    "content": "KMSBEAM_KMS_CLIENT_KEY",
    "password": "KMSBEAM_KMS_CLIENT_KEY_PASSWORD",
    "password_file": "KMSBEAM_KMS_CLIENT_KEY_PASSWORD_FILE",
    "ca": "KMSBEAM_KMS_INSTANCE_CA",
}
_HOST_PORT = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?)(:\d{1,5})?$")
_PROBE_AAD = b"kmsbeam:probe"


def open_instance_source(uri: KeyUri, *, create: bool = False) -> AlibabaKmsInstanceKeySource:
    """The source of a parsed ``alibaba-kms-instance://`` URI (``create`` is ignored: kmsbeam
    never creates keys in a KMS)."""
    return AlibabaKmsInstanceKeySource(uri)


def gateway_settings(uri: KeyUri, environ: Mapping[str, str] | None = None) -> GatewaySettings:
    """The gateway, CA and ClientKey an ``alibaba-kms-instance`` URI and the environment name.

    The ClientKey file and the password file must be private (no group or other access, like a
    PIN file); a ClientKey is checked to be ClientKey JSON (``KeyId``, ``PrivateKeyData``)
    before any helper starts. No message repeats a variable's value.

    Raises:
        ConfigurationError: a bad host, no CA, no ClientKey or no password, or one that is
            not what its variable names (messages name the variables to set, never values).
    """
    env = os.environ if environ is None else environ
    host = uri.location
    if not _HOST_PORT.match(host):
        raise ConfigurationError(
            f"{SCHEME} key URIs name the instance gateway as HOST or HOST:PORT "
            "(e.g. kst-hzz1234.cryptoservice.kms.aliyuncs.com)"
        )
    ca_file, ca_content = _ca(uri.param("ca"), env.get(CLIENT_KEY_ENV["ca"], ""))
    key_file = env.get(CLIENT_KEY_ENV["file"], "")
    key_content = env.get(CLIENT_KEY_ENV["content"], "")
    if not key_file and not key_content:
        raise ConfigurationError(
            f"the {SCHEME} key source needs a ClientKey: set {CLIENT_KEY_ENV['file']} to the "
            f"ClientKey file's path (or {CLIENT_KEY_ENV['content']} to its content) and "
            f"{CLIENT_KEY_ENV['password']} (or {CLIENT_KEY_ENV['password_file']})"
        )
    if key_file:
        key_content = _secret_file(key_file, CLIENT_KEY_ENV["file"], "the ClientKey file",
                                   f"holds the ClientKey itself; put it in {CLIENT_KEY_ENV['content']}")  # fmt: skip
        key_file = str(Path(key_file).expanduser().absolute())
    _check_client_key(key_content, CLIENT_KEY_ENV["file"] if key_file else CLIENT_KEY_ENV["content"])
    password = env.get(CLIENT_KEY_ENV["password"], "")
    password_file = env.get(CLIENT_KEY_ENV["password_file"], "")
    if not password and password_file:
        password = _secret_file(password_file, CLIENT_KEY_ENV["password_file"], "the password file",
                                f"holds the password itself; put it in {CLIENT_KEY_ENV['password']}")
        password = password.rstrip("\r\n")
    if not password:
        raise ConfigurationError(
            f"the ClientKey's password is missing: set {CLIENT_KEY_ENV['password']} or "
            f"{CLIENT_KEY_ENV['password_file']}"
        )
    return GatewaySettings(host, ca_file, ca_content, key_file or None,
                           None if key_file else key_content, password)  # fmt: skip


def _secret_file(value: str, variable: str, what: str, if_content: str) -> str:
    """The text of the private file a variable names (never echoing the value)."""
    if value.lstrip().startswith("{") or "\n" in value or len(value) > 4096:
        raise ConfigurationError(f"{variable} must be a file's path, but it {if_content}")
    path = Path(value).expanduser()
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise ConfigurationError(f"{variable} names no readable file ({exc.strerror})") from None
    try:
        check_secret_file(fd, str(path), what)
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(1 << 20)
    finally:
        os.close(fd)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigurationError(f"{variable} names a file that is not UTF-8 text") from None


def _check_client_key(content: str, variable: str) -> None:
    try:
        parsed = json.loads(content)
    except ValueError:
        parsed = None
    if not (isinstance(parsed, dict) and isinstance(parsed.get("KeyId"), str)
            and isinstance(parsed.get("PrivateKeyData"), str)):  # fmt: skip
        raise ConfigurationError(
            f"{variable} is not a ClientKey (the JSON file with KeyId and PrivateKeyData that "
            "the KMS console downloads for an application access point)"
        )


def _ca(param: str | None, env_value: str) -> tuple[str | None, str | None]:
    variable = CLIENT_KEY_ENV["ca"]
    if param:
        return _ca_file(param, f"ca= in an {SCHEME} key URI", "(the instance CA certificate, PEM)"), None
    value = env_value.strip()
    if value.startswith("-----BEGIN"):
        return None, value + "\n"
    if value:
        return _ca_file(value, variable, "or its PEM content (-----BEGIN CERTIFICATE-----...)"), None
    raise ConfigurationError(
        f"the {SCHEME} key source needs the KMS instance's CA certificate (the gateway's TLS "
        f"certificate is signed by it): add ca=/abs/path/ca.pem to the key URI or set "
        f"{variable} to the path or the PEM content"
    )


def _ca_file(value: str, named: str, alternative: str) -> str:
    """An absolute path of an existing CA file (workers do not share the launcher's cwd)."""
    path = Path(value).expanduser()
    if not path.is_absolute() or not path.is_file():
        why = "is not an absolute path" if not path.is_absolute() else "names no file"
        raise ConfigurationError(
            f"{named} {why}: give the CA certificate's absolute path {alternative} (workers do "
            "not share the launcher's working directory)"
        )
    return str(path)


class AlibabaKmsInstanceKeySource:
    """A ``KeySource`` over one key of a KMS 3.0 instance, through its gateway.

    Args:
        uri: ``alibaba-kms-instance://HOST[:PORT]/KEY[?ca=/abs/ca.pem]``.
        retry: retry bounds; default ``RetryPolicy.from_env()`` (``KMSBEAM_KMS_*``).
        environ: where the ClientKey and CA variables are read (default ``os.environ``).

    Raises:
        ConfigurationError: a malformed URI, or a missing ClientKey, password or CA.

    Thread-safe. Pickling carries only the URI (and an explicitly given ``RetryPolicy``): the
    copy reads its own process's environment and starts its own helper.
    """

    created = False  # kmsbeam never creates keys in a KMS
    rewrap_path = "AdvanceDecrypt + AdvanceEncrypt (the data key passes through the job)"

    def __init__(self, uri: str | KeyUri, *, retry: RetryPolicy | None = None,
                 environ: Mapping[str, str] | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic,
                 random: Callable[[], float] = random.random) -> None:  # fmt: skip
        parsed = uri if isinstance(uri, KeyUri) else parse_key_uri(uri)
        if parsed.scheme != SCHEME:
            raise ConfigurationError(f"AlibabaKmsInstanceKeySource takes {SCHEME}:// key URIs, "
                                     f"not {parsed.scheme}:")  # fmt: skip
        self._uri = str(parsed)
        self._key = parsed.key
        self._settings = gateway_settings(parsed, environ)
        self._where = f"the KMS instance gateway at {parsed.location}"
        self._explicit_retry = retry
        self._retrier = Retrier(retry if retry is not None else RetryPolicy.from_env(),
                                sleep=sleep, clock=clock, random=random)  # fmt: skip

    # -- identity ---------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return self._uri

    @property
    def kind(self) -> int:
        return KIND_ALIBABA_KMS_INSTANCE

    @property
    def key(self) -> str:
        return self._key

    @property
    def where(self) -> str:
        return self._where

    def __repr__(self) -> str:
        return f"AlibabaKmsInstanceKeySource({self._uri!r})"

    def __reduce__(self) -> tuple[object, tuple[str, RetryPolicy | None]]:
        return (_reopen, (self._uri, self._explicit_retry))

    # -- KeySource ----------------------------------------------------------------------------
    def generate_data_key(self, context: Mapping[str, str] | None = None) -> DataKey:
        aad = canonical_context(context)
        answer = self._call("AdvanceGenerateDataKey", self._key,
                            {"key_id": self._key, "number_of_bytes": DEK_BYTES, "aad": aad})  # fmt: skip
        dek = answer.get("plaintext")
        if not isinstance(dek, bytes) or len(dek) != DEK_BYTES:
            raise self._malformed("AdvanceGenerateDataKey", answer, "a data key of the wrong size")
        wrapped = self._wrapped("AdvanceGenerateDataKey", answer)
        return DataKey(dek, wrapped, str(answer.get("key_id") or ""), instance_wrapped_key_version(wrapped))

    def decrypt_data_key(self, wrapped: bytes, context: Mapping[str, str] | None = None) -> bytes:
        """Unwrap with ``AdvanceDecrypt`` (any key of the instance this ClientKey may use)."""
        blob = instance_blob(wrapped)
        answer = self._call("AdvanceDecrypt", "", {"ciphertext_blob": blob, "aad": canonical_context(context)})
        dek = answer.get("plaintext")
        if not isinstance(dek, bytes) or len(dek) not in (16, 24, 32):
            raise self._malformed("AdvanceDecrypt", answer, "a data key of the wrong size")
        return dek

    def rewrap(self, wrapped: bytes, context: Mapping[str, str] | None = None,
               new_context: Mapping[str, str] | None = None) -> bytes:  # fmt: skip
        """``AdvanceDecrypt`` then ``AdvanceEncrypt`` to this source's key (no ReEncrypt on the
        instance API): the data key is in this process's memory between the two calls only.
        ``new_context=None`` keeps ``context``. The ClientKey needs both keys."""
        target = context if new_context is None else new_context
        dek = self.decrypt_data_key(wrapped, context)
        answer = self._call("AdvanceEncrypt", self._key,
                            {"key_id": self._key, "plaintext": dek, "aad": canonical_context(target)})  # fmt: skip
        del dek
        return self._wrapped("AdvanceEncrypt", answer)

    def describe_key(self) -> KeyInfo:
        """What one ``AdvanceEncrypt`` probe tells: key id and primary version (``Enabled``:
        it answered; a disabled key raises ``KeyDisabledError``)."""
        answer = self._probe()
        version = str(answer.get("key_version_id") or "")
        aliases = (self._key,) if self._key.startswith("alias/") else ()
        return KeyInfo(key_id=str(answer.get("key_id") or self._key), state="Enabled",
                       primary_version=version, aliases=aliases)  # fmt: skip

    def wrapped_key_version(self, wrapped: bytes) -> str:
        return instance_wrapped_key_version(wrapped)

    def current_version(self) -> str:
        version = str(self._probe().get("key_version_id") or "")
        if not version:
            raise ConfigurationError(f"{self._where} names no key version for {self._key}")
        return version

    def key_versions(self) -> tuple[str, ...]:
        """The current version only: the instance API cannot list a key's versions."""
        return (self.current_version(),)

    # -- plumbing -----------------------------------------------------------------------------
    def _probe(self) -> dict[str, Any]:
        return self._call("AdvanceEncrypt", self._key, {"key_id": self._key, "plaintext": b"\x00", "aad": _PROBE_AAD})

    def _call(self, action: str, key: str, request: Mapping[str, Any]) -> dict[str, Any]:
        gateway = shared_gateway(self._settings)

        def attempt() -> dict[str, Any]:
            acquire_kms_call()
            try:
                return gateway.call(action, request)
            except GatewayFailure as failure:
                raise classify_gateway(failure, self._where, action, key) from None

        try:
            return self._retrier.run(attempt)
        except GaveUp as exc:
            raise gave_up(exc, self._where, action, key) from None

    def _wrapped(self, action: str, answer: Mapping[str, Any]) -> bytes:
        blob = answer.get("ciphertext_blob")
        wrapped = instance_wrapped(str(answer.get("key_version_id") or ""), blob) if isinstance(blob, bytes) else None
        if wrapped is None:
            raise self._malformed(action, answer, "no usable CiphertextBlob and KeyVersionId")
        return wrapped

    def _malformed(self, action: str, answer: Mapping[str, Any], what: str) -> KeySourceError:
        rid = answer.get("request_id")
        rid = str(rid) if rid else None
        error = KeySourceError(f"{self._where}: {action} returned {what}" + (f" (request id {rid})" if rid else ""))
        return with_request_id(error, rid)


def _reopen(uri: str, retry: RetryPolicy | None) -> AlibabaKmsInstanceKeySource:
    return AlibabaKmsInstanceKeySource(uri, retry=retry)

