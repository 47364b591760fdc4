"""The instance-SDK helper: runs the official ``alibabacloud-dkms-gcs`` SDK for kmsbeam.

This file is run as a script by the interpreter of the instance-SDK virtualenv
(``kmsbeam.alikms._instance_sdk``), never imported by kmsbeam: the SDK's generated protobuf
code needs protobuf 3, and Apache Beam needs protobuf 6, so the two cannot share one
interpreter. It imports only the standard library and the SDK, unmodified.

Protocol: one JSON object per line on stdin, one answer per line on stdout, in order.
Bytes travel as standard base64 text. The first request configures the client::

    {"op": "init", "endpoint": "HOST:PORT", "ca_file": "/abs/ca.pem",
     "client_key_file": "/abs/clientKey.json" | "client_key_content": "{...}",
     "password": "...", "connect_timeout_ms": 5000, "read_timeout_ms": 10000}

then each call names an action and its request fields (the SDK's snake_case names)::

    {"op": "call", "action": "AdvanceGenerateDataKey",
     "request": {"key_id": "alias/pii", "number_of_bytes": 32, "aad": "<b64>"}}

Answers: ``{"ok": {FIELD: value, ...}}`` (the response's fields; bytes as base64) or
``{"error": {"type": "service" | "connection" | "setup", "code": ..., "status": ...,
"request_id": ..., "message": ...}}``. A service error's message is the service's own; a
connection error's is the exception class and text. Nothing here logs or prints a request,
a plaintext or the ClientKey password. The SDK's own retries are off (kmsbeam retries).
"""

import base64
import importlib
import json
import sys
import traceback
from typing import Any

ACTIONS = {  # action -> (SDK method, request class, byte fields of the request)
    "AdvanceGenerateDataKey": ("advance_generate_data_key_with_options", "AdvanceGenerateDataKeyRequest", ("aad",)),
    "AdvanceEncrypt": ("advance_encrypt_with_options", "AdvanceEncryptRequest", ("plaintext", "aad", "iv")),
    "AdvanceDecrypt": ("advance_decrypt_with_options", "AdvanceDecryptRequest", ("ciphertext_blob", "aad", "iv")),
}
ANSWER_FIELDS = ("key_id", "key_version_id", "plaintext", "ciphertext_blob", "iv", "algorithm", "request_id")


def _b64(value: bytes) -> str:
    return base64.b64encode(value).decode("ascii")


def _error(kind: str, message: str, code: str | None = None, status: int | None = None,
           request_id: str | None = None) -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "status": status, "request_id": request_id,
                      "message": message}}


class Helper:
    def __init__(self) -> None:
        self.client: Any = None
        self.runtime: Any = None
        self.models: Any = None

    def init(self, req: dict[str, Any]) -> dict[str, Any]:
        try:
            config_class = importlib.import_module("openapi.models").Config
            runtime_class = importlib.import_module("openapi_util.models").RuntimeOptions
            models = importlib.import_module("sdk.models")
            client_class = importlib.import_module("sdk.client").Client
        except Exception as exc:  # the SDK is not importable here
            return _error("setup", f"the instance SDK cannot be imported: {type(exc).__name__}: {exc}")
        try:
            config = config_class(
                endpoint=req["endpoint"],
                protocol="https",
                ca_file_path=req["ca_file"],
                client_key_file=req.get("client_key_file") or None,
                client_key_content=req.get("client_key_content") or None,
                password=req["password"],
                connect_timeout=req.get("connect_timeout_ms"),
                read_timeout=req.get("read_timeout_ms"),
                user_agent="kmsbeam",
            )
            self.client = client_class(config)
        except Exception as exc:  # a ClientKey that does not open; never echo the password
            return _error("setup", "the ClientKey does not open with its password", code="ClientKeyPassword")
        self.runtime = runtime_class(autoretry=False, max_attempts=1, ignore_ssl=False)
        self.models = models
        return {"ok": {}}

    def call(self, req: dict[str, Any]) -> dict[str, Any]:
        if self.client is None:
            return _error("setup", "the helper was not initialised")
        action = req.get("action")
        if action not in ACTIONS:
            return _error("setup", f"unknown action {action!r}")
        method, request_class, byte_fields = ACTIONS[action]
        fields = dict(req.get("request") or {})
        for name in byte_fields:
            if fields.get(name) is not None:
                fields[name] = base64.b64decode(fields[name])
        request = getattr(self.models, request_class)(**fields)
        try:
            response = getattr(self.client, method)(request, self.runtime)
        except Exception as exc:
            return self._failure(exc)
        out: dict[str, Any] = {}
        for name in ANSWER_FIELDS:
            value = getattr(response, name, None)
            if isinstance(value, (bytes, bytearray)):
                out[name] = _b64(bytes(value))
            elif value is not None:
                out[name] = str(value)
        return {"ok": out}

    @staticmethod
    def _failure(exc: Exception) -> dict[str, Any]:
        tea = importlib.import_module("Tea.exceptions")
        if isinstance(exc, tea.TeaException) and getattr(exc, "code", None):
            data = exc.data if isinstance(getattr(exc, "data", None), dict) else {}
            status = data.get("httpCode")
            return _error("service", str(exc.message or ""), code=str(exc.code),
                          status=status if isinstance(status, int) else None,
                          request_id=data.get("requestId"))
        inner: BaseException = exc
        if isinstance(exc, tea.UnretryableException):
            inner = getattr(exc, "inner_exception", None) or exc
        return _error("connection", f"{type(inner).__name__}: {inner}"[:500])


def main() -> None:
    helper = Helper()
    out = sys.stdout
    sys.stdout = sys.stderr  # nothing but answers on the answer stream
    for line in sys.stdin:
        try:
            req = json.loads(line)
            op = req.get("op")
            if op == "init":
                answer = helper.init(req)
            elif op == "call":
                answer = helper.call(req)
            else:
                answer = _error("setup", f"unknown op {op!r}")
        except Exception as exc:  # a helper bug: the class only (no request content)
            answer = _error("setup", f"helper failure ({type(exc).__name__})")
            traceback.clear_frames(sys.exc_info()[2])
        out.write(json.dumps(answer) + "\n")
        out.flush()


if __name__ == "__main__":
    main()
