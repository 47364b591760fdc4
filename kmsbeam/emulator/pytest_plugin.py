"""A pytest plugin: a running kmsbeam KMS emulator as a session fixture.

Enable it with ``pytest -p kmsbeam.emulator.pytest_plugin`` or, in the top-level
``conftest.py``, ``pytest_plugins = ["kmsbeam.emulator.pytest_plugin"]``. Then::

    def test_round_trip(kms_emulator):
        client = Client(kms_emulator.sdk_config())          # the official SDK, unmodified
        key = client.create_key(CreateKeyRequest()).body.key_metadata.key_id
        uri = f"kms-emulator://{kms_emulator.endpoint}/{key}"

``kms_emulator`` is an ``EmulatorServer`` on a free loopback port with a fresh keystore, one
full-access key (``kms_emulator.sdk_config()``) and no faults; it stops after the session.
For policies, faults or several keys, build an ``EmulatorServer`` in your own fixture.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import pytest

from kmsbeam.emulator._server import EmulatorServer

__all__ = ["kms_emulator"]


@pytest.fixture(scope="session")
def kms_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """A started emulator (session scope); ``.endpoint``, ``.sdk_config()``, ``.engine``."""
    access_keys = {"kmsbeam-test": secrets.token_urlsafe(24)}
    with EmulatorServer(tmp_path_factory.mktemp("kms-emulator"), access_keys,
                        rotation_check_seconds=None) as server:  # fmt: skip
        yield server
