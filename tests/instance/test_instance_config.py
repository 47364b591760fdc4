"""The alibaba-kms-instance:// key source without a gateway: its URI, where the ClientKey, its
password and the CA come from, what never shows (password, ClientKey content), the wrapped-key
layout of kind 0x04, the trust rule for hints found in data, and the rewrap path."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from kmsbeam.alikms import AlibabaKmsInstanceKeySource, instance_wrapped_key_version
from kmsbeam.alikms._instance_blob import instance_blob, instance_wrapped
from kmsbeam.alikms._instance_source import gateway_settings
from kmsbeam.errors import AuthenticationError, ConfigurationError, MalformedValueError
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.keys.trust import TrustedKeySources, UntrustedKeySourceError
from kmsbeam.keys.uri import parse_key_uri
from kmsbeam.rotation.paths import rewrap_path

PASSWORD = "client-key-password-never-shown-7c1e"
CONTENT = '{"KeyId": "KAAP.never-shown", "PrivateKeyData": "AAAA"}'


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    key = tmp_path / "clientKey.json"
    key.write_text(CONTENT)
    pw = tmp_path / "password"
    pw.write_text(PASSWORD + "\n")
    key.chmod(0o600)
    pw.chmod(0o600)
    return {"ca": str(ca), "key": str(key), "pw": str(pw)}


def _uri(ca: str, key: str = "alias/pii", host: str = "127.0.0.1:8443") -> str:
    return f"alibaba-kms-instance://{host}/{key}?ca={ca}"


def test_the_uri_names_gateway_key_and_ca(files: dict[str, str]) -> None:
    parsed = parse_key_uri(_uri(files["ca"]))
    assert (parsed.scheme, parsed.location, parsed.key, parsed.param("ca")) == (
        "alibaba-kms-instance", "127.0.0.1:8443", "alias/pii", files["ca"])
    env = {"KMSBEAM_KMS_CLIENT_KEY_FILE": files["key"], "KMSBEAM_KMS_CLIENT_KEY_PASSWORD_FILE": files["pw"]}
    s = gateway_settings(parsed, env)
    assert (s.endpoint, s.ca_file, s.client_key_file, s.password) == ("127.0.0.1:8443", files["ca"], files["key"], PASSWORD)


@pytest.mark.parametrize("uri, said", [
    ("alibaba-kms-instance://h/alias/pii?password=x", "secrets"),
    ("alibaba-kms-instance://h/alias/pii?endpoint=x", "unknown parameter"),
    ("alibaba-kms-instance://user@h/alias/pii", "secrets"),
    ("alibaba-kms-instance://h/alias/pii?ca=relative.pem", "absolute path"),
    ("alibaba-kms-instance://h_bad!/alias/pii?ca=/etc/hostname", "HOST or HOST:PORT"),
])  # fmt: skip
def test_bad_uris_are_one_clear_error(uri: str, said: str, files: dict[str, str]) -> None:
    env = {"KMSBEAM_KMS_CLIENT_KEY_FILE": files["key"], "KMSBEAM_KMS_CLIENT_KEY_PASSWORD": PASSWORD}
    with pytest.raises(ConfigurationError, match=said):
        AlibabaKmsInstanceKeySource(uri, environ=env)


def test_missing_pieces_name_the_variables_to_set(files: dict[str, str]) -> None:
    parsed = parse_key_uri("alibaba-kms-instance://127.0.0.1:8443/alias/pii")
    with pytest.raises(ConfigurationError, match="KMSBEAM_KMS_INSTANCE_CA"):
        gateway_settings(parsed, {})
    with_ca = parse_key_uri(_uri(files["ca"]))
    with pytest.raises(ConfigurationError, match="KMSBEAM_KMS_CLIENT_KEY_FILE"):
        gateway_settings(with_ca, {})
    with pytest.raises(ConfigurationError, match="KMSBEAM_KMS_CLIENT_KEY_PASSWORD"):
        gateway_settings(with_ca, {"KMSBEAM_KMS_CLIENT_KEY_FILE": files["key"]})
    with pytest.raises(ConfigurationError, match="names no readable file"):
        gateway_settings(with_ca, {"KMSBEAM_KMS_CLIENT_KEY_FILE": files["key"] + ".gone",
                                   "KMSBEAM_KMS_CLIENT_KEY_PASSWORD": PASSWORD})  # fmt: skip
    with pytest.raises(ConfigurationError, match="names no file"):
        gateway_settings(parsed, {"KMSBEAM_KMS_INSTANCE_CA": "/no/such/ca.pem"})
    with pytest.raises(ConfigurationError, match="absolute path"):
        gateway_settings(parsed, {"KMSBEAM_KMS_INSTANCE_CA": "relative/ca.pem"})
    with pytest.raises(ConfigurationError, match="names no file"):
        gateway_settings(parse_key_uri(_uri("/no/such/ca.pem")), {})


def test_client_key_mistakes_are_named_and_never_echoed(files: dict[str, str]) -> None:
    with_ca = parse_key_uri(_uri(files["ca"]))
    content = Path(files["key"]).read_text()
    mistakes = [
        ({"KMSBEAM_KMS_CLIENT_KEY_FILE": content}, "holds the ClientKey itself; put it in KMSBEAM_KMS_CLIENT_KEY"),
        ({"KMSBEAM_KMS_CLIENT_KEY_FILE": content * 200}, "holds the ClientKey itself"),
        ({"KMSBEAM_KMS_CLIENT_KEY": files["key"]}, "KMSBEAM_KMS_CLIENT_KEY is not a ClientKey"),
        ({"KMSBEAM_KMS_CLIENT_KEY_FILE": files["pw"]}, "KMSBEAM_KMS_CLIENT_KEY_FILE is not a ClientKey"),
        ({"KMSBEAM_KMS_CLIENT_KEY_FILE": files["key"], "KMSBEAM_KMS_CLIENT_KEY_PASSWORD_FILE": PASSWORD},
         "names no readable file"),
    ]  # fmt: skip
    for env, said in mistakes:
        with pytest.raises(ConfigurationError, match=said) as err:
            gateway_settings(with_ca, {"KMSBEAM_KMS_CLIENT_KEY_PASSWORD": "" if "PASSWORD_FILE" in str(env) else PASSWORD,
                                       **env})  # fmt: skip
        assert "never-shown" not in str(err.value) and PASSWORD not in str(err.value)
    for name in ("key", "pw"):
        Path(files[name]).chmod(0o644)
    with pytest.raises(ConfigurationError, match="readable or writable by group or others"):
        gateway_settings(with_ca, {"KMSBEAM_KMS_CLIENT_KEY_FILE": files["key"], "KMSBEAM_KMS_CLIENT_KEY_PASSWORD": PASSWORD})
    Path(files["key"]).chmod(0o600)
    with pytest.raises(ConfigurationError, match="readable or writable by group or others"):
        gateway_settings(with_ca, {"KMSBEAM_KMS_CLIENT_KEY_FILE": files["key"], "KMSBEAM_KMS_CLIENT_KEY_PASSWORD_FILE": files["pw"]})


def test_the_ca_may_be_content_and_the_client_key_content(files: dict[str, str]) -> None:
    parsed = parse_key_uri("alibaba-kms-instance://127.0.0.1:8443/key-abc")
    pem = Path(files["ca"]).read_text()
    s = gateway_settings(parsed, {"KMSBEAM_KMS_INSTANCE_CA": pem, "KMSBEAM_KMS_CLIENT_KEY": CONTENT,
                                  "KMSBEAM_KMS_CLIENT_KEY_PASSWORD": PASSWORD})  # fmt: skip
    assert s.ca_file is None and s.ca_content and s.ca_content.startswith("-----BEGIN")
    assert s.client_key_file is None and s.client_key_content == CONTENT
    s2 = gateway_settings(parsed, {"KMSBEAM_KMS_INSTANCE_CA": files["ca"], "KMSBEAM_KMS_CLIENT_KEY": CONTENT,
                                   "KMSBEAM_KMS_CLIENT_KEY_PASSWORD": PASSWORD})  # fmt: skip
    assert s2.ca_file == files["ca"]


def test_the_password_and_client_key_never_show(files: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KMSBEAM_KMS_CLIENT_KEY", CONTENT)
    monkeypatch.setenv("KMSBEAM_KMS_CLIENT_KEY_PASSWORD", PASSWORD)
    source = AlibabaKmsInstanceKeySource(_uri(files["ca"]))
    settings = source._settings
    for text in (repr(source), repr(settings), source.uri, str(pickle.dumps(source))):
        assert PASSWORD not in text and "never-shown" not in text
    with pytest.raises(TypeError):
        pickle.dumps(settings)
    copy = pickle.loads(pickle.dumps(source))
    assert copy.uri == source.uri


def test_wrapped_keys_of_kind_4_carry_their_version() -> None:
    wrapped = instance_wrapped("key-abc-v1", b"\x01\x02blob")
    assert wrapped is not None and wrapped[:3] == b"\x04\x01\x0a"
    assert instance_wrapped_key_version(wrapped) == wrapped_key_version(wrapped) == "key-abc-v1"
    assert instance_blob(wrapped) == b"\x01\x02blob"
    assert instance_wrapped("", b"x") is None and instance_wrapped("v", b"") is None
    assert instance_wrapped("bad version!", b"x") is None
    for bad in (b"", b"\x04", b"\x04\x02\x01vX", b"\x04\x01\x00X", b"\x04\x01\x05ab", b"\x04\x01\x01v",
                b"\x02\x01\x01vX", b"\x04\x01\x01\xffX"):  # fmt: skip
        with pytest.raises(MalformedValueError):
            instance_wrapped_key_version(bad)
        with pytest.raises(AuthenticationError) as err:
            instance_blob(bad)
        assert str(err.value) == str(AuthenticationError(code="InvalidCiphertext"))


def test_hints_in_data_need_the_same_gateway_and_ca(files: dict[str, str]) -> None:
    configured = _uri(files["ca"])
    trusted = TrustedKeySources((configured,))
    assert parse_key_uri(trusted.resolve(_uri(files["ca"], key="key-other"))).key == "key-other"
    for hint in (_uri(files["ca"], host="evil.example:8443"), _uri("/tmp/other-ca.pem"),
                 "alibaba-kms-instance://127.0.0.1:8443/alias/pii"):  # fmt: skip
        with pytest.raises(UntrustedKeySourceError) as err:
            trusted.resolve(hint)
        assert "evil" not in str(err.value) and "other-ca" not in str(err.value)


def test_the_rewrap_path_is_named_by_the_target() -> None:
    instance = rewrap_path("alibaba-kms-instance://h/alias/pii?ca=/x")
    assert (instance.calls, instance.per_key) == ("AdvanceDecrypt + AdvanceEncrypt", 2)
    assert "no ReEncrypt" in instance.summary()
    assert rewrap_path("alibaba-kms://cn-hangzhou/alias/pii").summary() == "ReEncrypt (server side)"
    assert rewrap_path("kms-emulator://127.0.0.1:1/alias/pii").calls == "ReEncrypt"
    assert rewrap_path("local:alias/x").per_key == 1


def test_the_kind_4_layout_is_pinned_by_vectors() -> None:
    import json

    vectors = json.loads((Path(__file__).resolve().parents[1] / "vectors" / "instance_wrapped_key_v1.json").read_text())
    for v in vectors["accepted"]:
        wrapped = bytes.fromhex(v["wrapped_hex"])
        assert instance_wrapped(v["key_version_id"], bytes.fromhex(v["ciphertext_blob_hex"])) == wrapped
        assert instance_wrapped_key_version(wrapped) == v["key_version_id"]
        assert instance_blob(wrapped).hex() == v["ciphertext_blob_hex"]
        # by hand, as docs/FORMAT.md says: 0x04, 0x01, n, n bytes of version, the rest is the blob
        n = wrapped[2]
        assert wrapped[:2] == b"\x04\x01" and wrapped[3 : 3 + n].decode("ascii") == v["key_version_id"]
    for v in vectors["refused"]:
        with pytest.raises(MalformedValueError):
            instance_wrapped_key_version(bytes.fromhex(v["wrapped_hex"]))
        with pytest.raises(AuthenticationError):
            instance_blob(bytes.fromhex(v["wrapped_hex"]))
