"""The instance gateway's request pipeline: authenticate, decode, run the action, audit.

Actions (``x-kms-apiname``, API version ``dkms-gcs-0.2``), all AES-256-GCM under the key's
primary version, the ``Aad`` bytes bound through ``KmsEngine.*_with_aad``:

- ``AdvanceGenerateDataKey`` (KeyId, NumberOfBytes 1..1024, default 32; Aad): a random data
  key; the blob encrypts the raw key. ``AdvanceEncrypt`` (KeyId, Plaintext 1..6144 bytes,
  Aad). ``AdvanceDecrypt`` (CiphertextBlob, Aad): the blob names its key and version, so it
  needs no KeyId and survives rotation. Answers carry KeyId (the resolved id, also for
  ``alias/NAME``), KeyVersionId, Iv, Algorithm ``AES_GCM`` and RequestId.
- ``GenerateDataKey``, ``Encrypt``, ``Decrypt``: the same, answered in their own messages
  (no KeyVersionId). Deviation: the real gateway's non-Advance CiphertextBlob leaves the IV
  out (Decrypt needs KeyId + Iv); here every CiphertextBlob is self-describing, and a
  Decrypt's KeyId and Iv are ignored.
- any other API name: ``InvalidApiName``.

A request's Algorithm, if given, must be ``AES_GCM``; a PaddingMode or an Encrypt's Iv is
refused (the gateway picks the IV). Error codes (HTTP status) follow Alibaba's instance API:

=====================================  ===  ============================================
``InvalidApiName``                     400  an API this gateway does not serve
``InvalidApiVersion``                  400  ``x-kms-apiversion`` is not ``dkms-gcs-0.2``
``InvalidParam``                       400  ``date`` not RFC 1123; ``x-kms-signaturemethod``
                                            is not ``RSA_PKCS1_SHA_256``
``MissingParameter``                   400  no ``x-kms-acccesskeyid``
``RequestTimeTooSkewed``               400  ``date`` more than 15 minutes off
``InvalidParameter``                   400  a body that is not the action's protobuf
                                            message, or a bad value (size, algorithm)
``SignatureNotMatch``                  401  wrong signature or ``content-sha256``
``Unauthorized``                       404  unknown ClientKey
``Forbidden.NoPermission``             403  the ClientKey may not use this key
``Forbidden.KeyNotFound``              404  unknown key, or a blob of a deleted key
``Forbidden.AliasNotFound``            404  unknown alias
``Rejected.Disabled``                  409  the key is disabled (``Rejected.PendingDeletion``,
                                            ``Rejected.PendingImport`` likewise)
``InvalidCiphertext``                  400  a blob that does not open: tampered, foreign,
                                            or another Aad (one opaque error)
``InternalFailure``                    500  an emulator bug (fixed message)
=====================================  ===  ============================================

Every call appends one audit record (``eventName`` the API name, ``userIdentity``
``{"type": "client-key", "clientKeyId": ...}``, keyId, keyVersionId, outcome, errorCode),
never plaintext, blobs, Aad or secrets.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kmsbeam.emulator._audit import AuditLog, event_time
from kmsbeam.emulator._errors import ApiError, from_exception
from kmsbeam.emulator._gateway_keys import ClientKey, ClientKeys
from kmsbeam.emulator._gateway_wire import MESSAGES, Value, WireError, decode, encode
from kmsbeam.emulator._service import Request, Response
from kmsbeam.kms import KmsEngine

__all__ = ["API_VERSION", "ACTIONS", "GatewayService"]

API_VERSION = "dkms-gcs-0.2"
ALGORITHM = "AES_GCM"
IV_SLICE = slice(36, 48)  # the IV inside an engine blob (see ``kmsbeam.kms._blob``)
PROTOBUF = ("Content-Type", "application/x-protobuf")
_log = logging.getLogger("kmsbeam.emulator")

# API name -> (operation, response message)
ACTIONS = {
    "AdvanceGenerateDataKey": ("generate", "AdvanceGenerateDataKeyResponse"),
    "AdvanceEncrypt": ("encrypt", "AdvanceEncryptResponse"),
    "AdvanceDecrypt": ("decrypt", "AdvanceDecryptResponse"),
    "GenerateDataKey": ("generate", "GenerateDataKeyResponse"),
    "Encrypt": ("encrypt", "EncryptResponse"),
    "Decrypt": ("decrypt", "DecryptResponse"),
}


def _invalid(message: str = "The specified parameter is not valid.") -> ApiError:
    return ApiError("InvalidParameter", message, status=400)


def _first(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    return values[0] if values else None


class GatewayService:
    """Serves instance-API calls against one engine (thread-safe)."""

    def __init__(self, engine: KmsEngine, client_keys: ClientKeys, *, audit: AuditLog | None,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.engine, self.client_keys, self.audit = engine, client_keys, audit
        self._clock = clock

    def handle(self, request: Request) -> Response:
        request_id = str(uuid.uuid4())
        action = _first(request.headers, "x-kms-apiname")
        claimed = (_first(request.headers, "x-kms-acccesskeyid") or "")[:128] or None
        record: dict[str, Any] = {
            "eventTime": event_time(self._clock()), "eventType": "ApiCall",
            "serviceName": "Kms", "apiVersion": API_VERSION,
            "eventName": action[:128] if action else None, "acsRegion": self.engine.region,
            "requestId": request_id, "sourceIpAddress": request.source_ip,
            "userIdentity": {"type": "unknown", "clientKeyId": claimed},
        }  # fmt: skip
        try:
            if request.method != "POST" or request.target.partition("?")[0] != "/":
                raise _invalid("use POST / for KMS instance API calls")
            if action not in ACTIONS:
                raise ApiError("InvalidApiName", "The ApiName is invalid.", status=400)
            if _first(request.headers, "x-kms-apiversion") != API_VERSION:
                raise ApiError("InvalidApiVersion", "The ApiVersion is invalid.", status=400)
            key = self.client_keys.authenticate(request.method, request.headers, request.body)
            record["userIdentity"] = {"type": "client-key", "clientKeyId": key.key_id}
            operation, answer = ACTIONS[action]
            try:
                params = decode(request.body, MESSAGES[action + "Request"])
            except WireError:
                raise _invalid("the request body is not a valid protobuf message") from None
            result = getattr(self, "_" + operation)(key, params, record)
            result["RequestId"] = request_id
            schema = MESSAGES[answer]
            names = {name for name, _ in schema.values()}
            body = encode({k: v for k, v in result.items() if k in names}, schema)
            record.update(outcome="success", httpStatus=200)
            return Response(200, [PROTOBUF], body)
        except Exception as exc:
            error = from_exception(exc)
            if error.code == "Forbidden.ResourceNotFound":
                error = ApiError("Forbidden.KeyNotFound", error.message, status=404)
            if not isinstance(exc, ApiError) and error.code == "InternalFailure":
                _log.error("InternalFailure in the gateway's %s (request %s): %s", action,
                           request_id, type(exc).__name__)  # fmt: skip
            record.update(outcome="error", errorCode=error.code, httpStatus=error.status)
            body = encode({"StatusCode": error.status, "ErrorCode": error.code,
                           "ErrorMessage": error.message, "RequestId": request_id},
                          MESSAGES["Error"])  # fmt: skip
            return Response(error.status, [PROTOBUF], body)
        finally:
            if self.audit is not None:
                try:
                    self.audit.write(record)
                except OSError as exc:
                    _log.error("could not append to the audit log %s: %s", self.audit.path,
                               exc.strerror or type(exc).__name__)  # fmt: skip

    # -- actions -------------------------------------------------------------------------
    def _authorize(self, client_key: ClientKey, requested: str, key_id: str) -> None:
        if client_key.keys is None:
            return
        aliases = [a.alias_name for a in self.engine.list_aliases_by_key_id(key_id)]
        if not client_key.allows(requested, key_id, *aliases):
            raise ApiError("Forbidden.NoPermission",
                           "This operation for the key is forbidden by the ClientKey's policy.",
                           status=403)  # fmt: skip

    def _key(self, client_key: ClientKey, params: Mapping[str, Value],
             record: dict[str, Any]) -> str:  # fmt: skip
        requested = params.get("KeyId")
        if not isinstance(requested, str) or not requested:
            raise ApiError("MissingParameter", "The parameter KeyId is missing.", status=400)
        record["requestParameters"] = {"KeyId": requested[:512]}
        if client_key.keys is not None:
            meta = self.engine.describe_key(requested)
            record["keyId"] = meta.key_id
            self._authorize(client_key, requested, meta.key_id)
        algorithm = params.get("Algorithm", "")
        if algorithm not in ("", ALGORITHM) or params.get("PaddingMode", ""):
            raise _invalid("the Algorithm must be AES_GCM, with no PaddingMode")
        return requested

    def _generate(self, client_key: ClientKey, params: Mapping[str, Value],
                  record: dict[str, Any]) -> dict[str, Value]:  # fmt: skip
        key = self._key(client_key, params, record)
        number = params.get("NumberOfBytes", 0)
        assert isinstance(number, int)
        number = number or 32
        record["requestParameters"]["NumberOfBytes"] = number
        if not 1 <= number <= 1024:
            raise _invalid("NumberOfBytes must be between 1 and 1024")
        aad = params.get("Aad", b"")
        assert isinstance(aad, bytes)
        result = self.engine.generate_data_key_with_aad(key, number, aad)
        record.update(keyId=result.key_id, keyVersionId=result.key_version_id)
        blob = result.ciphertext_blob
        return {"KeyId": result.key_id, "KeyVersionId": result.key_version_id,
                "Plaintext": result.plaintext, "CiphertextBlob": blob, "Iv": blob[IV_SLICE],
                "Algorithm": ALGORITHM}  # fmt: skip

    def _encrypt(self, client_key: ClientKey, params: Mapping[str, Value],
                 record: dict[str, Any]) -> dict[str, Value]:  # fmt: skip
        key = self._key(client_key, params, record)
        if params.get("Iv", b""):
            raise _invalid("the gateway picks the IV: leave Iv out")
        plaintext, aad = params.get("Plaintext", b""), params.get("Aad", b"")
        assert isinstance(plaintext, bytes) and isinstance(aad, bytes)
        result = self.engine.encrypt_with_aad(key, plaintext, aad)
        record.update(keyId=result.key_id, keyVersionId=result.key_version_id)
        blob = result.ciphertext_blob
        return {"KeyId": result.key_id, "KeyVersionId": result.key_version_id,
                "CiphertextBlob": blob, "Iv": blob[IV_SLICE], "Algorithm": ALGORITHM}  # fmt: skip

    def _decrypt(self, client_key: ClientKey, params: Mapping[str, Value],
                 record: dict[str, Any]) -> dict[str, Value]:  # fmt: skip
        blob, aad = params.get("CiphertextBlob", b""), params.get("Aad", b"")
        assert isinstance(blob, bytes) and isinstance(aad, bytes)
        if not blob:
            raise ApiError("MissingParameter", "The parameter CiphertextBlob is missing.",
                           status=400)  # fmt: skip
        algorithm = params.get("Algorithm", "")
        if algorithm not in ("", ALGORITHM) or params.get("PaddingMode", ""):
            raise _invalid("the Algorithm must be AES_GCM, with no PaddingMode")
        result = self.engine.decrypt_with_aad(blob, aad)
        record.update(keyId=result.key_id, keyVersionId=result.key_version_id)
        self._authorize(client_key, result.key_id, result.key_id)
        return {"KeyId": result.key_id, "KeyVersionId": result.key_version_id,
                "Plaintext": result.plaintext, "Algorithm": ALGORITHM}  # fmt: skip
