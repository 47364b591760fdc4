"""The pkcs11: URI configuration: what is required, what is refused, and the PIN sources."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest

from kmsbeam import ConfigurationError, KeyUri, parse_key_uri
from kmsbeam.pkcs11 import PinSource, Pkcs11Config

M = "module-path=/usr/lib/softhsm/libsofthsm2.so"
GOOD = f"pkcs11:token=etl;object=kek-2026?{M}&pin-source=env:KMSBEAM_PKCS11_PIN"


def config(uri: str) -> Pkcs11Config:
    return Pkcs11Config.from_uri(parse_key_uri(uri))


def test_a_full_uri() -> None:
    c = config(GOOD)
    assert (c.module_path, c.token, c.label, c.key_id, c.slot_id) == (
        "/usr/lib/softhsm/libsofthsm2.so", "etl", "kek-2026", None, None)  # fmt: skip
    assert c.pin_source == PinSource("env", "KMSBEAM_PKCS11_PIN") and c.uri == GOOD
    assert pickle.loads(pickle.dumps(c)) == c


def test_id_is_percent_encoded_bytes_and_slot_id_a_number() -> None:
    c = config(f"pkcs11:token=etl;id=%01%ff%a2;slot-id=7?{M}&pin-source=file:/run/secrets/pin")
    assert c.key_id == b"\x01\xff\xa2" and c.label is None and c.slot_id == 7
    assert c.pin_source == PinSource("file", "/run/secrets/pin")
    assert config(f"pkcs11:token=etl;object=k?{M}&pin-source=file:///run/pin").pin_source.where == "/run/pin"
    assert "id 01ffa2" in c.kek_name()


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("pkcs11:token=etl;object=k?pin-source=env:P", "need module-path="),
        ("pkcs11:token=etl;object=k?module-path=lib.so&pin-source=env:P", "must be absolute"),
        (f"pkcs11:token=etl;object=k?{M}", "need pin-source="),
        (f"pkcs11:token=etl;object=k?{M}&pin-source=P", "env:VARIABLE or file:"),
        (f"pkcs11:token=etl;object=k?{M}&pin-source=env:1X", "env:VARIABLE or file:"),
        (f"pkcs11:token=etl;object=k?{M}&pin-source=file:rel/pin", "absolute path"),
        (f"pkcs11:token=etl;object=k;slot-id=x?{M}&pin-source=env:P", "slot-id must be a slot number"),
        (f"pkcs11:token={'t' * 33};object=k?{M}&pin-source=env:P", "1 to 32 bytes"),
        (f"pkcs11:token=etl;object=k?{M}&pin-source=env:P&pin-value=123456", "PIN"),
        (f"pkcs11:token=etl;object=k;pin-value=123456?{M}&pin-source=env:P", "PIN"),
        ("local:alias/pii", "pkcs11: key URIs"),
    ],
)
def test_bad_uris_are_refused_clearly(uri: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as info:
        config(uri)
    assert "123456" not in str(info.value)


def test_a_literal_pin_is_refused_even_in_a_hand_built_key_uri() -> None:
    params = (("token", "etl"), ("object", "k"), ("module-path", "/m.so"), ("pin-value", "123456"))
    with pytest.raises(ConfigurationError, match="must not carry the PIN") as info:
        Pkcs11Config.from_uri(KeyUri("pkcs11", "etl", "k", params))
    assert "123456" not in str(info.value)


def test_pin_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    source = PinSource.parse("env:KMSBEAM_TEST_SOME_PIN")
    monkeypatch.delenv("KMSBEAM_TEST_SOME_PIN", raising=False)
    with pytest.raises(ConfigurationError, match="env:KMSBEAM_TEST_SOME_PIN is not set"):
        source.read()
    monkeypatch.setenv("KMSBEAM_TEST_SOME_PIN", "")
    with pytest.raises(ConfigurationError, match="is empty"):
        source.read()
    monkeypatch.setenv("KMSBEAM_TEST_SOME_PIN", "s3cret")
    assert source.read() == "s3cret" and "s3cret" not in repr(source) + str(source)


def test_pin_from_file(tmp_path: Path) -> None:
    path = tmp_path / "pin"
    source = PinSource.parse(f"file:{path}")
    with pytest.raises(ConfigurationError, match="does not exist"):
        source.read()
    path.write_text("s3cret\nignored second line\n")
    path.chmod(0o600)  # a PIN file group or others may read is refused (test_keystore_permissions)
    assert source.read() == "s3cret"
    path.write_text("\n")
    with pytest.raises(ConfigurationError, match="is empty") as info:
        source.read()
    assert str(path) in str(info.value)


def test_a_hand_built_key_uri_gets_a_canonical_text() -> None:
    params = (("object", "k 1"), ("token", "etl"), ("module-path", "/m.so"), ("pin-source", "env:P"))
    c = Pkcs11Config.from_uri(KeyUri("pkcs11", "etl", "k 1", params))
    assert c.uri == "pkcs11:object=k%201;token=etl?module-path=/m.so&pin-source=env:P"
    assert config(c.uri) == c


def test_the_public_names_are_pinned() -> None:
    import kmsbeam.pkcs11 as p

    assert set(p.__all__) == {"PinSource", "Pkcs11Config", "Pkcs11KeySource", "create_kek",
                              "hsm_call_counts", "open_pkcs11_source", "wrapped_key_version"}  # fmt: skip
    assert all(hasattr(p, name) for name in p.__all__)
