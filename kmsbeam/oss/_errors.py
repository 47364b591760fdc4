"""OSS errors mapped to kmsbeam's, and bounded retries with backoff for transient failures.

::

    KmsBeamError
    └── OssError                    OSS refused or failed (``status``, ``code``)
        ├── OssCredentialsError     credentials missing, unknown, or their signature rejected
        └── OssUnavailableError     5xx, throttling, resets, timeouts after every retry

A missing object is the builtin ``FileNotFoundError`` (naming the ``oss://`` URL), as for
local files. Messages carry the URL, the OSS error code and the request id; never a
credential (the access key id is not repeated either).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from kmsbeam.errors import KmsBeamError
from kmsbeam.oss._config import OssConfig

__all__ = [
    "OssCredentialsError",
    "OssError",
    "OssUnavailableError",
    "is_retryable",
    "map_error",
    "with_retries",
]

T = TypeVar("T")
_log = logging.getLogger("kmsbeam.oss")
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidSecurityToken", "SecurityTokenExpired",
    "RequestTimeTooSkewed", "InvalidArgument.Credential",
}  # fmt: skip
_RETRY_CODES = {"RequestTimeout", "InternalError", "ServiceUnavailable", "Throttling", "SlowDown"}


class OssError(KmsBeamError):
    """OSS refused or failed a request."""

    retryable = False

    def __init__(self, message: str, *, status: int = 0, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.status = status


class OssCredentialsError(OssError):
    """The credentials are missing, unknown to OSS, or their signatures do not match."""


class OssUnavailableError(OssError):
    """OSS kept failing (5xx, throttling, connection resets, timeouts) through every retry."""

    retryable = True


def is_retryable(exc: BaseException) -> bool:
    """5xx, throttling, CRC mismatches and network failures (resets, timeouts, refusals)."""
    import oss2.exceptions as oe
    import requests

    if isinstance(exc, (oe.RequestError, oe.InconsistentError)):
        return True
    if isinstance(exc, oe.ServerError):
        return int(exc.status) >= 500 or int(exc.status) == 429 or exc.code in _RETRY_CODES
    return isinstance(exc, (requests.RequestException, ConnectionError, TimeoutError))


def map_error(exc: BaseException, url: str, what: str) -> BaseException:
    """The kmsbeam error for an ``oss2``/network exception of operation ``what`` on ``url``."""
    import oss2.exceptions as oe

    if isinstance(exc, KmsBeamError):
        return exc
    if isinstance(exc, oe.ServerError):
        status, code = int(exc.status), str(exc.code or "")
        rid = f", request id {exc.request_id}" if getattr(exc, "request_id", "") else ""
        if code in _CREDENTIAL_CODES or (status == 403 and not code and what == "head"):
            return OssCredentialsError(
                f"OSS rejected the credentials ({code or status}) for {url}: check "
                "ALIBABA_CLOUD_ACCESS_KEY_ID / _SECRET / _SECURITY_TOKEN and the clock",
                status=status, code=code)  # fmt: skip
        if code == "NoSuchBucket":
            return OssError(f"the OSS bucket of {url} does not exist", status=status, code=code)
        if status == 404:
            return FileNotFoundError(f"no such OSS object: {url}")
        if status == 403:
            return OssError(f"OSS denied {what} on {url} ({code or 'AccessDenied'}{rid})",
                            status=status, code=code)  # fmt: skip
        if is_retryable(exc):
            return OssUnavailableError(f"OSS failed {what} on {url} ({status} {code}{rid}) "
                                       "after retrying", status=status, code=code)  # fmt: skip
        return OssError(f"OSS refused {what} on {url} ({status} {code}{rid})", status=status, code=code)
    if is_retryable(exc):
        return OssUnavailableError(f"OSS could not be reached for {what} on {url} "
                                   f"({type(exc).__name__}) after retrying")  # fmt: skip
    return exc


def with_retries(
    call: Callable[[], T],
    config: OssConfig,
    url: str,
    what: str,
    *,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """``call()`` with up to ``config.max_attempts`` attempts on retryable failures, waiting a
    random time up to ``backoff * 2**n`` (capped) between them; other failures and the last
    one are raised as kmsbeam errors (``map_error``)."""
    attempt = 1
    while True:
        try:
            return call()
        except Exception as exc:
            if attempt >= config.max_attempts or not is_retryable(exc):
                raise map_error(exc, url, what) from exc
            ceiling = min(config.max_backoff_seconds, config.backoff_seconds * 2 ** (attempt - 1))
            _log.info("OSS %s on %s failed (%s); retry %d", what, url, type(exc).__name__, attempt)
            sleep(random.uniform(0, ceiling))
            attempt += 1
