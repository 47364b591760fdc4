"""A pytest plugin: a running kmsbeam KMS emulator as a session fixture.

Enable it with ``pytest -p kmsbeam.emulator.pytest_plugin`` or, in the top-level
``conftest.py``, ``pytest_plugins = ["kmsbeam.emulator.pytest_plugin"]``. Then::

    def test_round_trip(kms_emulator):
        client = Client(kms_emulator.sdk_config())          # the official SDK, unmodified
        key = client.create_key(CreateKeyRequest()).body.key_metadata.key_id
        uri = f"kms-emulator://{kms_emulator.endpoint}/{key}"

``kms_emulator`` is an ``EmulatorServer`` on a free loopback port with a fresh keystore, one
full-access key (``kms_emulator.sdk_config()``) and no faults; it stops after the session.
It also serves the KMS instance API (HTTPS) on another free port for the instance SDK::

    key_id = kms_emulator.issue_client_key(tmp_path / "ck.json", "password")
    Config(protocol="https", endpoint=kms_emulator.instance_endpoint,
           client_key_file=str(tmp_path / "ck.json"), password="password",
           ca_file_path=kms_emulator.instance_ca_file)

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
    """A started emulator (session scope); ``.endpoint``, ``.sdk_config()``, ``.engine``,
    ``.instance_endpoint``, ``.instance_ca_file``, ``.issue_client_key(...)``."""
    access_keys = {"kmsbeam-test": secrets.token_urlsafe(24)}
    with EmulatorServer(tmp_path_factory.mktemp("kms-emulator"), access_keys,
                        rotation_check_seconds=None, instance_gateway=True) as server:  # fmt: skip
        yield server
