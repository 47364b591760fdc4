"""The loopback OSS server's in-memory buckets, objects and multipart uploads, and its XML.

Semantics follow OSS: an object appears whole on PutObject, CopyObject or
CompleteMultipartUpload (never part-way); parts other than the last must be >= 100 KiB;
ETags are the hex MD5 (multipart: MD5 of the part MD5s, ``-N``); CRC-64/ECMA of every
object and part is reported in ``x-oss-hash-crc64ecma`` as OSS does.
"""

from __future__ import annotations

import base64
import hashlib
import importlib
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

__all__ = ["OssFailure", "Store", "StoredObject", "Upload", "crc64", "iso_time", "xml_doc"]

MIN_PART = 100 * 1024
_crc_fn: Any = None


def crc64(data: bytes) -> int:
    """CRC-64/ECMA-182 as OSS reports it (reflected, init and xor-out all ones)."""
    global _crc_fn
    if _crc_fn is None:
        crcmod = importlib.import_module("crcmod")  # shipped with oss2 (C extension)
        _crc_fn = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, xorOut=0xFFFFFFFFFFFFFFFF, rev=True)
    return int(_crc_fn(data))


class OssFailure(Exception):
    """An OSS error answer: HTTP status, error code, message."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def iso_time(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def xml_doc(root: str, *children: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>' + "".join(children)
            + f"</{root}>").encode("utf-8")  # fmt: skip


def tag(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


@dataclass
class StoredObject:
    data: bytes
    metadata: dict[str, str]
    content_type: str
    etag: str
    crc: int
    mtime: float
    multipart: bool = False


@dataclass
class Upload:
    bucket: str
    key: str
    metadata: dict[str, str]
    content_type: str
    initiated: float
    parts: dict[int, tuple[bytes, str, float]] = field(default_factory=dict)


class Store:
    """Thread-safe buckets of objects plus in-progress multipart uploads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.buckets: dict[str, dict[str, StoredObject]] = {}
        self.uploads: dict[str, Upload] = {}

    def bucket(self, name: str) -> dict[str, StoredObject]:
        objects = self.buckets.get(name)
        if objects is None:
            raise OssFailure(404, "NoSuchBucket", "the specified bucket does not exist")
        return objects

    def get(self, bucket: str, key: str) -> StoredObject:
        with self.lock:
            obj = self.bucket(bucket).get(key)
        if obj is None:
            raise OssFailure(404, "NoSuchKey", "the specified key does not exist")
        return obj

    def put(self, bucket: str, key: str, data: bytes, metadata: dict[str, str], content_type: str,
            *, etag: str | None = None, multipart: bool = False) -> StoredObject:  # fmt: skip
        obj = StoredObject(data, metadata, content_type or "application/octet-stream",
                           etag or hashlib.md5(data).hexdigest().upper(), crc64(data), time.time(),
                           multipart)  # fmt: skip
        with self.lock:
            self.bucket(bucket)[key] = obj
        return obj

    def delete(self, bucket: str, key: str) -> None:
        with self.lock:
            self.bucket(bucket).pop(key, None)

    def initiate(self, bucket: str, key: str, metadata: dict[str, str], content_type: str) -> str:
        upload_id = uuid.uuid4().hex.upper()
        with self.lock:
            self.bucket(bucket)
            self.uploads[upload_id] = Upload(bucket, key, metadata, content_type, time.time())
        return upload_id

    def upload(self, bucket: str, key: str, upload_id: str) -> Upload:
        with self.lock:
            upload = self.uploads.get(upload_id)
        if upload is None or (upload.bucket, upload.key) != (bucket, key):
            raise OssFailure(404, "NoSuchUpload", "the specified upload does not exist")
        return upload

    def complete(self, bucket: str, key: str, upload_id: str, listed: list[tuple[int, str]]) -> StoredObject:
        upload = self.upload(bucket, key, upload_id)
        if not listed:
            raise OssFailure(400, "MalformedXML", "the XML you provided was not well-formed")
        numbers = [n for n, _ in listed]
        if numbers != sorted(set(numbers)):
            raise OssFailure(400, "InvalidPartOrder", "the list of parts was not in ascending order")
        chosen = []
        for i, (number, etag) in enumerate(listed):
            part = upload.parts.get(number)
            if part is None or part[1] != etag.strip('"').upper():
                raise OssFailure(400, "InvalidPart", "one or more of the specified parts could not be found")
            if i < len(listed) - 1 and len(part[0]) < MIN_PART:
                raise OssFailure(400, "EntityTooSmall", "a part other than the last is smaller than 100 KiB")
            chosen.append(part)
        data = b"".join(p[0] for p in chosen)
        digest = hashlib.md5(b"".join(bytes.fromhex(p[1]) for p in chosen)).hexdigest().upper()
        obj = self.put(bucket, key, data, upload.metadata, upload.content_type,
                       etag=f"{digest}-{len(chosen)}", multipart=True)  # fmt: skip
        with self.lock:
            self.uploads.pop(upload_id, None)
        return obj

    def list(self, bucket: str, prefix: str, delimiter: str, after: str, limit: int
             ) -> tuple[list[tuple[str, StoredObject]], list[str], bool, str]:  # fmt: skip
        """(objects, common prefixes, truncated, last item) of one page after ``after``."""
        with self.lock:
            items = sorted(self.bucket(bucket).items())
        objects: list[tuple[str, StoredObject]] = []
        prefixes: list[str] = []
        last = ""
        for key, obj in items:
            if not key.startswith(prefix) or key <= after:
                continue
            if delimiter and after.endswith(delimiter) and key.startswith(after):
                continue  # inside a common prefix already returned on an earlier page
            cut = key.find(delimiter, len(prefix)) if delimiter else -1
            common = key[: cut + len(delimiter)] if cut >= 0 else None
            if common is not None and prefixes and prefixes[-1] == common:
                continue
            if len(objects) + len(prefixes) >= limit:
                return objects, prefixes, True, last
            if common is not None:
                prefixes.append(common)
                last = common
            else:
                objects.append((key, obj))
                last = key
        return objects, prefixes, False, last


def contents_xml(objects: list[tuple[str, StoredObject]], encode: bool) -> str:
    out = []
    for key, obj in objects:
        out.append("<Contents>" + tag("Key", quote(key, safe="") if encode else key)
                   + tag("LastModified", iso_time(obj.mtime)) + tag("ETag", f'"{obj.etag}"')
                   + tag("Type", "Multipart" if obj.multipart else "Normal") + tag("Size", len(obj.data))
                   + tag("StorageClass", "Standard") + "</Contents>")  # fmt: skip
    return "".join(out)


def prefixes_xml(prefixes: list[str], encode: bool) -> str:
    return "".join("<CommonPrefixes>" + tag("Prefix", quote(p, safe="") if encode else p)
                   + "</CommonPrefixes>" for p in prefixes)  # fmt: skip


def token(last: str) -> str:
    return base64.urlsafe_b64encode(last.encode("utf-8")).decode("ascii")


def untoken(text: str) -> str:
    try:
        return base64.urlsafe_b64decode(text.encode("ascii")).decode("utf-8")
    except (ValueError, UnicodeError):
        raise OssFailure(400, "InvalidArgument", "invalid continuation token") from None
