"""A kms-emulator:// key for tests of other features (Parquet, OSS exports, the CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from kmsbeam.emulator import EmulatorServer

ACCESS_KEY, SECRET = "etl", "etl-secret"


@contextmanager
def emulator_key(
    data: Path, monkeypatch: pytest.MonkeyPatch, alias: str = "alias/pii", *, same_account: bool = False
) -> Iterator[tuple[EmulatorServer, str]]:
    """A running emulator with ``alias`` on a fresh key, the credentials in the environment,
    the key configured as a trusted key source (``KMSBEAM_KEY_SOURCES``: data naming it may
    be read without --key), and the ``kms-emulator://`` URI of the alias. ``same_account``: accept the access key
    already in the environment (one Alibaba account for KMS and OSS, as in production)."""
    import os

    ak, secret = ACCESS_KEY, SECRET
    if same_account:
        ak = os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"]
        secret = os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", ak)
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", secret)
    with EmulatorServer(data, {ak: secret}) as server:
        server.engine.create_alias(alias, server.engine.create_key("test").key_id)
        monkeypatch.setenv("KMSBEAM_KEY_SOURCES", f"kms-emulator://{server.endpoint}/{alias}")
        yield server, f"kms-emulator://{server.endpoint}/{alias}"
