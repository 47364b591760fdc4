"""The loopback OSS server's operations on its store: objects, listings and multipart uploads.

Each operation takes ``(store, bucket, key, params, headers, body)`` (the request, already
routed and its signature checked) and answers ``(status, headers, body)``; ``OPERATIONS``
names them as the handler (``_handler``) routes them. An ``OssFailure`` is the error answer.
"""

from __future__ import annotations

import base64
import hashlib
import time
from collections.abc import Callable
from email.utils import formatdate
from typing import Any
from urllib.parse import quote, unquote
from xml.etree import ElementTree

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

__all__ = ["OPERATIONS", "Answer"]

META = "x-oss-meta-"
Answer = tuple[int, dict[str, str], bytes]


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


def _create_bucket(store: Any, bucket: str, *_: Any) -> Answer:
    with store.lock:
        store.buckets.setdefault(bucket, {})
    return 200, {}, b""


def _put(store: Any, bucket: str, key: str, params: Any, headers: dict[str, str], body: bytes) -> Answer:
    _check_md5(headers, body)
    if headers.get("x-oss-forbid-overwrite", "").lower() == "true":
        obj = _put_if_absent(store, bucket, key, body, _meta(headers), headers.get("content-type", ""))
    else:
        obj = store.put(bucket, key, body, _meta(headers), headers.get("content-type", ""))
    return 200, {"ETag": f'"{obj.etag}"', "x-oss-hash-crc64ecma": str(obj.crc)}, b""


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


def _check_md5(headers: dict[str, str], body: bytes) -> None:
    md5 = headers.get("content-md5")
    if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode("ascii"):
        raise OssFailure(400, "InvalidDigest", "the Content-MD5 you specified did not match")


def _get(store: Any, bucket: str, key: str, params: Any, headers: dict[str, str], body: bytes) -> Answer:
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


def _head(store: Any, bucket: str, key: str, *_: Any) -> Answer:
    obj = store.get(bucket, key)
    out = _object_headers(obj)
    out["_length"] = str(len(obj.data))
    return 200, out, b""


def _delete(store: Any, bucket: str, key: str, *_: Any) -> Answer:
    store.delete(bucket, key)
    return 204, {}, b""


def _copy(store: Any, bucket: str, key: str, params: Any, headers: dict[str, str], body: bytes) -> Answer:
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


def _list(store: Any, bucket: str, key: str, params: dict[str, str], *_: Any) -> Answer:
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


def _initiate(store: Any, bucket: str, key: str, params: Any, headers: dict[str, str], body: bytes) -> Answer:
    upload_id = store.initiate(bucket, key, _meta(headers), headers.get("content-type", ""))
    xml = xml_doc("InitiateMultipartUploadResult", tag("Bucket", bucket), tag("Key", key), tag("UploadId", upload_id))
    return 200, {"Content-Type": "application/xml"}, xml


def _upload_part(store: Any, bucket: str, key: str, params: dict[str, str], headers: dict[str, str], body: bytes) -> Answer:
    upload = store.upload(bucket, key, params["uploadId"])
    number = int(params["partNumber"]) if params["partNumber"].isdigit() else 0
    if not 1 <= number <= 10000:
        raise OssFailure(400, "InvalidArgument", "partNumber must be 1 to 10000")
    _check_md5(headers, body)
    etag = hashlib.md5(body).hexdigest().upper()
    with store.lock:
        upload.parts[number] = (body, etag, time.time())
    return 200, {"ETag": f'"{etag}"', "x-oss-hash-crc64ecma": str(crc64(body))}, b""


def _list_parts(store: Any, bucket: str, key: str, params: dict[str, str], *_: Any) -> Answer:
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


def _complete(store: Any, bucket: str, key: str, params: dict[str, str], headers: Any, body: bytes) -> Answer:
    try:
        root = ElementTree.fromstring(body)
        listed = [(int(p.findtext("PartNumber") or ""), p.findtext("ETag") or "") for p in root.iter("Part")]
    except (ElementTree.ParseError, ValueError):
        raise OssFailure(400, "MalformedXML", "the XML you provided was not well-formed") from None
    obj = store.complete(bucket, key, params["uploadId"], listed)
    xml = xml_doc("CompleteMultipartUploadResult", tag("Location", f"/{bucket}/{key}"),
                  tag("Bucket", bucket), tag("Key", key), tag("ETag", f'"{obj.etag}"'))  # fmt: skip
    return 200, {"Content-Type": "application/xml", "x-oss-hash-crc64ecma": str(obj.crc)}, xml


def _abort(store: Any, bucket: str, key: str, params: dict[str, str], *_: Any) -> Answer:
    store.upload(bucket, key, params["uploadId"])
    with store.lock:
        store.uploads.pop(params["uploadId"], None)
    return 204, {}, b""


def _list_uploads(store: Any, bucket: str, key: str, params: dict[str, str], *_: Any) -> Answer:
    """ListMultipartUploads by key prefix, paged by key and upload-id markers (no delimiter)."""
    if params.get("delimiter"):
        raise OssFailure(501, "NotImplemented", "the loopback server lists uploads without a delimiter")
    limit = max(1, min(1000, int(params.get("max-uploads") or 1000)))
    prefix, key_marker = params.get("prefix", ""), params.get("key-marker", "")
    id_marker = params.get("upload-id-marker", "")
    store.bucket(bucket)
    with store.lock:
        found = sorted((u.key, uid, u.initiated) for uid, u in store.uploads.items()
                       if u.bucket == bucket and u.key.startswith(prefix))  # fmt: skip
    after = [u for u in found if u[0] > key_marker or (id_marker and u[0] == key_marker and u[1] > id_marker)]
    page, truncated = after[:limit], len(after) > limit
    enc = (lambda s: quote(s, safe="")) if params.get("encoding-type") == "url" else (lambda s: s)
    entries = "".join("<Upload>" + tag("Key", enc(k)) + tag("UploadId", uid) + tag("Initiated", iso_time(t))
                      + "</Upload>" for k, uid, t in page)  # fmt: skip
    head = [tag("Bucket", bucket), tag("Prefix", enc(prefix)), tag("KeyMarker", enc(key_marker)),
            tag("UploadIdMarker", id_marker), tag("MaxUploads", limit),
            tag("IsTruncated", "true" if truncated else "false")]  # fmt: skip
    last = page[-1][:2] if page else (key_marker, id_marker)
    head += [tag("NextKeyMarker", enc(last[0])), tag("NextUploadIdMarker", last[1])]
    head += [tag("EncodingType", "url")] if params.get("encoding-type") == "url" else []
    xml = xml_doc("ListMultipartUploadsResult", *head, entries)
    return 200, {"Content-Type": "application/xml"}, xml


OPERATIONS: dict[str, Callable[..., Answer]] = {
    "create_bucket": _create_bucket,
    "put": _put,
    "get": _get,
    "head": _head,
    "delete": _delete,
    "copy": _copy,
    "list": _list,
    "initiate": _initiate,
    "upload_part": _upload_part,
    "list_parts": _list_parts,
    "list_uploads": _list_uploads,
    "complete": _complete,
    "abort": _abort,
}
