"""The loopback OSS server's HTTP handler: routing, signatures, faults and the operations."""

from __future__ import annotations

import base64
import hashlib
import socket
import struct
import time
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, quote, unquote
from xml.etree import ElementTree

from kmsbeam.oss._sigv import SignatureRejected, verify
from kmsbeam.oss._store import (
    OssFailure,
    StoredObject,
    contents_xml,
    crc64,
    iso_time,
    prefixes_xml,
    tag,
    token,
    untoken,
    xml_doc,
)

__all__ = ["Handler"]

META = "x-oss-meta-"
_Answer = tuple[int, dict[str, str], bytes]


def _meta(headers: dict[str, str]) -> dict[str, str]:
    meta = {k[len(META) :]: v for k, v in headers.items() if k.startswith(META)}
    if sum(len(k) + len(v) for k, v in meta.items()) > 8192:
        raise OssFailure(400, "MetadataTooLarge", "user metadata is limited to 8 KB")
    return meta


def _object_headers(obj: StoredObject) -> dict[str, str]:
    out = {"Content-Type": obj.content_type, "ETag": f'"{obj.etag}"',
           "Last-Modified": formatdate(obj.mtime, usegmt=True), "Accept-Ranges": "bytes",
           "x-oss-object-type": "Multipart" if obj.multipart else "Normal",
           "x-oss-hash-crc64ecma": str(obj.crc), "x-oss-storage-class": "Standard"}  # fmt: skip
    out.update({META + k: v for k, v in obj.metadata.items()})
    return out


def _range(spec: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a ``bytes=`` range, or None when it does not apply."""
    if not spec.startswith("bytes=") or "," in spec:
        return None
    first, _, last = spec[6:].partition("-")
    try:
        if not first:
            n = int(last)
            return (max(0, size - n), size - 1) if n > 0 and size else None
        start, end = int(first), int(last) if last else size - 1
    except ValueError:
        return None
    if start >= size or end < start:
        return None
    return start, min(end, size - 1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Any

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

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
            status, out, payload = getattr(self, "_op_" + op)(owner.store, bucket, key, params, headers, body)
        except SignatureRejected as exc:
            status, out, payload = self._error(rid, 403, exc.code, str(exc))
        except OssFailure as exc:
            status, out, payload = self._error(rid, exc.status, exc.code, str(exc))
        out["x-oss-request-id"] = rid
        if method != "HEAD":
            owner.bytes_out[op] += len(payload)
        self._send(method, status, out, payload, cut=fault is not None and fault[0] == "cut")

    def _error(self, rid: str, status: int, code: str, message: str) -> _Answer:
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

    # ---- operations: (store, bucket, key, params, headers, body) -> (status, headers, body)

    def _op_create_bucket(self, store: Any, bucket: str, *_: Any) -> _Answer:
        with store.lock:
            store.buckets.setdefault(bucket, {})
        return 200, {}, b""

    def _op_put(self, store: Any, bucket: str, key: str, params: Any, headers: dict[str, str], body: bytes) -> _Answer:
        self._check_md5(headers, body)
        if headers.get("x-oss-forbid-overwrite", "").lower() == "true":
            obj = self._put_if_absent(store, bucket, key, body, _meta(headers), headers.get("content-type", ""))
        else:
            obj = store.put(bucket, key, body, _meta(headers), headers.get("content-type", ""))
        return 200, {"ETag": f'"{obj.etag}"', "x-oss-hash-crc64ecma": str(obj.crc)}, b""

    @staticmethod
    def _put_if_absent(store: Any, bucket: str, key: str, body: bytes, meta: dict[str, str],
                       content_type: str) -> StoredObject:  # fmt: skip
        """PutObject with ``x-oss-forbid-overwrite: true``: 409 ``FileAlreadyExists`` if the key
        exists, checked and stored under the store's lock (atomic, as OSS does it)."""
        obj = StoredObject(body, meta, content_type or "application/octet-stream",
                           hashlib.md5(body).hexdigest().upper(), crc64(body), time.time())  # fmt: skip
        with store.lock:
            objects = store.bucket(bucket)
            if key in objects:
                raise OssFailure(409, "FileAlreadyExists",
                                 "The object you specified already exists and can not be overwritten.")  # fmt: skip
            objects[key] = obj
        return obj

    @staticmethod
    def _check_md5(headers: dict[str, str], body: bytes) -> None:
        md5 = headers.get("content-md5")
        if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode("ascii"):
            raise OssFailure(400, "InvalidDigest", "the Content-MD5 you specified did not match")

    def _op_get(self, store: Any, bucket: str, key: str, params: Any, headers: dict[str, str], body: bytes) -> _Answer:
        obj = store.get(bucket, key)
        out = _object_headers(obj)
        size = len(obj.data)
        span = _range(headers.get("range", ""), size) if "range" in headers else None
        if span is None:
            if "range" in headers and headers.get("x-oss-range-behavior") == "standard":
                raise OssFailure(416, "InvalidRange", "the requested range cannot be satisfied")
            return 200, out, obj.data
        out["Content-Range"] = f"bytes {span[0]}-{span[1]}/{size}"
        return 206, out, obj.data[span[0] : span[1] + 1]

    def _op_head(self, store: Any, bucket: str, key: str, *_: Any) -> _Answer:
        obj = store.get(bucket, key)
        out = _object_headers(obj)
        out["_length"] = str(len(obj.data))
        return 200, out, b""

    def _op_delete(self, store: Any, bucket: str, key: str, *_: Any) -> _Answer:
        store.delete(bucket, key)
        return 204, {}, b""

    def _op_copy(self, store: Any, bucket: str, key: str, params: Any, headers: dict[str, str], body: bytes) -> _Answer:
        src_bucket, _, src_key = unquote(headers["x-oss-copy-source"].partition("?")[0]).lstrip("/").partition("/")
        src = store.get(src_bucket, src_key)
        directive = headers.get("x-oss-metadata-directive", "COPY").upper()
        if directive not in ("COPY", "REPLACE"):
            raise OssFailure(400, "InvalidArgument", "x-oss-metadata-directive is COPY or REPLACE")
        if directive == "REPLACE":
            meta, ctype = _meta(headers), headers.get("content-type", "")
        else:
            meta, ctype = dict(src.metadata), src.content_type
        obj = store.put(bucket, key, src.data, meta, ctype, etag=src.etag, multipart=src.multipart)
        xml = xml_doc("CopyObjectResult", tag("ETag", f'"{obj.etag}"'), tag("LastModified", iso_time(obj.mtime)))
        return 200, {"Content-Type": "application/xml"}, xml

    def _op_list(self, store: Any, bucket: str, key: str, params: dict[str, str], *_: Any) -> _Answer:
        try:
            limit = int(params.get("max-keys") or 100)
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            raise OssFailure(400, "InvalidArgument", "max-keys must be 1 to 1000")
        encode = params.get("encoding-type") == "url"
        enc = (lambda s: quote(s, safe="")) if encode else (lambda s: s)
        prefix, delim = params.get("prefix", ""), params.get("delimiter", "")
        v2 = params.get("list-type") == "2"
        token_in = params.get("continuation-token", "")
        after = (untoken(token_in) if token_in else params.get("start-after", "")) if v2 else params.get("marker", "")
        objects, prefixes, truncated, last = store.list(bucket, prefix, delim, after, limit)
        head = [tag("Name", bucket), tag("Prefix", enc(prefix)), tag("MaxKeys", limit),
                tag("Delimiter", enc(delim)), tag("IsTruncated", "true" if truncated else "false")]  # fmt: skip
        if v2:
            head += [tag("KeyCount", len(objects) + len(prefixes)), tag("StartAfter", enc(params.get("start-after", "")))]
            head += [tag("ContinuationToken", token_in)] if token_in else []
            head += [tag("NextContinuationToken", token(last))] if truncated else []
        else:
            head += [tag("Marker", enc(after))] + ([tag("NextMarker", enc(last))] if truncated else [])
        head += [tag("EncodingType", "url")] if encode else []
        xml = xml_doc("ListBucketResult", *head, contents_xml(objects, encode), prefixes_xml(prefixes, encode))
        return 200, {"Content-Type": "application/xml"}, xml

    def _op_initiate(self, store: Any, bucket: str, key: str, params: Any, headers: dict[str, str], body: bytes) -> _Answer:
        upload_id = store.initiate(bucket, key, _meta(headers), headers.get("content-type", ""))
        xml = xml_doc("InitiateMultipartUploadResult", tag("Bucket", bucket), tag("Key", key), tag("UploadId", upload_id))
        return 200, {"Content-Type": "application/xml"}, xml

    def _op_upload_part(self, store: Any, bucket: str, key: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> _Answer:
        upload = store.upload(bucket, key, params["uploadId"])
        number = int(params["partNumber"]) if params["partNumber"].isdigit() else 0
        if not 1 <= number <= 10000:
            raise OssFailure(400, "InvalidArgument", "partNumber must be 1 to 10000")
        self._check_md5(headers, body)
        etag = hashlib.md5(body).hexdigest().upper()
        with store.lock:
            upload.parts[number] = (body, etag, time.time())
        return 200, {"ETag": f'"{etag}"', "x-oss-hash-crc64ecma": str(crc64(body))}, b""

    def _op_list_parts(self, store: Any, bucket: str, key: str, params: dict[str, str], *_: Any) -> _Answer:
        upload = store.upload(bucket, key, params["uploadId"])
        marker = int(params.get("part-number-marker") or 0)
        limit = max(1, min(1000, int(params.get("max-parts") or 1000)))
        with store.lock:
            numbers = sorted(n for n in upload.parts if n > marker)
        page, truncated = numbers[:limit], len(numbers) > limit
        parts = "".join("<Part>" + tag("PartNumber", n) + tag("LastModified", iso_time(upload.parts[n][2]))
                        + tag("ETag", f'"{upload.parts[n][1]}"') + tag("Size", len(upload.parts[n][0]))
                        + "</Part>" for n in page)  # fmt: skip
        xml = xml_doc("ListPartsResult", tag("Bucket", bucket), tag("Key", key), tag("UploadId", params["uploadId"]),
                      tag("PartNumberMarker", marker), tag("NextPartNumberMarker", page[-1] if page else marker),
                      tag("MaxParts", limit), tag("IsTruncated", "true" if truncated else "false"), parts)  # fmt: skip
        return 200, {"Content-Type": "application/xml"}, xml

    def _op_complete(self, store: Any, bucket: str, key: str, params: dict[str, str], headers: Any, body: bytes) -> _Answer:
        try:
            root = ElementTree.fromstring(body)
            listed = [(int(p.findtext("PartNumber") or ""), p.findtext("ETag") or "") for p in root.iter("Part")]
        except (ElementTree.ParseError, ValueError):
            raise OssFailure(400, "MalformedXML", "the XML you provided was not well-formed") from None
        obj = store.complete(bucket, key, params["uploadId"], listed)
        xml = xml_doc("CompleteMultipartUploadResult", tag("Location", f"/{bucket}/{key}"),
                      tag("Bucket", bucket), tag("Key", key), tag("ETag", f'"{obj.etag}"'))  # fmt: skip
        return 200, {"Content-Type": "application/xml", "x-oss-hash-crc64ecma": str(obj.crc)}, xml

    def _op_abort(self, store: Any, bucket: str, key: str, params: dict[str, str], *_: Any) -> _Answer:
        store.upload(bucket, key, params["uploadId"])
        with store.lock:
            store.uploads.pop(params["uploadId"], None)
        return 204, {}, b""
