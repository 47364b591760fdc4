"""The transforms create no keys (``expand()`` calls no key source): each test module's ``KEY``
is created first, as a job does, by the explicit step ``create_local_keys``."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmsbeam import forget_data_keys
from kmsbeam.emulator import AccessKey, EmulatorServer
from kmsbeam.transforms import create_local_keys


@pytest.fixture(autouse=True)
def module_key(request: pytest.FixtureRequest, kms_home: Path) -> None:
    key = getattr(request.module, "KEY", None)
    if isinstance(key, str):
        create_local_keys(key)


@pytest.fixture()
def stream_kms(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    """A started emulator with ``alias/pii``, its access key in the environment, and no data key
    of an earlier test on this process's shelf (streaming tests count calls exactly)."""
    ak = ("stream", secrets.token_urlsafe(16))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", ak[0])
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", ak[1])
    forget_data_keys()
    with EmulatorServer(tmp_path / "kms", [AccessKey(*ak)], rotation_check_seconds=None) as server:
        server.engine.ensure_alias("alias/pii")
        yield server
