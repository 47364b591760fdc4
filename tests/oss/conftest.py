"""One loopback OSS server per session; each test gets its own bucket and environment."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import pytest

from kmsbeam.oss import LoopbackOssServer, OssConfig, clear_clients

_names = itertools.count()


@pytest.fixture(scope="session")
def oss_server() -> Iterator[LoopbackOssServer]:
    with LoopbackOssServer(buckets=()) as server:
        yield server


@pytest.fixture()
def bucket(oss_server: LoopbackOssServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket; the environment points kmsbeam.oss at the server (fast retries)."""
    name = f"test-{next(_names):04d}"
    oss_server.create_bucket(name)
    for var, value in oss_server.environ().items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("KMSBEAM_OSS_BACKOFF_SECONDS", "0.001")
    monkeypatch.setenv("KMSBEAM_OSS_PART_SIZE", str(100 * 1024))
    for var in ("ALIBABA_CLOUD_SECURITY_TOKEN", "KMSBEAM_OSS_AUTH_VERSION"):
        monkeypatch.delenv(var, raising=False)
    clear_clients()
    yield name
    oss_server.clear_faults()
    clear_clients()


@pytest.fixture()
def config(bucket: str) -> OssConfig:
    return OssConfig.from_env()


@pytest.fixture()
def raw_bucket(oss_server: LoopbackOssServer) -> Any:
    """A factory of plain oss2.Bucket objects on the loopback server (the real SDK)."""
    import oss2

    def make(name: str, auth: str = "v1", **kw: Any) -> Any:
        env = oss_server.environ()
        maker = oss2.AuthV4 if auth == "v4" else oss2.Auth
        return oss2.Bucket(maker(env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]),
                           oss_server.endpoint, name, region=oss_server.region, **kw)  # fmt: skip

    return make
