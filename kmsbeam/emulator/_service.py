"""The request pipeline of the emulator, independent of the HTTP server that feeds it.

For each request, in order: parse the query (and form body), authenticate the signature
(``_signature``), inject faults (``_faults``), check method, path, API version and action,
check the action's parameters, run the handler (which authorizes, then calls the engine),
answer JSON, and append one audit record whatever happened. Every error is an Alibaba error
document (``_errors``); an unexpected exception is ``InternalFailure`` with a fixed message
(its type goes to the ``kmsbeam.emulator`` logger, its message nowhere).
"""

from __future__ import annotations

import json
import logging
import os
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import unquote_plus

from kmsbeam.emulator._actions import ACTIONS
from kmsbeam.emulator._audit import AuditLog, event_time, logged_parameters
from kmsbeam.emulator._call import Action, Call
from kmsbeam.emulator._errors import ApiError, error_body, from_exception
from kmsbeam.emulator._faults import DROP, FaultInjector
from kmsbeam.emulator._params import Params, invalid, merge_parameters
from kmsbeam.emulator._signature import Authenticator, claimed_access_key
from kmsbeam.errors import KmsBeamError
from kmsbeam.kms import KmsEngine

__all__ = ["API_VERSION", "Request", "Response", "Service"]

API_VERSION = "2016-01-20"
MAX_FIELDS = 100
MEMO_LENGTH = 512  # parameters up to this long are decoded once per distinct text
_encode = json.JSONEncoder(separators=(",", ":")).encode  # json.dumps(..., separators=...)
_log = logging.getLogger("kmsbeam.emulator")


@dataclass(frozen=True)
class Request:
    """One HTTP request as received. ``headers`` maps lower-case names to their values."""

    method: str
    target: str
    headers: Mapping[str, Sequence[str]]
    body: bytes
    source_ip: str


@dataclass(frozen=True)
class Response:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class Service:
    """Serves API calls against one engine (thread-safe: one ``handle`` per thread)."""

    def __init__(
        self,
        engine: KmsEngine,
        authenticator: Authenticator,
        *,
        audit: AuditLog | None = None,
        faults: FaultInjector | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.authenticator = authenticator
        self.audit = audit
        self.faults = faults
        self._clock = clock

    def handle(self, request: Request) -> Response | None:
        """The response to ``request``, or ``None`` to drop the connection unanswered."""
        request_id = str(uuid.uuid4()).upper()
        action = _first(request.headers, "x-acs-action")
        record: dict[str, Any] = {
            "eventTime": event_time(self._clock()),
            "eventType": "ApiCall",
            "serviceName": "Kms",
            "eventName": action[:128] if action else None,
            "acsRegion": self.engine.region,
            "requestId": request_id,
            "sourceIpAddress": request.source_ip,
            "userIdentity": None,
        }
        call: Call | None = None
        try:
            path, _, query_text = request.target.partition("?")
            query = merge_parameters(_pairs(query_text))
            record["requestParameters"] = logged_parameters(query)
            key = self.authenticator.authenticate(
                request.method, path, query, request.headers, request.body
            )
            if request.body:  # the SDK puts a few parameters (Recipient) in a form body
                values = merge_parameters(query.items(), _form(request))
                record["requestParameters"] = logged_parameters(values)
            else:
                values = query
            record["userIdentity"] = {
                "type": "sts-token" if key.temporary else "access-key",
                "accessKeyId": key.access_key_id,
            }
            faults = self.faults
            if faults is not None and faults.inject() == DROP:
                record["outcome"] = "dropped"
                return None
            name, spec = self._action(request, path, action)
            call = Call(self.engine, name, Params(values, spec.allowed, spec.required),
                        key, request.source_ip, self._clock())  # fmt: skip
            result = spec.handler(call)
            if not call.authorized:
                raise RuntimeError(f"the {name} handler did not authorize the call")
            body = _encode({"RequestId": request_id, **result})
            record.update(outcome="success", httpStatus=200)
            return Response(200, self._headers(request_id), body.encode("utf-8"))
        except Exception as exc:
            error = from_exception(exc)
            if not isinstance(exc, (ApiError, KmsBeamError)):
                debug = bool(os.environ.get("KMSBEAM_DEBUG"))
                _log.error("InternalFailure in %s (request %s): %s", action, request_id,
                           type(exc).__name__, exc_info=debug)  # fmt: skip
            record.update(outcome="error", errorCode=error.code, httpStatus=error.status)
            headers = self._headers(request_id)
            if error.retry_after_ms:
                headers.append(("x-acs-retry-after", str(error.retry_after_ms)))
            host = _first(request.headers, "host") or "kms.aliyuncs.com"
            return Response(error.status, headers, error_body(error, request_id, host))
        finally:
            if record["userIdentity"] is None:  # not authenticated: who it claimed to be
                claimed = claimed_access_key(request.headers)
                record["userIdentity"] = {"type": "unknown", "accessKeyId": claimed}
            if call is not None:
                record["keyId"] = call.key_id
                record["keyVersionId"] = call.key_version_id
            if self.audit is not None:
                try:
                    self.audit.write(record)
                except OSError as exc:  # the call happened: answer it, but say so loudly
                    _log.error("could not append to the audit log %s: %s", self.audit.path,
                               exc.strerror or type(exc).__name__)  # fmt: skip

    @staticmethod
    def _action(request: Request, path: str, action: str | None) -> tuple[str, Action]:
        if request.method not in ("POST", "GET"):
            raise ApiError("UnsupportedHTTPMethod", "use POST (or GET) for KMS API calls")
        if path != "/" or not action or action not in ACTIONS:
            raise ApiError(
                "InvalidAction.NotFound",
                "the specified API is not found; check x-acs-action and the path (/)",
            )
        version = _first(request.headers, "x-acs-version")
        if version != API_VERSION:
            raise ApiError("InvalidVersion", f"the API version must be {API_VERSION}")
        return action, ACTIONS[action]

    @staticmethod
    def _headers(request_id: str) -> list[tuple[str, str]]:
        return [("Content-Type", "application/json;charset=utf-8"),
                ("x-acs-request-id", request_id)]  # fmt: skip


def _first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


def _pairs(text: str) -> list[tuple[str, str]]:
    """``parse_qsl(text, keep_blank_values=True)``, faster for the SDK's plain values."""
    pairs = []
    for part in text.split("&") if text else ():
        if part:
            name, _, value = part.partition("=")
            if "%" in part or "+" in part:
                name, value = _unquote(name), _unquote(value)
            pairs.append((name, value))
    if len(pairs) > MAX_FIELDS:
        raise invalid(f"a request has at most {MAX_FIELDS} parameters")
    return pairs


_unquote_memo = lru_cache(maxsize=4096)(unquote_plus)


def _unquote(text: str) -> str:
    """``unquote_plus(text)``; the SDK sends the same context and key names again and again."""
    return _unquote_memo(text) if len(text) <= MEMO_LENGTH else unquote_plus(text)


def _form(request: Request) -> list[tuple[str, str]]:
    if not request.body:
        return []
    content_type = (_first(request.headers, "content-type") or "").split(";")[0].strip()
    if content_type != "application/x-www-form-urlencoded":
        raise invalid("a request body must be application/x-www-form-urlencoded")
    try:
        return _pairs(request.body.decode("utf-8"))
    except UnicodeDecodeError:
        raise invalid("the form body is not UTF-8") from None
