"""An emulator serving the KMS 3.0 instance gateway (HTTPS, ClientKeys), keys in it, and a
ClientKey in the environment the way a job gets it (KMSBEAM_KMS_CLIENT_KEY_FILE and
KMSBEAM_KMS_CLIENT_KEY_PASSWORD); the instance SDK runs in its own virtualenv."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kmsbeam.alikms import sdk_python
from kmsbeam.emulator import EmulatorServer
from kmsbeam.keys.registry import clear_key_source_cache
from instance_gateway import PASSWORD, Instance

@pytest.fixture(scope="session")
def instance(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Instance]:
    sdk_python()  # a missing SDK fails here, saying how to install it (CI installs it)
    data = tmp_path_factory.mktemp("instance-gateway")
    home = tmp_path_factory.mktemp("instance-client")
    with EmulatorServer(data, {"admin": "admin-secret-instance"}, rotation_check_seconds=None,
                        instance_gateway=True) as server:  # fmt: skip
        engine = server.engine
        keys = {name: engine.create_key(name).key_id for name in ("pii", "next", "off", "other")}
        engine.create_alias("alias/pii", keys["pii"])
        engine.create_alias("alias/next", keys["next"])
        engine.create_alias("alias/off", keys["off"])
        engine.disable_key(keys["off"])
        client_key = home / "clientKey.json"
        server.issue_client_key(client_key, PASSWORD, keys=["alias/pii", "alias/next", "alias/off",
                                                            keys["pii"], keys["next"], keys["off"]])  # fmt: skip
        yield Instance(server, keys, client_key, home)


@pytest.fixture
def client_env(instance: Instance, monkeypatch: pytest.MonkeyPatch) -> Iterator[Instance]:
    monkeypatch.setenv("KMSBEAM_KMS_CLIENT_KEY_FILE", str(instance.client_key))
    monkeypatch.setenv("KMSBEAM_KMS_CLIENT_KEY_PASSWORD", PASSWORD)
    for name in ("KMSBEAM_KMS_CLIENT_KEY", "KMSBEAM_KMS_CLIENT_KEY_PASSWORD_FILE", "KMSBEAM_KMS_INSTANCE_CA"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("KMSBEAM_KMS_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("KMSBEAM_KMS_BACKOFF_SECONDS", "0.01")
    clear_key_source_cache()
    yield instance
    clear_key_source_cache()
