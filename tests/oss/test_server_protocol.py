"""The loopback server speaks OSS to the real oss2 client: signatures, objects, lists,
multipart and copy."""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone

import oss2
import pytest

from kmsbeam.oss import LoopbackOssServer
from kmsbeam.oss._sigv import SignatureRejected, verify
from typing import Any

AUTHS = ["v1", "v4"]


@pytest.mark.parametrize("auth", AUTHS)
def test_objects_put_get_range_head_delete(oss_server: LoopbackOssServer, bucket: str, auth: str, raw_bucket: Any) -> None:
    b = raw_bucket(bucket, auth)
    key = "dir/a key+with ü/ünïcode?&=.txt"
    b.put_object(key, b"0123456789", headers={"x-oss-meta-Owner": "me", "Content-Type": "text/plain"})
    assert b.get_object(key).read() == b"0123456789"
    assert b.get_object(key, byte_range=(2, 5)).read() == b"2345"
    assert b.get_object(key, byte_range=(7, None)).read() == b"789"
    head = b.head_object(key)
    assert head.content_length == 10 and head.headers["x-oss-meta-owner"] == "me"
    assert head.content_type == "text/plain"
    b.delete_object(key)
    with pytest.raises(oss2.exceptions.NoSuchKey):
        b.get_object(key)
    with pytest.raises(oss2.exceptions.NotFound):
        b.head_object(key)


@pytest.mark.parametrize("auth", AUTHS)
def test_bad_signatures_and_keys_are_refused(oss_server: LoopbackOssServer, bucket: str, auth: str) -> None:
    maker = oss2.AuthV4 if auth == "v4" else oss2.Auth
    wrong = oss2.Bucket(maker("loopback-ak", "wrong"), oss_server.endpoint, bucket, region=oss_server.region)
    with pytest.raises(oss2.exceptions.ServerError) as info:
        wrong.put_object("x", b"1")
    assert (info.value.status, info.value.code) == (403, "SignatureDoesNotMatch")
    unknown = oss2.Bucket(maker("nobody", "x"), oss_server.endpoint, bucket, region=oss_server.region)
    with pytest.raises(oss2.exceptions.ServerError) as info:
        unknown.get_object("x")
    assert info.value.code == "InvalidAccessKeyId"
    if auth == "v4":
        elsewhere = oss2.Bucket(oss2.AuthV4("loopback-ak", "loopback-secret"), oss_server.endpoint,
                                bucket, region="us-west-1")  # fmt: skip
        with pytest.raises(oss2.exceptions.ServerError):
            elsewhere.put_object("x", b"1")


def test_sts_credentials_need_their_token(oss_server: LoopbackOssServer, bucket: str) -> None:
    oss_server.add_credential("STS.temp", "sts-secret", token="tok-123")
    good = oss2.Bucket(oss2.StsAuth("STS.temp", "sts-secret", "tok-123"), oss_server.endpoint, bucket)
    good.put_object("sts", b"ok")
    bad = oss2.Bucket(oss2.StsAuth("STS.temp", "sts-secret", "tok-999"), oss_server.endpoint, bucket)
    with pytest.raises(oss2.exceptions.ServerError) as info:
        bad.get_object("sts")
    assert info.value.code == "InvalidSecurityToken"


def test_skewed_clocks_are_refused() -> None:
    keys = {"ak": ("secret", None)}
    old = (datetime.now(timezone.utc) - timedelta(hours=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    with pytest.raises(SignatureRejected) as info:
        verify("GET", "/b/k", [], {"authorization": "OSS ak:sig", "date": old}, keys, "cn-hangzhou")
    assert info.value.code == "RequestTimeTooSkewed"


@pytest.mark.parametrize("auth", AUTHS)
def test_list_v1_and_v2_with_prefix_delimiter_and_paging(oss_server: LoopbackOssServer, bucket: str, auth: str, raw_bucket: Any) -> None:
    b = raw_bucket(bucket, auth)
    keys = ["a/1", "a/2", "a/sub/3", "a/sub/4", "a/zz/5", "b/6", "top", "t p/ü"]
    for k in keys:
        b.put_object(k, k.encode())
    assert [o.key for o in oss2.ObjectIterator(b, max_keys=2)] == sorted(keys)
    assert [o.key for o in oss2.ObjectIteratorV2(b, max_keys=3)] == sorted(keys)
    for iterator in (oss2.ObjectIterator, oss2.ObjectIteratorV2):
        listed = [(o.key, o.is_prefix()) for o in iterator(b, prefix="a/", delimiter="/", max_keys=1)]
        assert listed == [("a/1", False), ("a/2", False), ("a/sub/", True), ("a/zz/", True)]
    top = [o.key for o in oss2.ObjectIteratorV2(b, delimiter="/", max_keys=2)]
    assert top == ["a/", "b/", "t p/", "top"]
    page = b.list_objects_v2(prefix="a/", max_keys=2)
    assert page.is_truncated and len(page.object_list) == 2
    assert b.list_objects_v2(start_after="b/6").object_list[0].key == "t p/ü"


def test_multipart_initiate_upload_list_complete(oss_server: LoopbackOssServer, bucket: str, raw_bucket: Any) -> None:
    b = raw_bucket(bucket)
    part = 100 * 1024
    data = os.urandom(5 * part + 123)
    upload = b.init_multipart_upload("mp", headers={"x-oss-meta-kind": "multi"}).upload_id
    parts = []
    for i, start in enumerate(range(0, len(data), part), start=1):
        result = b.upload_part("mp", upload, i, data[start : start + part])
        parts.append(oss2.models.PartInfo(i, result.etag, size=len(data[start : start + part]), part_crc=result.crc))
    listed = b.list_parts("mp", upload, max_parts=2)
    assert [p.part_number for p in listed.parts] == [1, 2] and listed.is_truncated
    assert [p.part_number for p in oss2.PartIterator(b, "mp", upload, max_parts=4)] == [1, 2, 3, 4, 5, 6]
    assert "mp" not in oss_server.objects(bucket)  # invisible until completed
    b.complete_multipart_upload("mp", upload, parts)
    assert b.get_object("mp").read() == data
    assert b.head_object("mp").headers["x-oss-meta-kind"] == "multi"
    assert [u for u in oss_server.uploads() if u[0] == bucket] == []


def test_multipart_abort_and_small_parts(oss_server: LoopbackOssServer, bucket: str, raw_bucket: Any) -> None:
    b = raw_bucket(bucket)
    upload = b.init_multipart_upload("mp").upload_id
    r1 = b.upload_part("mp", upload, 1, b"small")
    r2 = b.upload_part("mp", upload, 2, b"last")
    with pytest.raises(oss2.exceptions.ServerError) as info:
        b.complete_multipart_upload("mp", upload, [oss2.models.PartInfo(1, r1.etag), oss2.models.PartInfo(2, r2.etag)])
    assert info.value.code == "EntityTooSmall"
    b.abort_multipart_upload("mp", upload)
    assert [u for u in oss_server.uploads() if u[0] == bucket] == [] and "mp" not in oss_server.objects(bucket)
    with pytest.raises(oss2.exceptions.NoSuchUpload):
        b.upload_part("mp", upload, 3, b"late")


def test_list_multipart_uploads_by_prefix_with_paging(oss_server: LoopbackOssServer, bucket: str, raw_bucket: Any) -> None:
    b = raw_bucket(bucket)
    keys = ["in/a", "in/a", "in/b ü", "in/c/d", "out/e"]
    ids = {(k, b.init_multipart_upload(k).upload_id) for k in keys}
    listed = [(u.key, u.upload_id) for u in oss2.MultipartUploadIterator(b, prefix="in/", max_uploads=1)]
    assert listed == sorted(i for i in ids if i[0].startswith("in/"))
    assert {(u.key, u.upload_id) for u in oss2.MultipartUploadIterator(b)} == ids
    page = b.list_multipart_uploads(prefix="in/", max_uploads=2)
    assert page.is_truncated and len(page.upload_list) == 2
    rest = b.list_multipart_uploads(prefix="in/", key_marker=page.next_key_marker,
                                    upload_id_marker=page.next_upload_id_marker)  # fmt: skip
    assert [(u.key, u.upload_id) for u in page.upload_list + rest.upload_list] == listed
    assert not rest.is_truncated
    for key, upload in ids:
        b.abort_multipart_upload(key, upload)
    assert list(oss2.MultipartUploadIterator(b)) == []


def test_copy_with_metadata_copy_and_replace(oss_server: LoopbackOssServer, bucket: str, raw_bucket: Any) -> None:
    b = raw_bucket(bucket)
    b.put_object("src", b"payload", headers={"x-oss-meta-a": "1", "Content-Type": "text/x"})
    b.copy_object(bucket, "src", "kept")
    assert b.head_object("kept").headers["x-oss-meta-a"] == "1"
    b.copy_object(bucket, "src", "src", headers={"x-oss-metadata-directive": "REPLACE", "x-oss-meta-b": "2"})
    assert oss_server.metadata(bucket, "src") == {"b": "2"}
    assert b.get_object("src").read() == b"payload"
