"""SDK exceptions mapped to kmsbeam's error tree (or to ``Transient`` for a retry).

===========================================================  ================================
Alibaba code / failure                                       kmsbeam error
===========================================================  ================================
``Rejected.Throttling``, any 429, ``ThrottlingException``,   retried, then
5xx (``InternalFailure``, ``ServiceUnavailableTemporary``),  ``KeySourceUnavailableError``
refused, reset or dropped connections, timeouts, garbled
answers, ``SignatureNonceUsed``
an untrusted TLS certificate, no TLS at the endpoint         ``ConfigurationError``
``Forbidden.NoPermission`` and other ``Forbidden.*``,        ``AccessDeniedError``
``InvalidAccessKeyId.*``, signature and STS-token codes,
``IllegalTimestamp``, no credentials found
``Forbidden.KeyNotFound``, ``Forbidden.AliasNotFound``       ``KeyNotFoundError``
``Rejected.Disabled``, ``Rejected.PendingDeletion``,         ``KeyDisabledError``
``Rejected.PendingImport``
``InvalidCiphertext`` (tampered blob, wrong context)         ``AuthenticationError`` (opaque)
``InvalidParameter*``, ``MissingParameter*``, ...            ``ConfigurationError``
anything else                                                ``KeySourceError``
===========================================================  ================================

Every mapped error keeps the service's code in ``.code`` and its request id (not a secret;
Alibaba support asks for it) in ``.request_id`` and, except for the deliberately opaque
``AuthenticationError``, in the message. Messages carry the service's own message, which
names keys and states only; never request parameters, credentials or tokens.
"""

from __future__ import annotations

import importlib
import re
from typing import Any, TypeVar

from kmsbeam.alikms._retry import Transient
from kmsbeam.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    KeyDisabledError,
    KeyNotFoundError,
    KeySourceError,
    KmsBeamError,
)

__all__ = ["NO_CREDENTIALS", "classify", "classify_gateway", "with_request_id"]

E = TypeVar("E", bound=KmsBeamError)

NO_CREDENTIALS = (
    "no Alibaba Cloud credentials were found: set ALIBABA_CLOUD_ACCESS_KEY_ID and "
    "ALIBABA_CLOUD_ACCESS_KEY_SECRET (plus ALIBABA_CLOUD_SECURITY_TOKEN for STS), or configure "
    "OIDC, an aliyun CLI profile, a credentials file or an ECS RAM role"
)
_DISABLED = {"Rejected.Disabled", "Rejected.PendingDeletion", "Rejetced.PendingDeletion",
             "Rejected.PendingImport"}  # fmt: skip
_NOT_FOUND = {"Forbidden.KeyNotFound", "Forbidden.AliasNotFound", "Forbidden.ResourceNotFound"}
_ACCESS_PREFIXES = ("InvalidAccessKeyId", "SignatureDoesNotMatch", "IncompleteSignature",
                    "InvalidSecurityToken", "InvalidCredentials", "IllegalTimestamp",
                    "Forbidden.")  # fmt: skip
_CONFIG_PREFIXES = ("InvalidParameter", "MissingParameter", "InvalidAction", "InvalidVersion",
                    "UnsupportedHTTPMethod", "DryRunOperationError")  # fmt: skip
# the instance gateway (KMS 3.0): a ClientKey unknown, unsigned or not allowed the key
_GATEWAY_ACCESS = ("Unauthorized", "SignatureNotMatch", "RequestTimeTooSkewed", "InvalidClientKey",
                   "Forbidden.ClientKey", "Forbidden.AccessPoint")  # fmt: skip
_GATEWAY_CONFIG = ("InvalidApiName", "InvalidApiVersion", "InvalidParam")
_GATEWAY_INVALID_BLOB = {"InvalidCiphertext", "InvalidParameter.CiphertextBlob", "Rejected.InvalidCiphertext"}
_TRANSIENT_CODES = {"SignatureNonceUsed", "ServiceUnavailableTemporary", "InternalFailure"}
_CONNECTION = (
    (re.compile(r"\[Errno -?\d+\] [^'\")\]]{1,80}"), None),
    (re.compile(r"RemoteDisconnected|Connection aborted|Connection reset|closed connection"),
     "the connection was closed without an answer"),
    (re.compile(r"[Tt]imed? ?out"), "the request timed out"),
    (re.compile(r"SSLError|SSL:", re.I), "the TLS connection failed"),
)  # fmt: skip
# TLS failures that retrying cannot fix: an untrusted certificate, or no TLS at all
_TLS_CONFIG = re.compile(
    r"(certificate verify failed|CERTIFICATE_VERIFY_FAILED|doesn't match|hostname mismatch|"
    r"wrong version number|WRONG_VERSION_NUMBER|could not find a suitable TLS CA)",
    re.I,
)


def with_request_id(error: E, request_id: str | None) -> E:
    """Attach the service's request id (``error.request_id``; ``None`` if there was none)."""
    setattr(error, "request_id", request_id)  # noqa: B010 - the error classes are shared
    return error


def _clean(value: Any, limit: int = 300) -> str:
    text = re.sub(r"\s+", " ", str(value or "")).strip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _connection_reason(exc: BaseException) -> str:
    return _reason_of(f"{type(exc).__name__}: {exc}", type(exc).__name__)


def _reason_of(text: str, name: str) -> str:
    for pattern, reason in _CONNECTION:
        match = pattern.search(text)
        if match:
            return reason or f"connection failed ({match.group(0).strip()})"
    return f"connection failed ({name})"


def classify(exc: BaseException, where: str, action: str, key: str) -> KmsBeamError | Transient:
    """The kmsbeam error (or ``Transient``) for an exception raised by an SDK call.

    Args:
        exc: what the SDK raised.
        where: the endpoint, for messages ("Alibaba Cloud KMS (cn-hangzhou)").
        action: the API action ("GenerateDataKey").
        key: the key the call named ("" for Decrypt, which names none).
    """
    openapi = importlib.import_module("alibabacloud_tea_openapi.exceptions")
    if not isinstance(exc, openapi.AlibabaCloudException):
        return _unanswered(exc, where)
    code = str(exc.code or "")
    status = exc.status_code if isinstance(exc.status_code, int) else None
    rid = exc.request_id if exc.request_id not in (None, "", "None") else None
    data = exc.data if isinstance(exc.data, dict) else {}
    message = _clean(data.get("Message") or data.get("message") or "")
    said = f"{code or 'error'}" + (f" (HTTP {status})" if status else "")
    said += f": {message}" if message else ""
    said += f" (request id {rid})" if rid else ""
    if (
        isinstance(exc, openapi.ThrottlingException)
        or status == 429
        or "Throttling" in code
        or code in _TRANSIENT_CODES
        or (status is not None and status >= 500)
    ):
        wait = exc.retry_after if isinstance(exc.retry_after, (int, float)) else None
        return Transient(
            said,
            retry_after=wait / 1000 if wait and wait > 0 else None,
            code=code or None,
            request_id=rid,
        )
    return with_request_id(_mapped(code, said, where, action, key), rid)


def classify_gateway(failure: Any, where: str, action: str, key: str) -> KmsBeamError | Transient:
    """The kmsbeam error (or ``Transient``) for a failed call of the KMS instance gateway, as
    the instance-SDK helper reports it (``kmsbeam.alikms._instance_sdk.GatewayFailure``): the
    same table as ``classify``, plus the instance gateway's own codes (a ClientKey that is
    unknown or not allowed the key: ``AccessDeniedError``; a blob or AAD that does not match:
    ``AuthenticationError``); a ClientKey that does not open, or a missing SDK, is a
    ``ConfigurationError``."""
    kind, code, status = failure.kind, str(failure.code or ""), failure.status
    rid = failure.request_id
    if kind == "setup" and code == "ClientKeyPassword":  # nothing was sent to the gateway
        return ConfigurationError(
            "the ClientKey does not open with its password (or its PrivateKeyData is damaged): "
            "check KMSBEAM_KMS_CLIENT_KEY_PASSWORD or KMSBEAM_KMS_CLIENT_KEY_PASSWORD_FILE"
        )
    if kind == "setup":
        return ConfigurationError(failure.message)
    if kind == "connection":
        tls = _TLS_CONFIG.search(failure.message)
        if tls:
            what = tls.group(1).lower().replace("_", " ")
            return ConfigurationError(
                f"{where}: TLS failed ({what}): check the gateway host and the CA certificate "
                f"(ca= in the key URI, or KMSBEAM_KMS_INSTANCE_CA)"
            )
        return Transient(_reason_of(failure.message, failure.message.partition(':')[0][:60]))
    message = _clean(failure.message)
    said = f"{code or 'error'}" + (f" (HTTP {status})" if status else "")
    said += f": {message}" if message else ""
    said += f" (request id {rid})" if rid else ""
    if status == 429 or "Throttling" in code or code in _TRANSIENT_CODES or (status or 0) >= 500:
        return Transient(said, code=code or None, request_id=rid)
    if code in _GATEWAY_INVALID_BLOB:
        return AuthenticationError(code="InvalidCiphertext")
    if code.startswith(_GATEWAY_ACCESS) or (code.startswith("Forbidden.") and code not in _NOT_FOUND):
        denied = AccessDeniedError(
            f"{where}: {action}{' on ' + key if key else ''} was refused: {said}; check the "
            "ClientKey (KMSBEAM_KMS_CLIENT_KEY_FILE) and its application access point's policy",
            code=code,
        )
        return with_request_id(denied, rid)
    if code.startswith(_GATEWAY_CONFIG):
        return with_request_id(ConfigurationError(f"{where}: {action} was rejected: {said}", code=code), rid)
    return with_request_id(_mapped(code, said, where, action, key), rid)


def _unanswered(exc: BaseException, where: str) -> KmsBeamError | Transient:
    """A call the service did not answer: no credentials, TLS, network, garbled response."""
    credentials = importlib.import_module("alibabacloud_credentials.exceptions")
    inner = getattr(exc, "inner_exception", None) or exc  # the SDK wraps what it caught
    if isinstance(inner, credentials.CredentialException):
        denied = AccessDeniedError(f"{where}: {NO_CREDENTIALS}", code="InvalidCredentials")
        return with_request_id(denied, None)
    if isinstance(inner, ValueError) and not isinstance(inner, OSError):
        return Transient(f"the answer was not a KMS response ({type(inner).__name__})")
    tls = _TLS_CONFIG.search(str(inner))
    if tls:
        what = tls.group(1).lower().replace("_", " ")
        bad_tls = ConfigurationError(
            f"{where}: TLS failed ({what}): check the endpoint= and ca= parameters of the key "
            "URI (ca= is the KMS instance's CA certificate file)"
        )
        return with_request_id(bad_tls, None)
    return Transient(_connection_reason(inner))


def _mapped(code: str, said: str, where: str, action: str, key: str) -> KmsBeamError:
    on = f" on {key}" if key else ""
    if code == "InvalidCredentials":
        return AccessDeniedError(f"{where}: {NO_CREDENTIALS}", code=code)
    if code == "InvalidCiphertext":
        return AuthenticationError(code=code)
    if code in _DISABLED:
        return KeyDisabledError(
            f"{where}: the key{on} cannot be used now: {said}; enable it (or cancel its "
            "deletion) and retry",
            code=code,
        )
    if code in _NOT_FOUND:
        if key.startswith("alias/"):
            todo = "create the alias in the KMS first (kmsbeam never creates keys in a remote KMS)"
        elif key:
            todo = "check the key id and the region or endpoint"
        else:
            todo = "the key that wrapped this data key no longer exists here"
        named = key or "(named by the blob)"
        return KeyNotFoundError(f"{where}: no key {named}: {said}; {todo}", code=code)
    if code.startswith(_ACCESS_PREFIXES):
        return AccessDeniedError(
            f"{where}: {action}{on} was refused: {said}; check the credentials and the RAM "
            "policy of the caller",
            code=code,
        )
    if code.startswith(_CONFIG_PREFIXES):
        return ConfigurationError(f"{where}: {action}{on} was rejected: {said}", code=code)
    return KeySourceError(f"{where}: {action}{on} failed: {said}", code=code or None)
