"""CreateKey's parameters (Origin, ProtectionLevel, KeySpec, KeyUsage, rotation, tags) and
DescribeKeyVersion, on a real keystore."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from kmsbeam.errors import ConfigurationError, KeyDisabledError, KeyNotFoundError
from kmsbeam.kms import KmsEngine


def _code(call: Callable[[], object], error: type[Exception] = ConfigurationError) -> str | None:
    with pytest.raises(error) as err:
        call()
    return getattr(err.value, "code", None)


def test_defaults_are_an_enabled_aes_key_whose_last_rotation_is_its_creation(
    engine: KmsEngine,
) -> None:
    meta = engine.create_key("d")
    assert (meta.origin, meta.key_state, meta.protection_level) == (
        "Aliyun_KMS",
        "Enabled",
        "SOFTWARE",
    )
    assert meta.last_rotation_date == meta.creation_date == "2026-11-23T12:00:00Z"
    assert meta.material_expire_time == ""
    alibaba = meta.to_alibaba()
    assert alibaba["MaterialExpireTime"] == "" and alibaba["KeyId"] == meta.key_id
    assert alibaba["Arn"] == meta.arn and "Material" not in alibaba


def test_external_key_waits_for_its_material(engine: KmsEngine) -> None:
    meta = engine.create_key("byok", origin="EXTERNAL")
    assert (meta.key_state, meta.origin, meta.primary_key_version) == (
        "PendingImport",
        "EXTERNAL",
        "",
    )
    assert meta.last_rotation_date == "" and engine.list_key_versions(meta.key_id) == []
    assert engine.describe_key(meta.key_id) == meta
    key = meta.key_id
    for call in (
        lambda: engine.encrypt(key, b"x"),
        lambda: engine.generate_data_key(key),
        lambda: engine.generate_data_key_without_plaintext(key),
        lambda: engine.enable_key(key),
        lambda: engine.disable_key(key),
    ):
        assert _code(call, KeyDisabledError) == "Rejected.PendingImport"
    assert _code(lambda: engine.create_key_version(key)) == "UnsupportedOperation"
    other = engine.create_key().key_id
    blob = engine.encrypt(other, b"x").ciphertext_blob
    assert _code(lambda: engine.re_encrypt(blob, key), KeyDisabledError) == "Rejected.PendingImport"


def test_bad_key_options_are_invalid_parameters(engine: KmsEngine) -> None:
    bad: list[dict[str, object]] = [
        {"origin": "external"},
        {"origin": "AWS_KMS"},
        {"protection_level": "software"},
        {"key_spec": "AES_256"},
        {"key_spec": "Aliyun_AES_128"},
        {"key_spec": "RSA_2048"},
        {"key_spec": "EC_P256"},
        {"key_usage": "SIGN/VERIFY"},
        {"key_usage": "ENCRYPT_DECRYPT"},
    ]
    for options in bad:
        call = lambda: engine.create_key(**options)  # type: ignore[arg-type]  # noqa: E731
        assert _code(call) == "InvalidParameter", options
    with pytest.raises(ConfigurationError, match="RSA_2048 is not implemented"):
        engine.create_key(key_spec="RSA_2048")
    with pytest.raises(TypeError):
        engine.create_key(origin=None)  # type: ignore[arg-type]
    assert engine.list_keys() == []  # nothing half-created
    hsm = engine.create_key(protection_level="HSM")
    assert engine.describe_key(hsm.key_id).protection_level == "HSM"


def test_rotation_parameters(engine: KmsEngine) -> None:
    legacy = engine.create_key(rotation_interval="30d")
    assert (legacy.automatic_rotation, legacy.rotation_interval) == ("Enabled", "2592000s")
    assert legacy.next_rotation_date == "2026-12-23T12:00:00Z"
    on = engine.create_key(enable_automatic_rotation=True, rotation_interval="168h")
    assert (on.automatic_rotation, on.rotation_interval) == ("Enabled", "604800s")
    off = engine.create_key(enable_automatic_rotation=False, rotation_interval="30d")
    assert (off.automatic_rotation, off.rotation_interval, off.next_rotation_date) == (
        "Disabled",
        "",
        "",
    )
    for ok, seconds in [("7d", 604800), ("10080m", 604800), ("365d", 31536000),
                        ("31536000s", 31536000), ("8760h", 31536000)]:  # fmt: skip
        assert engine.create_key(rotation_interval=ok).rotation_interval == f"{seconds}s"
    for wrong in ("6d", "604799s", "366d", "31536001s", "1w", "7", "", "d", "-7d", "7 d"):
        assert _code(lambda: engine.create_key(rotation_interval=wrong)) == "InvalidParameter"
    assert _code(lambda: engine.create_key(enable_automatic_rotation=True)) == "InvalidParameter"
    with pytest.raises(TypeError):
        engine.create_key(enable_automatic_rotation="true")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError) as err:
        engine.create_key(origin="EXTERNAL", rotation_interval="7d")
    assert err.value.code == "UnsupportedOperation"


def test_tags_at_creation_are_atomic(engine: KmsEngine) -> None:
    meta = engine.create_key(tags={"team": "data", "env": "prod"})
    assert engine.list_resource_tags(meta.key_id) == {"env": "prod", "team": "data"}
    assert _code(lambda: engine.create_key(tags={"acs:x": "1"})) == "InvalidParameter"
    assert [k.key_id for k in engine.list_keys()] == [meta.key_id]


def test_describe_key_version(engine: KmsEngine) -> None:
    key = engine.create_key()
    v2 = engine.create_key_version(key.key_id)
    engine.create_alias("alias/v", key.key_id)
    first = engine.describe_key_version("alias/v", key.primary_key_version)
    assert (first.key_id, first.key_version_id, first.creation_date) == (
        key.key_id,
        key.primary_key_version,
        "2026-11-23T12:00:00Z",
    )
    assert first.material == b"" and "material" not in repr(first)
    second = engine.describe_key_version(key.arn, v2.key_version_id)
    assert second.key_version_id == v2.key_version_id
    assert first.to_alibaba() == {
        "KeyId": key.key_id,
        "KeyVersionId": key.primary_key_version,
        "CreationDate": "2026-11-23T12:00:00Z",
    }
    other = engine.create_key()
    for version_id in (other.primary_key_version, "", "nope"):
        code = _code(lambda: engine.describe_key_version(key.key_id, version_id), KeyNotFoundError)
        assert code == "Forbidden.KeyNotFound"
    with pytest.raises(TypeError):
        engine.describe_key_version(key.key_id, None)  # type: ignore[arg-type]
