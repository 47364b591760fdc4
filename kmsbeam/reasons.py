"""Dead-letter reasons, and which failures are not a record's but the job's.

Dead letters are for bad records: a missing field, a value of the wrong type, a value that
does not authenticate or is not a kmsbeam value at all, a value whose data key names a key the
key source does not have. A failure of the key source itself (unreachable, throttling past the
retry budget, access denied, the job's key disabled or unknown, a source that cannot be opened,
a configuration mistake) is never a record's fault: ``fails_job`` says so, and the Beam layer
raises ``job_error`` out of the DoFn so the bundle fails (the runner retries it) and, past the
runner's retries, the job fails with that one sentence; good records are never dead-lettered.
"""

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
from kmsbeam.failures import fresh_error

__all__ = ["failure_reason", "fails_job", "job_error"]

OPERATIONS = ("encrypt", "decrypt", "rewrap")


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
        return f"key source unavailable{where}: {exc}"
    if isinstance(exc, ConfigurationError):
        return f"configuration error{where}: {exc}"
    if isinstance(exc, KmsBeamError):
        return f"KMS error{where}: {exc}"
    if isinstance(exc, TypeError):
        return f"wrong type: {exc}"
    return f"unexpected error{where}: {type(exc).__name__}"


def fails_job(exc: BaseException, op: str) -> bool:
    """Whether ``exc``, raised while processing one record, is the key source's failure (the
    job must fail) rather than the record's (a dead letter).

    ``op`` is ``"encrypt"``, ``"decrypt"`` or ``"rewrap"``. On encrypt only the record can be
    bad (missing field, wrong type): any other error means no data key. On decrypt and rewrap
    a value may also fail to authenticate, be malformed, or name a key the source does not
    have (tampered, or its key deleted); a *disabled* key, a denial, an unreachable source and
    a configuration mistake fail the job: the key source said no, not the record.
    """
    if op not in OPERATIONS:
        raise ValueError(f"op must be one of {OPERATIONS}")
    if isinstance(exc, (RecordError, AuthenticationError, TypeError)):
        return False
    if not isinstance(exc, KmsBeamError):
        return False  # not a kmsbeam failure: the caller's own handling applies
    if op == "encrypt":
        return True
    if isinstance(exc, KeyNotFoundError) and not isinstance(exc, KeyDisabledError):
        return False
    return True


def job_error(label: str, exc: KmsBeamError) -> KmsBeamError:
    """A fresh error of ``exc``'s class saying, in one sentence, why the job stops (no cause,
    no context, no record in it): ``"EncryptFields: key disabled: ..."``."""
    return fresh_error(type(exc), f"{label}: {failure_reason(exc)}", exc.code)
