"""API errors of the emulator: Alibaba Cloud KMS error codes, HTTP statuses and the JSON body.

Every failure the emulator answers is an ``ApiError`` rendered as Alibaba's error document::

    {"RequestId": "...", "HostId": "...", "Code": "...", "Message": "...", "Recommend": "..."}

Engine errors (``KmsBeamError`` with ``.code``) are mapped by code first, then by class.
A message never carries key material, plaintext, a blob or a secret: engine messages name keys
and states only, and unexpected exceptions become a fixed ``InternalFailure`` message.
"""

from __future__ import annotations

import json
from typing import Any

from kmsbeam.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    KeyNotFoundError,
    KeySourceUnavailableError,
    KmsBeamError,
)

__all__ = ["ApiError", "error_body", "from_exception", "invalid_ciphertext", "status_for"]

_INVALID_CIPHERTEXT = "the ciphertext is invalid or does not match its encryption context"

# The status of each code the emulator answers with (codes not listed: see ``status_for``).
_STATUS = {
    "IncompleteSignature": 400,
    "SignatureDoesNotMatch": 400,
    "SignatureNonceUsed": 400,
    "IllegalTimestamp": 400,
    "InvalidAccessKeyId.NotFound": 404,
    "InvalidSecurityToken.Malformed": 400,
    "InvalidSecurityToken.Expired": 400,
    "InvalidSecurityToken.MismatchWithAccessKey": 400,
    "InvalidAction.NotFound": 404,
    "InvalidVersion": 400,
    "UnsupportedHTTPMethod": 400,
    "MissingParameter": 400,
    "InvalidParameter": 400,
    "InvalidCiphertext": 400,
    "AliasAlreadyExists": 400,
    "DryRunOperationError": 400,
    "UnsupportedOperation": 400,
    "Forbidden.NoPermission": 403,
    "Forbidden.KeyNotFound": 404,
    "Forbidden.AliasNotFound": 404,
    "Forbidden.ResourceNotFound": 404,
    "Rejected.Throttling": 429,
    "InternalFailure": 500,
    "ServiceUnavailableTemporary": 503,
}


class ApiError(Exception):
    """One Alibaba-style API error: ``code``, HTTP ``status`` and a safe ``message``.

    ``retry_after_ms`` (throttling only) becomes the ``x-acs-retry-after`` header.
    """

    def __init__(
        self, code: str, message: str, *, status: int | None = None, retry_after_ms: int = 0
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status if status is not None else status_for(code)
        self.retry_after_ms = retry_after_ms

    def __repr__(self) -> str:
        return f"ApiError({self.code!r}, status={self.status})"


def status_for(code: str, default: int = 400) -> int:
    """The HTTP status Alibaba answers ``code`` with."""
    if code in _STATUS:
        return _STATUS[code]
    if code.startswith("Rejected."):
        return 409  # Disabled, PendingDeletion, PendingImport, ...
    if code.startswith("Forbidden."):
        return 404 if code.endswith("NotFound") else 403
    if code.startswith(("InvalidParameter", "MissingParameter", "Invalid")):
        return 400
    return default


def from_exception(exc: BaseException) -> ApiError:
    """The API error for an exception raised while serving a call."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, KmsBeamError):
        code = exc.code or _code_for_class(exc)
        status = status_for(code, _status_for_class(exc))
        if status >= 500 and code not in _STATUS:
            code = "ServiceUnavailableTemporary" if status == 503 else "InternalFailure"
        if isinstance(exc, AuthenticationError):  # fixed text: no detail, ever
            return ApiError(code, _INVALID_CIPHERTEXT)
        return ApiError(code, str(exc) or code, status=status)
    if isinstance(exc, (ValueError, TypeError)):
        return ApiError("InvalidParameter", "a parameter of the request is not valid")
    return ApiError("InternalFailure", "the emulator failed while serving the request")


def invalid_ciphertext() -> ApiError:
    """The one error for any ciphertext that does not open: malformed, tampered, foreign,
    or under another encryption context all read the same."""
    return ApiError("InvalidCiphertext", _INVALID_CIPHERTEXT)


def _code_for_class(exc: KmsBeamError) -> str:
    if isinstance(exc, AuthenticationError):
        return "InvalidCiphertext"
    if isinstance(exc, AccessDeniedError):
        return "Forbidden.NoPermission"
    if isinstance(exc, KeyNotFoundError):
        return "Forbidden.KeyNotFound"
    if isinstance(exc, KeySourceUnavailableError):
        return "ServiceUnavailableTemporary"
    if isinstance(exc, ConfigurationError):
        return "InvalidParameter"
    return "InternalFailure"


def _status_for_class(exc: KmsBeamError) -> int:
    return status_for(_code_for_class(exc), 500)


def error_body(error: ApiError, request_id: str, host_id: str) -> bytes:
    """The JSON error document of ``error``."""
    document: dict[str, Any] = {
        "RequestId": request_id,
        "HostId": host_id,
        "Code": error.code,
        "Message": error.message,
        "Recommend": f"https://api.aliyun.com/troubleshoot?q={error.code}&product=Kms",
    }
    return json.dumps(document, separators=(",", ":")).encode("utf-8")
