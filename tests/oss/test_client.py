"""kmsbeam.oss against the loopback server: retries, bounded multipart uploads, clear errors."""

from __future__ import annotations

import os
import pickle

import pytest

from kmsbeam import ConfigurationError
from kmsbeam.oss import (
    LoopbackOssServer,
    OssClient,
    OssConfig,
    OssCredentialsError,
    OssUnavailableError,
    oss_client,
)

PART = 100 * 1024


@pytest.mark.parametrize("auth", ["v1", "v4"])
def test_many_parts_upload_in_parallel_and_read_back_ranged(oss_server: LoopbackOssServer, bucket: str, auth: str) -> None:
    client = OssClient(OssConfig.from_env(auth_version=auth, upload_threads=4))
    data = os.urandom(40 * PART + 777)
    url = f"oss://{bucket}/many"
    before = oss_server.requests["upload_part"]
    with client.open_write(url, metadata={"kmsbeam-format": "object-v1"}) as w:
        for i in range(0, len(data), 65536):
            w.write(data[i : i + 65536])
        assert oss_server.objects(bucket) == {} and len(oss_server.uploads()) == 1
    assert w.parts == 41 and oss_server.requests["upload_part"] - before == 41
    assert oss_server.objects(bucket)[("many")] == data
    assert client.head(url).metadata == {"kmsbeam-format": "object-v1"}
    with client.open_read(url) as r:
        r.seek(12345)
        assert r.read(100000) == data[12345:112345]
        r.seek(-5, os.SEEK_END)
        assert r.read() == data[-5:]


def test_small_objects_are_one_put(oss_server: LoopbackOssServer, bucket: str) -> None:
    client = oss_client()
    before = oss_server.requests["initiate"]
    with client.open_write(f"oss://{bucket}/small") as w:
        w.write(b"x" * PART)
    assert w.parts == 0 and oss_server.requests["initiate"] == before
    assert client.get(f"oss://{bucket}/small") == b"x" * PART


def test_interrupted_upload_leaves_no_object_and_no_upload(oss_server: LoopbackOssServer, bucket: str) -> None:
    client = oss_client()
    with pytest.raises(RuntimeError):
        with client.open_write(f"oss://{bucket}/half") as w:
            w.write(os.urandom(5 * PART))
            raise RuntimeError("the job died half way")
    assert oss_server.objects(bucket) == {} and oss_server.uploads() == []


def test_a_part_that_keeps_failing_aborts_the_upload(oss_server: LoopbackOssServer, bucket: str) -> None:
    client = OssClient(OssConfig.from_env(max_attempts=2))
    oss_server.inject("upload_part", "status", times=100, status=500)
    with pytest.raises(OssUnavailableError, match="upload part"):
        with client.open_write(f"oss://{bucket}/doomed") as w:
            for _ in range(8):
                w.write(os.urandom(PART))
    assert oss_server.objects(bucket) == {} and oss_server.uploads() == []


@pytest.mark.parametrize("kind", ["status", "reset"])
def test_5xx_and_resets_are_retried(oss_server: LoopbackOssServer, bucket: str, kind: str) -> None:
    client = oss_client()
    url = f"oss://{bucket}/retried"
    data = os.urandom(3 * PART)
    for op in ("put", "head", "get", "list", "initiate", "upload_part", "complete", "copy", "delete"):
        oss_server.inject(op, kind, times=2)
    client.put(url, b"small")
    with client.open_write(url) as w:
        w.write(data)
    assert client.get(url) == data
    assert [i.url for i in client.list(f"oss://{bucket}/")] == [url]
    client.copy(url, url + "2", metadata={"m": "1"})
    client.delete(url)
    assert not client.exists(url)


def test_a_response_cut_mid_body_is_resumed(oss_server: LoopbackOssServer, bucket: str) -> None:
    client = OssClient(OssConfig.from_env(read_window=4 * PART))
    data = os.urandom(10 * PART)
    client.put(f"oss://{bucket}/cut", data)
    oss_server.inject("get", "cut", times=3)
    with client.open_read(f"oss://{bucket}/cut") as r:
        assert r.read() == data
        assert r.requests >= 3 + 3  # three windows, three of them resumed


def test_persistent_failure_gives_up_with_one_clear_error(oss_server: LoopbackOssServer, bucket: str) -> None:
    client = OssClient(OssConfig.from_env(max_attempts=3))
    oss_server.inject("get", "status", times=50, status=503)
    oss_server.inject("head", "status", times=50, status=503)
    with pytest.raises(OssUnavailableError, match=f"oss://{bucket}/x .*after retrying"):
        client.head(f"oss://{bucket}/x")


def test_bad_credentials_are_one_sentence(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "not-the-secret")
    with pytest.raises(OssCredentialsError) as info:
        OssClient(OssConfig.from_env()).head(f"oss://{bucket}/x")
    message = str(info.value)
    assert "SignatureDoesNotMatch" in message and "not-the-secret" not in message
    assert "\n" not in message


def test_missing_credentials_and_endpoint_say_what_to_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "only-the-id")
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", raising=False)
    monkeypatch.setenv("KMSBEAM_OSS_ENDPOINT", "http://127.0.0.1:1")
    with pytest.raises(ConfigurationError, match="ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        OssClient(OssConfig.from_env())
    with pytest.raises(ConfigurationError, match="KMSBEAM_OSS_ENDPOINT"):
        OssConfig().resolved_endpoint()
    monkeypatch.setenv("KMSBEAM_OSS_PART_SIZE", "lots")
    with pytest.raises(ConfigurationError, match="KMSBEAM_OSS_PART_SIZE"):
        OssConfig.from_env()


def test_missing_objects_and_buckets(bucket: str) -> None:
    client = oss_client()
    with pytest.raises(FileNotFoundError, match=f"oss://{bucket}/nope"):
        client.head(f"oss://{bucket}/nope")
    with pytest.raises(Exception, match="bucket"):
        client.put("oss://no-such-bucket/x", b"1")


def test_config_pickles_and_client_does_not(config: OssConfig) -> None:
    assert pickle.loads(pickle.dumps(config)) == config
    client = OssClient(config)
    with pytest.raises(TypeError):
        pickle.dumps(client)
    assert "secret" not in repr(client)
    assert OssConfig(endpoint="https://oss-cn-shanghai.aliyuncs.com").resolved_region() == "cn-shanghai"
