"""The emulator's audit trail: one ActionTrail-like JSON line per API call.

Every call is recorded, including denied, failed, throttled and dropped ones::

    {"eventTime": "2026-01-20T12:00:00.123Z", "eventType": "ApiCall", "serviceName": "Kms",
     "eventName": "GenerateDataKey", "acsRegion": "cn-hangzhou",
     "requestId": "0F2C...", "sourceIpAddress": "127.0.0.1",
     "userIdentity": {"type": "access-key", "accessKeyId": "ingest"},
     "keyId": "...", "keyVersionId": "...", "requestParameters": {"KeyId": "alias/pii"},
     "outcome": "success", "httpStatus": 200}

A failure has ``"outcome": "error"`` and ``errorCode``; a dropped connection ``"dropped"``.
Only the identifiers listed in ``LOGGED_PARAMETERS`` are copied from a request: never
plaintext, ciphertext blobs, key material, import tokens, encryption contexts or secrets.
The file is created with mode 0600 (an existing file is narrowed to it) and each record is
appended with one ``write`` so concurrent calls never interleave inside a line.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["LOGGED_PARAMETERS", "AuditLog", "event_time", "logged_parameters"]

LOGGED_PARAMETERS = frozenset({
    "KeyId", "AliasName", "KeyVersionId", "DestinationKeyId", "PageNumber", "PageSize",
    "KeySpec", "KeyUsage", "Origin", "ProtectionLevel", "NumberOfBytes", "DryRun",
    "EnableAutomaticRotation", "RotationInterval", "PendingWindowInDays", "WrappingAlgorithm",
    "WrappingKeySpec", "TagKeys", "KeyMaterialExpireUnix",
})  # fmt: skip
_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
_second: tuple[int | None, str] = (None, "")  # the last whole second formatted (calls share it)


def event_time(seconds: float) -> str:
    """ISO 8601 UTC with milliseconds, as ActionTrail writes ``eventTime``."""
    global _second
    whole = int(seconds)
    millis = int((seconds - whole) * 1000)
    last, text = _second
    if last != whole:
        text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _second = (whole, text)
    return f"{text}.{millis:03d}Z"


class AuditLog:
    """An append-only JSON-lines file (thread-safe; safe to share with other appenders)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser().absolute()
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(self._fd, 0o600)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"AuditLog({str(self.path)!r})"

    def write(self, record: Mapping[str, Any]) -> None:
        data = (_encode(record) + "\n").encode("utf-8")
        with self._lock:
            if self._fd >= 0:
                os.write(self._fd, data)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def logged_parameters(params: Mapping[str, str]) -> dict[str, str]:
    """The identifiers of a request that may be logged (see ``LOGGED_PARAMETERS``)."""
    return {k: v[:512] for k, v in params.items() if k in LOGGED_PARAMETERS}
