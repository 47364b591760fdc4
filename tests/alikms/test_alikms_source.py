"""The Alibaba KMS key source against the real emulator: round trips, context binding, the
wrapped-key layout, ReEncrypt rewrap, DescribeKey, and the endpoints of alibaba-kms:// URIs."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from kmsbeam import (
    AuthenticationError,
    ConfigurationError,
    KeyDisabledError,
    KeyNotFoundError,
    MalformedValueError,
    open_key_source,
)
from kmsbeam.alikms import AlibabaKmsKeySource, RetryPolicy
from kmsbeam.emulator import EmulatorServer
from kmsbeam.keys.source import KIND_ALIBABA_KMS, KIND_LOCAL, KeySource
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.keys.registry import wrapped_key_version
from tests.alikms.conftest import key_uri, make_source

CTX = {"dataset": "customers", "tenant": "t1"}


def test_open_key_source_serves_both_schemes_once_per_uri(server: EmulatorServer) -> None:
    uri = key_uri(server)
    source = open_key_source(uri)
    assert isinstance(source, AlibabaKmsKeySource) and isinstance(source, KeySource)
    assert open_key_source(uri) is source
    assert source.uri == uri and source.kind == KIND_ALIBABA_KMS
    remote = open_key_source("alibaba-kms://cn-hangzhou/alias/pii")  # opening makes no call
    assert isinstance(remote, AlibabaKmsKeySource) and remote.kind == KIND_ALIBABA_KMS


@pytest.mark.parametrize("by", ["alias", "key id"])
def test_round_trip_by_alias_and_by_key_id(server: EmulatorServer, by: str) -> None:
    key_id = server.engine.describe_key("alias/pii").key_id
    source = open_key_source(key_uri(server, "alias/pii" if by == "alias" else key_id))
    data_key = source.generate_data_key(CTX)
    assert len(data_key.plaintext) == 32 and data_key.key_id == key_id
    assert data_key.key_version == server.engine.describe_key(key_id).primary_key_version
    assert source.decrypt_data_key(data_key.wrapped, CTX) == data_key.plaintext
    # any source of the endpoint unwraps it: the blob names its key
    other = open_key_source(key_uri(server, "alias/other"))
    reordered = dict(reversed(CTX.items()))  # key order does not matter
    assert other.decrypt_data_key(data_key.wrapped, reordered) == data_key.plaintext
    assert source.generate_data_key(CTX).plaintext != data_key.plaintext


def test_wrapped_key_is_the_kind_byte_and_the_raw_blob(server: EmulatorServer) -> None:
    source = open_key_source(key_uri(server))
    data_key = source.generate_data_key()
    wrapped = data_key.wrapped
    assert wrapped[0] == KIND_ALIBABA_KMS and len(wrapped) == 1 + 108  # FORMAT.md: 108-byte blob
    assert wrapped[1:37].decode("ascii") == data_key.key_version
    # the same blob layout as the embedded keystore: local: opens it with its own kind byte
    local = LocalKeySource("local:alias/pii", home=server.data_dir)
    assert local.decrypt_data_key(bytes([KIND_LOCAL]) + wrapped[1:]) == data_key.plaintext
    assert source.decrypt_data_key(wrapped) == data_key.plaintext


def test_context_is_bound(server: EmulatorServer) -> None:
    source = open_key_source(key_uri(server))
    wrapped = source.generate_data_key(CTX).wrapped
    for wrong in (None, {}, {"dataset": "customers"}, {**CTX, "tenant": "t2"}, {**CTX, "x": "y"}):
        with pytest.raises(AuthenticationError) as info:
            source.decrypt_data_key(wrapped, wrong)
        assert str(info.value) == str(AuthenticationError())
        assert info.value.code == "InvalidCiphertext"
        assert getattr(info.value, "request_id", None)  # kept, though never in the message
    unbound = source.generate_data_key().wrapped
    with pytest.raises(AuthenticationError):
        source.decrypt_data_key(unbound, CTX)
    assert len(source.decrypt_data_key(unbound, {})) == 32


def test_tampered_or_foreign_wrapped_keys_fail_the_same_way(server: EmulatorServer) -> None:
    source = make_source(server)
    wrapped = source.generate_data_key(CTX).wrapped
    calls = source.stats()["attempts"]
    for bad in (bytes([KIND_LOCAL]) + wrapped[1:], wrapped[:1], b"", bytes([KIND_ALIBABA_KMS, 1])):
        with pytest.raises(AuthenticationError) as info:
            source.decrypt_data_key(bad, CTX)
        assert str(info.value) == str(AuthenticationError())
    assert source.stats()["attempts"] <= calls + 2  # a foreign kind never reaches the KMS
    for i in (1, 20, 40, 60, len(wrapped) - 1):  # version id, IV, ciphertext, tag
        flipped = bytearray(wrapped)
        flipped[i] ^= 0x01
        with pytest.raises(AuthenticationError):
            source.decrypt_data_key(bytes(flipped), CTX)
    with pytest.raises(TypeError):
        source.decrypt_data_key("not bytes", CTX)  # type: ignore[arg-type]


def test_rewrap_with_reencrypt_moves_the_dek_to_another_key(server: EmulatorServer) -> None:
    old = open_key_source(key_uri(server, "alias/pii"))
    new = open_key_source(key_uri(server, "alias/other"))
    data_key = old.generate_data_key(CTX)
    rewrapped = new.rewrap(data_key.wrapped, CTX, {"dataset": "customers-v2"})
    other_meta = server.engine.describe_key("alias/other")
    assert rewrapped[0] == KIND_ALIBABA_KMS and rewrapped != data_key.wrapped
    assert rewrapped[1:37].decode("ascii") == other_meta.primary_key_version
    assert new.decrypt_data_key(rewrapped, {"dataset": "customers-v2"}) == data_key.plaintext
    with pytest.raises(AuthenticationError):
        new.decrypt_data_key(rewrapped, CTX)  # the old context no longer opens it
    # the rewrapped key no longer depends on the old key at all
    server.engine.disable_key("alias/pii")
    assert old.decrypt_data_key(rewrapped, {"dataset": "customers-v2"}) == data_key.plaintext
    # new_context=None keeps the context
    kept = new.rewrap(rewrapped, {"dataset": "customers-v2"})
    assert new.decrypt_data_key(kept, {"dataset": "customers-v2"}) == data_key.plaintext
    with pytest.raises(AuthenticationError):
        new.rewrap(rewrapped, CTX)  # a wrong source context fails like a decrypt


def test_describe_key(server: EmulatorServer) -> None:
    meta = server.engine.describe_key("alias/pii")
    server.engine.create_alias("alias/pii-2", meta.key_id)
    info = open_key_source(key_uri(server)).describe_key()
    assert info.key_id == meta.key_id and info.state == "Enabled"
    assert info.primary_version == meta.primary_key_version
    assert info.aliases == ("alias/pii", "alias/pii-2") and info.arn == meta.arn
    assert info.created
    server.engine.disable_key(meta.key_id)
    assert open_key_source(key_uri(server, meta.key_id)).describe_key().state == "Disabled"


def test_create_true_never_creates_a_remote_key(server: EmulatorServer) -> None:
    before = len(server.engine.list_keys())
    source = open_key_source(key_uri(server, "alias/brand-new"), create=True)
    assert source.created is False  # type: ignore[attr-defined]
    with pytest.raises(KeyNotFoundError, match="never creates"):
        source.generate_data_key()
    assert len(server.engine.list_keys()) == before


def test_alibaba_kms_endpoints(tmp_path: Path) -> None:
    public = AlibabaKmsKeySource("alibaba-kms://cn-shanghai/alias/pii")
    assert public.endpoint.host == "kms.cn-shanghai.aliyuncs.com"
    assert public.endpoint.protocol == "https"
    assert public.endpoint.where == "Alibaba Cloud KMS (cn-shanghai)" and public.endpoint.ca is None
    ca = tmp_path / "instance-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    host = "kst-hzz65f176a0ogplgq2ldg.cryptoservice.kms.aliyuncs.com"
    dedicated = AlibabaKmsKeySource(f"alibaba-kms://cn-hangzhou/key-abc123?endpoint={host}&ca={ca}")
    assert dedicated.endpoint.host == host and dedicated.endpoint.ca == str(ca)
    assert dedicated.key == "key-abc123" and host in dedicated.endpoint.where
    sdk = dedicated._sdk().sdk
    assert (sdk._endpoint, sdk._protocol, sdk._ca) == (host, "https", str(ca))  # what the SDK got
    for bad in (
        "alibaba-kms://CN_HANGZHOU/alias/pii",
        f"alibaba-kms://cn-hangzhou/alias/pii?endpoint=https://{host}",
        f"alibaba-kms://cn-hangzhou/alias/pii?endpoint={host}/path",
        "alibaba-kms://cn-hangzhou/alias/pii?ca=relative/ca.pem",
        f"alibaba-kms://cn-hangzhou/alias/pii?ca={tmp_path / 'missing.pem'}",
        "kms-emulator://127.0.0.1:9/alias/pii?region=Nowhere!",
        "local:alias/pii",
    ):
        with pytest.raises(ConfigurationError):
            AlibabaKmsKeySource(bad)


def test_alibaba_kms_speaks_https(server: EmulatorServer) -> None:
    """alibaba-kms:// uses TLS: pointed at the (plain HTTP) emulator, the handshake fails, and
    that is a configuration error, not retried."""
    source = AlibabaKmsKeySource(
        f"alibaba-kms://cn-hangzhou/alias/pii?endpoint={server.endpoint}",
        retry=RetryPolicy(max_attempts=3, backoff_seconds=0),
    )
    with pytest.raises(ConfigurationError, match="TLS failed .*wrong version number.*ca="):
        source.generate_data_key()
    assert source.stats() == {"attempts": 1, "retries": 0, "gave_up": 0}


def test_data_key_plaintext_is_the_decoded_kms_plaintext(server: EmulatorServer) -> None:
    """The DEK is the base64-decoded Plaintext (32 bytes), as the KMS Decrypt returns it."""
    source = open_key_source(key_uri(server))
    data_key = source.generate_data_key()
    text = server.engine.decrypt(data_key.wrapped[1:]).plaintext
    assert base64.b64decode(text) == data_key.plaintext


def test_public_names_are_pinned() -> None:
    import kmsbeam.alikms

    assert set(kmsbeam.alikms.__all__) == {
        "RETRY_ENV_VARS", "AlibabaKmsKeySource", "Endpoint", "RetryPolicy", "clear_clients",
        "open_alikms_source", "wrapped_key_version",
        # the KMS 3.0 instance gateway (alibaba-kms-instance://) and its SDK's virtualenv
        "CLIENT_KEY_ENV", "SDK_ENV", "SDK_REQUIREMENT", "AlibabaKmsInstanceKeySource",
        "install_sdk", "instance_wrapped_key_version", "open_instance_source", "sdk_dir",
        "sdk_python"}  # fmt: skip
    assert all(hasattr(kmsbeam.alikms, name) for name in kmsbeam.alikms.__all__)


def test_versions_are_read_from_blobs_and_one_describe_key(server: EmulatorServer) -> None:
    source = open_key_source(key_uri(server))
    assert source.created is False
    attempts = source.stats()["attempts"]  # type: ignore[attr-defined]
    first = source.current_version()
    assert source.stats()["attempts"] - attempts == 1  # type: ignore[attr-defined]  # DescribeKey only
    assert first == server.engine.describe_key("alias/pii").primary_key_version
    data_key = source.generate_data_key(CTX)
    attempts = source.stats()["attempts"]  # type: ignore[attr-defined]
    assert source.wrapped_key_version(data_key.wrapped) == first == data_key.key_version
    assert wrapped_key_version(data_key.wrapped) == first
    assert source.stats()["attempts"] == attempts  # type: ignore[attr-defined]  # no call
    server.engine.create_key_version("alias/pii")  # a rotation: a new primary version
    second = source.current_version()
    assert second != first and source.key_versions() == (first, second)
    assert source.wrapped_key_version(source.rewrap(data_key.wrapped, CTX)) == second
    assert source.wrapped_key_version(data_key.wrapped) == first
    for bad in (b"", data_key.wrapped[:37], bytes([KIND_LOCAL]) + data_key.wrapped[1:]):
        with pytest.raises(MalformedValueError):
            source.wrapped_key_version(bad)
    server.engine.disable_key("alias/pii")
    with pytest.raises(KeyDisabledError):
        source.current_version()
