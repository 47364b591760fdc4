"""One KMS action of a source: the call budget, the retry policy and the SDK's errors mapped to
kmsbeam's, on this process's SDK client of the endpoint."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kmsbeam.alikms._client import Endpoint, shared_client
from kmsbeam.alikms._errors import classify, with_request_id
from kmsbeam.alikms._retry import GaveUp, Retrier, Transient
from kmsbeam.errors import KeySourceError, KeySourceUnavailableError, KmsBeamError
from kmsbeam.keys.budget import acquire_kms_call

__all__ = ["call_kms", "gave_up", "malformed"]


def call_kms(endpoint: Endpoint, retrier: Retrier, action: str, key: str, call: Callable[[Any], Any]) -> Any:
    """``call(sdk client)`` under the retry policy; returns the response body.

    Every attempt (retries too) first takes a token of the process's KMS call budget
    (``kmsbeam.keys.budget``), blocking while it is spent; without a budget it returns at once.

    Raises:
        KeySourceError: what ``kmsbeam.alikms._errors.classify`` maps the SDK's error to;
            ``KeySourceUnavailableError`` once the retries gave up, naming the last error.
    """
    where = endpoint.where

    def attempt() -> Any:
        acquire_kms_call()
        try:
            response = shared_client(endpoint).run(call)  # this process's (kmsbeam.process)
        except KmsBeamError:
            raise
        except Exception as exc:  # the SDK raises many kinds; all are mapped
            raise classify(exc, where, action, key) from exc
        body = getattr(response, "body", None)
        if body is None:
            raise Transient("an empty answer")
        return body

    try:
        return retrier.run(attempt)
    except GaveUp as exc:
        raise gave_up(exc, where, action, key) from exc.last.__cause__


def gave_up(exc: GaveUp, where: str, action: str, key: str) -> KeySourceUnavailableError:
    """The error for a call whose retries gave up (either gateway): names the last error."""
    last = exc.last
    on = f" on {key}" if key else ""
    error = KeySourceUnavailableError(
        f"{where} is unavailable: {action}{on} gave up after {exc.why}; last error: "
        f"{last.reason}. Retry later (bounds: KMSBEAM_KMS_MAX_ATTEMPTS, "
        "KMSBEAM_KMS_DEADLINE_SECONDS)",
        code=last.code,
    )
    return with_request_id(error, last.request_id)


def malformed(endpoint: Endpoint, action: str, body: Any, what: str) -> KeySourceError:
    """The error for an answer the SDK parsed but kmsbeam cannot use (with its request id)."""
    rid = getattr(body, "request_id", None)
    error = KeySourceError(
        f"{endpoint.where}: {action} returned {what}" + (f" (request id {rid})" if rid else "")
    )
    return with_request_id(error, rid)
