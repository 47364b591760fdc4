"""The transforms create no keys (``expand()`` calls no key source): each test module's ``KEY``
is created first, as a job does, by the explicit step ``create_local_keys``."""

from __future__ import annotations

from pathlib import Path

import pytest

from kmsbeam.transforms import create_local_keys


@pytest.fixture(autouse=True)
def module_key(request: pytest.FixtureRequest, kms_home: Path) -> None:
    key = getattr(request.module, "KEY", None)
    if isinstance(key, str):
        create_local_keys(key)
