"""The loopback OSS server's HTTP handler: routing, signatures and faults; the operations it
routes to are ``_operations``."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, unquote

from kmsbeam.oss._operations import OPERATIONS, Answer
from kmsbeam.oss._sigv import SignatureRejected, verify
from kmsbeam.oss._store import OssFailure, tag, xml_doc

__all__ = ["Handler"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def setup(self) -> None:
        """No Nagle delay: a response is its headers then its body, two writes, and with Nagle
        on the body of a small GET or LIST waits for the client's delayed ACK (~40 ms each on
        Linux loopback), which no real OSS endpoint adds."""
        super().setup()
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    @staticmethod
    def _operation(method: str, key: str, params: dict[str, str], headers: dict[str, str]) -> str:
        if not key:
            if method == "GET" and "uploads" in params:
                return "list_uploads"
            return {"GET": "list", "PUT": "create_bucket"}.get(method, "unsupported")
        if method == "GET":
            return "list_parts" if "uploadId" in params else "get"
        if method == "PUT":
            if "partNumber" in params and "uploadId" in params:
                return "upload_part"
            return "copy" if "x-oss-copy-source" in headers else "put"
        if method == "POST":
            return "initiate" if "uploads" in params else "complete" if "uploadId" in params else "unsupported"
        if method == "DELETE":
            return "abort" if "uploadId" in params else "delete"
        return "head"

    def _handle(self, method: str) -> None:
        owner = self.server.owner
        rid = owner.request_id()
        raw_path, _, raw_query = self.path.partition("?")
        query = parse_qsl(raw_query, keep_blank_values=True)
        params = dict(query)
        headers = {k.lower(): v for k, v in self.headers.items()}
        body = self._body()
        bucket, _, key = unquote(raw_path).lstrip("/").partition("/")
        op = self._operation(method, key, params, headers)
        owner.requests[op] += 1
        owner.bytes_in[op] += len(body)
        fault = owner.take_fault(op)
        if fault is not None and fault[0] == "reset":
            return self._reset()
        try:
            if fault is not None and fault[0] == "status":
                code = "ServiceUnavailable" if fault[1] == 503 else "InternalError"
                raise OssFailure(fault[1], code, "injected fault")
            verify(method, f"/{bucket}/{key}" if bucket else "/", query, headers, owner.keys(),
                   owner.region, body_sha256=hashlib.sha256(body).hexdigest())  # fmt: skip
            if op == "unsupported":
                raise OssFailure(501, "NotImplemented", "the loopback server does not implement this")
            status, out, payload = OPERATIONS[op](owner.store, bucket, key, params, headers, body)
        except SignatureRejected as exc:
            status, out, payload = self._error(rid, 403, exc.code, str(exc))
        except OssFailure as exc:
            status, out, payload = self._error(rid, exc.status, exc.code, str(exc))
        out["x-oss-request-id"] = rid
        if method != "HEAD":
            owner.bytes_out[op] += len(payload)
        self._send(method, status, out, payload, cut=fault is not None and fault[0] == "cut")

    def _error(self, rid: str, status: int, code: str, message: str) -> Answer:
        xml = xml_doc("Error", tag("Code", code), tag("Message", message), tag("RequestId", rid),
                      tag("HostId", "127.0.0.1"))  # fmt: skip
        return status, {"Content-Type": "application/xml",
                        "x-oss-err": base64.b64encode(xml).decode("ascii")}, xml  # fmt: skip

    def _reset(self) -> None:
        """Drop the connection with a TCP reset and no answer."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    def _send(self, method: str, status: int, headers: dict[str, str], body: bytes, cut: bool) -> None:
        length = headers.pop("_length", None) or str(len(body))
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", length)
        self.end_headers()
        if method == "HEAD":
            return
        view = memoryview(body)
        if cut:
            self.wfile.write(view[: len(view) // 2])
            self.wfile.flush()
            return self._reset()
        for i in range(0, len(view), 1 << 20):
            self.wfile.write(view[i : i + (1 << 20)])
