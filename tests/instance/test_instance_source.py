"""alibaba-kms-instance:// against the emulator's instance gateway, through the official
instance SDK (in its own interpreter): data keys, unwrap, rewrap by AdvanceDecrypt +
AdvanceEncrypt, versions across a rotation, and every failure as kmsbeam's one clear error.
Calls are counted from the emulator's audit log."""

from __future__ import annotations

import os
import pickle
import subprocess
from pathlib import Path

import pytest

from kmsbeam import open_key_source
from kmsbeam.alikms import AlibabaKmsInstanceKeySource
from kmsbeam.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    KeyDisabledError,
    KeyNotFoundError,
)
from kmsbeam.keys.registry import wrapped_key_version

from instance_gateway import PASSWORD, Instance


def test_data_keys_round_trip_with_their_context(client_env: Instance) -> None:
    inst = client_env
    source = open_key_source(inst.uri())
    assert isinstance(source, AlibabaKmsInstanceKeySource) and source.kind == 0x04
    before = len(inst.audit())
    dk = source.generate_data_key({"dataset": "customers"})
    assert dk.key_id == inst.keys["pii"] and dk.wrapped[0] == 0x04
    assert wrapped_key_version(dk.wrapped) == dk.key_version == source.wrapped_key_version(dk.wrapped)
    assert source.decrypt_data_key(dk.wrapped, {"dataset": "customers"}) == dk.plaintext
    assert inst.calls("AdvanceGenerateDataKey", before) == 1 and inst.calls("AdvanceDecrypt", before) == 1
    with pytest.raises(AuthenticationError) as wrong:
        source.decrypt_data_key(dk.wrapped, {"dataset": "other"})
    tampered = dk.wrapped[:-1] + bytes([dk.wrapped[-1] ^ 1])
    with pytest.raises(AuthenticationError) as bad:
        source.decrypt_data_key(tampered, {"dataset": "customers"})
    assert str(wrong.value) == str(bad.value)  # one detail-free error
    assert "customers" not in str(wrong.value)


def test_rewrap_is_decrypt_then_encrypt_to_the_target(client_env: Instance) -> None:
    inst = client_env
    old = open_key_source(inst.uri())
    new = open_key_source(inst.uri("alias/next"))
    dk = old.generate_data_key({"t": "1"})
    before = len(inst.audit())
    moved = new.rewrap(dk.wrapped, {"t": "1"})
    assert inst.calls("AdvanceDecrypt", before) == 1 and inst.calls("AdvanceEncrypt", before) == 1
    assert not any(r.get("eventName") == "ReEncrypt" for r in inst.audit()[before:])
    assert new.wrapped_key_version(moved) == new.current_version() != old.current_version()
    assert new.decrypt_data_key(moved, {"t": "1"}) == dk.plaintext
    recontexted = new.rewrap(dk.wrapped, {"t": "1"}, {"t": "2"})
    assert new.decrypt_data_key(recontexted, {"t": "2"}) == dk.plaintext


def test_versions_follow_a_rotation_and_old_keys_still_unwrap(client_env: Instance) -> None:
    inst = client_env
    source = open_key_source(inst.uri("alias/next"))
    dk = source.generate_data_key()
    first = source.current_version()
    info = source.describe_key()
    assert (info.key_id, info.primary_version, info.state) == (inst.keys["next"], first, "Enabled")
    inst.server.engine.create_key_version(inst.keys["next"])
    second = source.current_version()
    assert second != first and source.key_versions() == (second,)
    assert source.generate_data_key().key_version == second
    assert source.decrypt_data_key(dk.wrapped) == dk.plaintext


def test_failures_are_kmsbeams_errors(client_env: Instance) -> None:
    inst = client_env
    with pytest.raises(KeyDisabledError, match="Rejected.Disabled"):
        open_key_source(inst.uri("alias/off")).generate_data_key()
    with pytest.raises(AccessDeniedError, match="Forbidden.NoPermission.*application access point") as denied:
        open_key_source(inst.uri(inst.keys["other"])).generate_data_key()
    assert "RAM" not in str(denied.value)
    with pytest.raises((KeyNotFoundError, AccessDeniedError)):
        open_key_source(inst.uri("alias/none")).generate_data_key()


def test_a_wrong_password_or_ca_is_a_configuration_error(client_env: Instance, monkeypatch: pytest.MonkeyPatch,
                                                           tmp_path: os.PathLike[str]) -> None:  # fmt: skip
    inst = client_env
    monkeypatch.setenv("KMSBEAM_KMS_CLIENT_KEY_PASSWORD", "not-the-password-4e4e")
    with pytest.raises(ConfigurationError, match="does not open with its password") as err:
        AlibabaKmsInstanceKeySource(inst.uri()).generate_data_key()
    assert "not-the-password" not in str(err.value)
    monkeypatch.setenv("KMSBEAM_KMS_CLIENT_KEY_PASSWORD", PASSWORD)
    other_ca = os.path.join(tmp_path, "other-ca.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", os.path.join(tmp_path, "k"),
                    "-out", other_ca, "-subj", "/CN=other", "-days", "1"], check=True, capture_output=True)  # fmt: skip
    uri = f"alibaba-kms-instance://{inst.server.instance_endpoint}/alias/pii?ca={other_ca}"
    with pytest.raises(ConfigurationError, match="TLS failed"):
        AlibabaKmsInstanceKeySource(uri).generate_data_key()


def test_the_ca_as_content_and_the_client_key_as_content(client_env: Instance, monkeypatch: pytest.MonkeyPatch) -> None:
    inst = client_env
    monkeypatch.setenv("KMSBEAM_KMS_INSTANCE_CA", Path(inst.server.instance_ca_file).read_text())
    monkeypatch.setenv("KMSBEAM_KMS_CLIENT_KEY", inst.client_key.read_text())
    monkeypatch.delenv("KMSBEAM_KMS_CLIENT_KEY_FILE")
    uri = f"alibaba-kms-instance://{inst.server.instance_endpoint}/alias/pii"
    source = AlibabaKmsInstanceKeySource(uri)
    dk = source.generate_data_key()
    assert pickle.loads(pickle.dumps(source)).decrypt_data_key(dk.wrapped) == dk.plaintext


def test_a_gateway_that_is_down_is_unavailable_after_the_retries(client_env: Instance) -> None:
    from kmsbeam.errors import KeySourceUnavailableError

    uri = f"alibaba-kms-instance://127.0.0.1:9/alias/pii?ca={client_env.server.instance_ca_file}"
    with pytest.raises(KeySourceUnavailableError, match="gave up"):
        AlibabaKmsInstanceKeySource(uri).generate_data_key()


def test_a_forked_child_starts_its_own_helper(client_env: Instance) -> None:
    source = open_key_source(client_env.uri())
    dk = source.generate_data_key()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its own helper process, same answer
        try:
            ok = source.decrypt_data_key(dk.wrapped) == dk.plaintext
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    assert os.read(r, 1) == b"1"
    os.waitpid(pid, 0)
    assert source.decrypt_data_key(dk.wrapped) == dk.plaintext
