"""``TrustedKeySources``: how a key URI found in data resolves against the caller's sources."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote

import pytest

from kmsbeam import TrustedKeySources, UntrustedKeySourceError, parse_key_uri

EMU = "kms-emulator://127.0.0.1:9800/alias/pii"
ALI = "alibaba-kms://cn-hangzhou/alias/pii?endpoint=kst-1.cryptoservice.kms.aliyuncs.com&ca=/etc/ca.pem"
P11 = "pkcs11:token=etl;object=kek-a?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:PIN"


def _refused(trusted: TrustedKeySources, hint: str, *hidden: str) -> str:
    with pytest.raises(UntrustedKeySourceError) as caught:
        trusted.resolve(hint)
    message = str(caught.value)
    assert "KMSBEAM_KEY_SOURCES" in message and "--key" in message
    for text in hidden:
        assert text not in message
    return message


def test_local_hints_open_the_callers_own_keystore() -> None:
    assert TrustedKeySources().resolve("local:alias/x") == "local:alias/x"


def test_emulator_hints_need_the_same_endpoint() -> None:
    trusted = TrustedKeySources((EMU,))
    assert trusted.resolve("kms-emulator://127.0.0.1:9800/alias/other") == (
        "kms-emulator://127.0.0.1:9800/alias/other")
    assert trusted.resolve(EMU) == EMU
    _refused(trusted, "kms-emulator://127.0.0.1:9801/alias/pii", "9801", "alias/pii")
    _refused(trusted, "kms-emulator://10.0.0.1:9800/alias/pii", "10.0.0.1")
    _refused(TrustedKeySources(), EMU, "9800")


def test_alibaba_hints_need_the_same_region_endpoint_and_ca() -> None:
    trusted = TrustedKeySources((ALI,))
    got = parse_key_uri(trusted.resolve(ALI.replace("alias/pii", "key-123")))
    assert got.key == "key-123" and got.param("endpoint") == "kst-1.cryptoservice.kms.aliyuncs.com"
    _refused(trusted, ALI.replace("kst-1", "evil"), "evil")
    _refused(trusted, ALI.replace("/etc/ca.pem", "/tmp/ca.pem"), "/tmp/ca.pem")
    _refused(trusted, "alibaba-kms://cn-shanghai/alias/pii", "cn-shanghai")


def test_pkcs11_hints_use_the_callers_module_and_pin_source() -> None:
    trusted = TrustedKeySources((P11,))
    hint = "pkcs11:token=etl;object=kek-b?module-path=/data/evil.so&pin-source=file:/data/pin"
    got = parse_key_uri(trusted.resolve(hint))
    assert got.location == "etl" and got.key == "kek-b"
    assert got.param("module-path") == "/usr/lib/softhsm/libsofthsm2.so"
    assert got.param("pin-source") == "env:PIN"
    resolved = unquote(trusted.resolve(hint))
    assert "evil" not in resolved and "/data/pin" not in resolved
    _refused(trusted, hint.replace("token=etl", "token=other"), "evil.so", "other", "/data")
    _refused(TrustedKeySources(), hint, "evil.so", "/data")


def test_malformed_and_unknown_hints_are_one_error() -> None:
    trusted = TrustedKeySources((EMU,))
    for hint in ("", "ftp://x/y", "kms-emulator://127.0.0.1:9800/alias/pii?evil=1", "local:"):
        _refused(trusted, hint, "evil", "ftp")


def test_the_environment_and_a_named_file_configure_sources(tmp_path: Path) -> None:
    listed = tmp_path / "sources"
    listed.write_text(f"# the caller's key sources\n{P11}\n")
    env = {"KMSBEAM_KEY_SOURCES": f"{EMU}, {ALI}", "KMSBEAM_KEY_SOURCES_FILE": str(listed)}
    trusted = TrustedKeySources.configured("local:alias/a", environ=env)
    assert trusted.uris == ("local:alias/a", EMU, ALI, P11)
    assert "module-path" not in repr(trusted)
    with pytest.raises(Exception, match="KMSBEAM_KEY_SOURCES_FILE"):
        TrustedKeySources.configured(environ={"KMSBEAM_KEY_SOURCES_FILE": str(tmp_path / "nope")})
