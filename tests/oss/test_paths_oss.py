"""kmsbeam.pipelines.paths on oss:// (the loopback OSS server and the real oss2 client)."""

from __future__ import annotations

import pytest

from kmsbeam import ConfigurationError
from kmsbeam.oss import LoopbackOssServer, OssCredentialsError, clear_clients
from kmsbeam.pipelines import paths


def test_objects_and_prefixes(oss_server: LoopbackOssServer, bucket: str) -> None:
    base = f"oss://{bucket}/ds/"
    paths.write_bytes(paths.join(base, "part-0.jsonl"), b"x")
    paths.write_bytes(paths.join(base, "_dead_letters", "part-0.jsonl"), b"yy")
    assert paths.exists(f"oss://{bucket}/ds/part-0.jsonl") and not paths.exists(f"oss://{bucket}/ds")
    assert paths.is_dir(base) and paths.is_dir(f"oss://{bucket}/ds") and not paths.is_dir(f"oss://{bucket}/d")
    assert paths.list_dir(base) == [f"oss://{bucket}/ds/_dead_letters/part-0.jsonl", f"oss://{bucket}/ds/part-0.jsonl"]
    assert paths.match(f"oss://{bucket}/ds/*.jsonl") == [f"oss://{bucket}/ds/part-0.jsonl"]
    assert paths.match(f"oss://{bucket}/nothing/*.jsonl") == []
    assert paths.read_bytes(f"oss://{bucket}/ds/_dead_letters/part-0.jsonl") == b"yy"
    assert paths.size(f"oss://{bucket}/ds/_dead_letters/part-0.jsonl") == 2
    paths.remove_tree(f"oss://{bucket}/ds/_dead_letters")
    assert sorted(oss_server.objects(bucket)) == ["ds/part-0.jsonl"]
    paths.delete([f"oss://{bucket}/ds/part-0.jsonl"])
    assert oss_server.objects(bucket) == {}


def test_a_missing_bucket_is_a_usage_error(bucket: str) -> None:
    with pytest.raises(ConfigurationError, match="bucket of oss://no-such-bucket/x/ does not exist; create it"):
        paths.list_dir("oss://no-such-bucket/x/")


def test_refused_credentials(bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "wrong-secret")
    clear_clients()
    with pytest.raises(OssCredentialsError, match="rejected the credentials"):
        paths.match(f"oss://{bucket}/x/*.jsonl")


def test_manifest_kind_on_oss(bucket: str) -> None:
    from kmsbeam.pipelines.manifest import Manifest, manifest_kind

    Manifest(mode="fields", fields=["ssn"], key="local:alias/k", format="jsonl").write(f"oss://{bucket}/ds/")
    paths.write_bytes(f"oss://{bucket}/exp/_kmsbeam.json", b'{"kmsbeam_export": 1}')
    assert manifest_kind(f"oss://{bucket}/ds/") == "dataset" and manifest_kind(f"oss://{bucket}/ds") == "dataset"
    assert manifest_kind(f"oss://{bucket}/exp/") == "export"
    assert manifest_kind(f"oss://{bucket}/nothing/") is None
    read = Manifest.read(f"oss://{bucket}/ds")
    assert read is not None and read.fields == ["ssn"]
