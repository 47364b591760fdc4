"""Dead-letter reasons: one short, stable, detail-free sentence per failed record."""

from __future__ import annotations

from kmsbeam.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    KeyDisabledError,
    KeyNotFoundError,
    KeySourceUnavailableError,
    KmsBeamError,
    MalformedValueError,
    RecordError,
)

__all__ = ["failure_reason"]


def failure_reason(exc: BaseException) -> str:
    """The dead-letter reason for an exception raised while processing one record.

    The reason names the field and the kind of failure, never a value or key material. An
    authentication failure is one fixed reason whatever went wrong.
    """
    where = f" (field {exc.field})" if isinstance(exc, KmsBeamError) and exc.field else ""
    if isinstance(exc, RecordError):
        return str(exc)
    if isinstance(exc, MalformedValueError):
        return f"malformed value{where}: not a kmsbeam encrypted value"
    if isinstance(exc, AuthenticationError):
        return f"authentication failed{where}: tampered, moved, or wrong key or context"
    if isinstance(exc, KeyDisabledError):
        return f"key disabled{where}: {exc}"
    if isinstance(exc, KeyNotFoundError):
        return f"key not found{where}: {exc}"
    if isinstance(exc, AccessDeniedError):
        return f"access denied{where}: {exc}"
    if isinstance(exc, KeySourceUnavailableError):
        return f"key source unavailable{where} (retry the dead letters later): {exc}"
    if isinstance(exc, ConfigurationError):
        return f"configuration error{where}: {exc}"
    if isinstance(exc, KmsBeamError):
        return f"KMS error{where}: {exc}"
    if isinstance(exc, TypeError):
        return f"wrong type: {exc}"
    return f"unexpected error{where}: {type(exc).__name__}"
