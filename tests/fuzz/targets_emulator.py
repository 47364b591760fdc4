"""Fuzz targets for the emulator's request reader: the request pipeline (``Service.handle``:
query and form parsing, ``_signature``, ``_params``, the actions) with unsigned and with
correctly signed requests, and raw bytes on a socket to a running server (``_http``).

The property: every request gets an Alibaba JSON error or a success, never ``InternalFailure``
(an exception the emulator did not expect); a Decrypt succeeds only for a blob it issued,
with that blob's plaintext; the server never logs a failed connection and keeps serving.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import logging
import socket
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from alibabacloud_tea_openapi.utils import Utils
from fuzzlib import Target

from kmsbeam.emulator import AccessKey, EmulatorServer
from kmsbeam.emulator._service import Request, Response, Service, _pairs
from kmsbeam.emulator._signature import Authenticator
from kmsbeam.kms import KmsEngine
from kmsbeam.kms._store import KeyStore

AK, SECRET = "fuzz", "fuzz-secret-9e1d"
#: the fuzzer may call anything that leaves the seed key usable
POLICY = {"Version": "1", "Statement": [
    {"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
    {"Effect": "Deny", "Action": ["kms:DisableKey", "kms:ScheduleKeyDeletion", "kms:DeleteAlias",
                                  "kms:UpdateAlias", "kms:CreateKey", "kms:CreateKeyVersion",
                                  "kms:CreateAlias", "kms:ImportKeyMaterial", "kms:TagResource",
                                  "kms:UpdateRotationPolicy", "kms:GetParametersForImport"],
     "Resource": "*"}]}  # fmt: skip


def known_finding(headers: Mapping[str, Any]) -> str | None:
    """A finding the fuzzers should look past until it is fixed (none open).

    F1 (fixed): a non-ASCII ``Signature=`` in ``Authorization`` made ``hmac.compare_digest``
    raise TypeError: InternalFailure instead of SignatureDoesNotMatch.
    """
    del headers
    return None


class _LogTrap(logging.Handler):
    """Collects the emulator's warnings and errors (a failed connection, an InternalFailure)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record.getMessage())


def _check_response(response: Response | None) -> dict[str, Any]:
    assert response is not None, "a request was dropped (no faults are configured)"
    doc = json.loads(response.body)
    assert isinstance(doc, dict) and doc.get("RequestId")
    assert doc.get("Code") != "InternalFailure", f"InternalFailure: {doc.get('Message')}"
    assert (response.status == 200) == ("Code" not in doc)
    return doc


class _SignMe:
    """What the SDK's ``Utils.get_authorization`` reads."""

    def __init__(self, method: str, query: Mapping[str, str], headers: dict[str, str]) -> None:
        self.method, self.pathname, self.query, self.headers = method, "/", dict(query), headers


class ServiceTarget(Target):
    """``Service.handle`` without the socket. Input for ``unsigned``: ``METHOD TARGET`` line,
    header lines, blank line, body (a request as its sender wrote it). Input for ``signed``:
    the action line, the query string line, a blank line, the form body; the harness signs it as the
    SDK would, so the parameters reach the actions."""

    def __init__(self, workdir: Path, signed: bool) -> None:
        self.name = "emulator_signed" if signed else "emulator_request"
        self.signed = signed
        self.engine = KmsEngine(KeyStore(workdir / "emulator"))
        key = AccessKey(AK, SECRET, policy=POLICY)
        self.service = Service(self.engine, Authenticator({AK: key}))
        self.key_id = self.engine.get_or_create_alias("alias/fuzz")[0].key_id
        self.nonces = itertools.count()
        self.known: dict[bytes, bytes] = {}
        self.blobs: list[tuple[bytes, dict[str, str]]] = []
        for context in ({}, {"dataset": "d"}):
            result = self.engine.generate_data_key("alias/fuzz", 32, context)
            self.known[result.ciphertext_blob] = base64.b64encode(result.plaintext)
            self.blobs.append((result.ciphertext_blob, context))
        self.trap = _LogTrap()
        logging.getLogger("kmsbeam.emulator").addHandler(self.trap)

    def close(self) -> None:
        logging.getLogger("kmsbeam.emulator").removeHandler(self.trap)
        self.engine.store.close()

    def seeds(self) -> list[bytes]:
        blob, ctx = self.blobs[1]
        b64 = quote(base64.b64encode(blob).decode("ascii"), safe="")
        jctx = quote(json.dumps(ctx), safe="")
        calls = [
            ("Decrypt", f"CiphertextBlob={b64}&EncryptionContext={jctx}", ""),
            ("Decrypt", "", f"CiphertextBlob={quote(base64.b64encode(self.blobs[0][0]).decode(), safe='')}"),
            ("GenerateDataKey", f"KeyId=alias%2Ffuzz&NumberOfBytes=32&KeySpec=AES_256&EncryptionContext={jctx}", ""),
            ("GenerateDataKeyWithoutPlaintext", f"KeyId={self.key_id}&NumberOfBytes=16", ""),
            ("Encrypt", "KeyId=alias%2Ffuzz&Plaintext=aGVsbG8%3D&DryRun=false", ""),
            ("ReEncrypt", f"CiphertextBlob={b64}&DestinationKeyId=alias%2Ffuzz&SourceEncryptionContext={jctx}"
                          "&DestinationEncryptionContext=%7B%22x%22%3A%22y%22%7D", ""),
            ("DescribeKey", "KeyId=alias%2Ffuzz", ""),
            ("ListKeys", "PageSize=5&PageNumber=1", ""),
            ("ListKeyVersions", f"KeyId={self.key_id}&PageSize=100", ""),
            ("ListAliasesByKeyId", f"KeyId={self.key_id}", ""),
            ("UntagResource", f"KeyId={self.key_id}&TagKeys=%5B%22team%22%5D", ""),
            ("ListResourceTags", f"KeyId={self.key_id}", ""),
        ]  # fmt: skip
        if self.signed:
            return [f"{a}\n{q}\n\n{b}".encode("utf-8") for a, q, b in calls]
        out = []
        for action, query, body in calls:
            headers = self._signed_headers(action, dict(_pairs(query)), body.encode())
            head = "".join(f"{k}: {v}\n" for k, v in headers.items())
            out.append(f"POST /?{query}\n{head}\n{body}".encode("utf-8"))
        out.append(b"GET / HTTP/1.1\nhost: x\n\n")
        return out

    def _signed_headers(self, action: str, query: Mapping[str, str], body: bytes) -> dict[str, str]:
        headers = {
            "host": "kms.fuzz", "x-acs-version": "2016-01-20", "x-acs-action": action,
            "x-acs-date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "x-acs-signature-nonce": f"fuzz-{next(self.nonces)}-{time.time_ns()}",
            "x-acs-content-sha256": hashlib.sha256(body).hexdigest(),
        }  # fmt: skip
        if body:
            headers["content-type"] = "application/x-www-form-urlencoded"
        headers["authorization"] = Utils.get_authorization(
            _SignMe("POST", query, headers), "ACS3-HMAC-SHA256", headers["x-acs-content-sha256"], AK, SECRET
        )  # fmt: skip
        return headers

    def check(self, data: bytes) -> None:
        del self.trap.records[:]
        request = self._signed(data) if self.signed else self._unsigned(data)
        response = self.service.handle(request)
        if known_finding(request.headers):
            return
        doc = _check_response(response)
        assert not self.trap.records, f"the emulator logged: {self.trap.records}"
        action = request.headers.get("x-acs-action", [""])[0]
        if action == "Decrypt" and "Code" not in doc:
            query = dict(_pairs(request.target.partition("?")[2]))
            query.update(_pairs(request.body.decode("utf-8")))
            blob = base64.b64decode(query["CiphertextBlob"])
            assert self.known.get(blob) == doc["Plaintext"].encode("ascii"), "a tampered blob decrypted"

    def _unsigned(self, data: bytes) -> Request:
        head, _, body = data.partition(b"\n\n")
        lines = head.decode("latin-1").split("\n")  # as the HTTP reader decodes a head
        method, _, target = lines[0].partition(" ")
        headers: dict[str, list[str]] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.setdefault(name.strip().lower(), []).append(value.strip())
        return Request(method, target, headers, body, "127.0.0.1")

    def _signed(self, data: bytes) -> Request:
        head, _, body = data.partition(b"\n\n")
        action, _, query_text = head.decode("latin-1").partition("\n")  # as the HTTP reader does
        try:
            query = dict(_pairs(query_text))
        except Exception:  # the service refuses it before the signature: send it unsigned
            query = {}
        headers = self._signed_headers(action, query, body)
        return Request("POST", f"/?{query_text}", {k: [v] for k, v in headers.items()}, body, "127.0.0.1")


class HttpTarget(Target):
    """Raw bytes on a TCP connection to a running emulator (the HTTP reader of ``_http``):
    every answer is a complete HTTP response with a JSON body, the connection ends, and the
    server logs no failure. Input: the bytes a client sends before closing its side."""

    name = "emulator_http"

    def __init__(self, workdir: Path) -> None:
        self.server = EmulatorServer(workdir / "http", [AccessKey(AK, SECRET)],
                                     rotation_check_seconds=None).start()  # fmt: skip
        self.trap = _LogTrap()
        logging.getLogger("kmsbeam.emulator").addHandler(self.trap)
        self.signer = ServiceTarget.__new__(ServiceTarget)
        self.signer.nonces = itertools.count()

    def close(self) -> None:
        logging.getLogger("kmsbeam.emulator").removeHandler(self.trap)
        self.server.stop()

    def seeds(self) -> list[bytes]:
        out = []
        for action, query in (("ListKeys", "PageSize=1"), ("DescribeKey", "KeyId=alias%2Fnone")):
            headers = ServiceTarget._signed_headers(self.signer, action, dict(_pairs(query)), b"")
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            out.append(f"POST /?{query} HTTP/1.1\r\n{head}\r\n".encode("utf-8"))
        out.append(out[0] + out[1])  # keep-alive: two requests on one connection
        out.append(b"POST / HTTP/1.1\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nabcde")
        out.append(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
        return out

    def check(self, data: bytes) -> None:
        del self.trap.records[:]
        with socket.create_connection(("127.0.0.1", self.server.port), timeout=15) as conn:
            try:
                conn.sendall(data)
                conn.shutdown(socket.SHUT_WR)
            except OSError:  # the server answered an error and closed before all was sent
                pass
            received = bytearray()
            while True:
                try:
                    chunk = conn.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                received += chunk
        _check_http(bytes(received))
        assert not self.trap.records, f"the emulator logged: {self.trap.records}"


def _check_http(data: bytes) -> None:
    """``data`` is zero or more complete HTTP/1.1 responses, each with a JSON body."""
    while data:
        head, sep, rest = data.partition(b"\r\n\r\n")
        assert sep, f"a response head is cut off: {data[:80]!r}"
        lines = head.decode("latin-1").split("\r\n")
        assert lines[0].startswith("HTTP/1.1 "), lines[0]
        if lines[0].startswith("HTTP/1.1 100 "):
            data = rest
            continue
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        length = int(headers["content-length"])
        assert len(rest) >= length, "a response body is cut off"
        doc = json.loads(rest[:length])
        assert doc.get("Code") != "InternalFailure", f"InternalFailure: {doc.get('Message')}"
        data = rest[length:]
