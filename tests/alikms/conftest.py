"""A real kmsbeam KMS emulator on a free loopback port, credentials in the environment, and a
fake clock whose ``sleep`` only advances time (so retry tests never really wait)."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsbeam.alikms import AlibabaKmsKeySource, RetryPolicy, clear_clients
from kmsbeam.emulator import AccessKey, EmulatorServer
from kmsbeam.keys.registry import clear_key_source_cache

ADMIN = ("kmsbeam-admin", "admin-secret-never-printed-5f1d")
NO_DECRYPT = ("no-decrypt", "no-decrypt-secret-c0de")
STS = ("STS.session", "sts-secret-9a9a", "sts-token-never-printed-0b0b")

# may make data keys and describe keys, nothing else (no Decrypt, no ListAliasesByKeyId)
NO_DECRYPT_POLICY = {
    "Version": "1",
    "Statement": [
        {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:DescribeKey"], "Resource": "*"}
    ],
}

ENV_VARS = (
    "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
    "ALIBABA_CLOUD_SECURITY_TOKEN", "KMSBEAM_KMS_MAX_ATTEMPTS", "KMSBEAM_KMS_DEADLINE_SECONDS",
    "KMSBEAM_KMS_BACKOFF_SECONDS", "KMSBEAM_KMS_MAX_BACKOFF_SECONDS",
)  # fmt: skip


def use_credentials(mp: pytest.MonkeyPatch, ak: str, secret: str, token: str | None = None) -> None:
    """Put an access key in the environment and make the next client read it."""
    mp.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", ak)
    mp.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret)
    if token is None:
        mp.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
    else:
        mp.setenv("ALIBABA_CLOUD_SECURITY_TOKEN", token)
    clear_clients()
    clear_key_source_cache()


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    use_credentials(monkeypatch, *ADMIN)
    yield
    clear_clients()
    clear_key_source_cache()


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[EmulatorServer]:
    keys = [
        AccessKey(*ADMIN),
        AccessKey(*NO_DECRYPT, policy=NO_DECRYPT_POLICY),
        AccessKey(STS[0], STS[1], security_token=STS[2]),
    ]
    with EmulatorServer(tmp_path / "kms", keys, rotation_check_seconds=None) as srv:
        srv.engine.ensure_alias("alias/pii")
        srv.engine.ensure_alias("alias/other")
        yield srv


def key_uri(server: EmulatorServer, key: str = "alias/pii") -> str:
    return f"kms-emulator://{server.endpoint}/{key}"


class FakeTime:
    """``clock``/``sleep`` for a ``Retrier``: sleeping advances the clock and is recorded."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.sleeps.append(seconds)
        self.now += seconds


def make_source(
    server: EmulatorServer, key: str = "alias/pii", fake: FakeTime | None = None, **retry: Any
) -> AlibabaKmsKeySource:
    """A source with a fake clock (no real sleeping) and a seeded jitter."""
    fake = fake or FakeTime()
    return AlibabaKmsKeySource(
        key_uri(server, key),
        retry=RetryPolicy(**retry),
        sleep=fake.sleep,
        clock=fake.clock,
        random=random.Random(7).random,
    )


def audit_events(server: EmulatorServer, action: str) -> list[dict[str, Any]]:
    """The audit records of ``action``; stops the server first so that every call is written."""
    server.stop()
    lines = server.audit.path.read_text(encoding="utf-8").splitlines()
    return [e for e in map(json.loads, lines) if e.get("eventName") == action]
