"""Shared fixtures: every test gets its own embedded keystore (KMSBEAM_HOME in tmp)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(autouse=True)
def kms_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path_factory.mktemp("kmsbeam-home")
    monkeypatch.setenv("KMSBEAM_HOME", str(home))
    return home


@pytest.fixture()
def source(kms_home: Path) -> Any:
    from kmsbeam import open_key_source

    return open_key_source("local:alias/test", create=True)
