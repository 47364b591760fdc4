"""Every configuration and HSM failure is one clear kmsbeam error that never shows the PIN."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pkcs11_helpers import PIN, PIN_ENV, Hsm

from kmsbeam import AccessDeniedError, ConfigurationError, KeyNotFoundError, KmsBeamError
from kmsbeam.pkcs11 import Pkcs11KeySource


def fails(uri: str, error: type[KmsBeamError], match: str) -> KmsBeamError:
    with pytest.raises(error, match=match) as info:
        Pkcs11KeySource(uri)
    assert PIN not in str(info.value) and PIN not in repr(info.value)
    return info.value


def test_a_wrong_pin_at_login_in_a_fresh_process(hsm: Hsm, kek: str) -> None:
    code = (
        "import sys\nfrom kmsbeam.pkcs11 import Pkcs11KeySource\n"
        "try:\n    Pkcs11KeySource(sys.argv[1])\n"
        "except Exception as e:\n    print(type(e).__name__, e.code, '|', e)\n"
    )
    env = {**os.environ, PIN_ENV: "wrong-pin-999"}
    out = subprocess.run([sys.executable, "-c", code, kek], env=env, capture_output=True, text=True,
                         timeout=60)  # fmt: skip
    assert out.stdout.startswith("AccessDeniedError PinIncorrect |"), out.stdout + out.stderr
    assert f"wrong PIN for token 'etl' (PIN from env:{PIN_ENV})" in out.stdout
    assert "wrong-pin-999" not in out.stdout + out.stderr


def test_a_wrong_pin_once_the_process_is_logged_in(kek: str, monkeypatch: pytest.MonkeyPatch) -> None:
    Pkcs11KeySource(kek)
    monkeypatch.setenv("KMSBEAM_TEST_OTHER_PIN", "wrong-pin-999")
    uri = kek.replace(f"env:{PIN_ENV}", "env:KMSBEAM_TEST_OTHER_PIN")
    err = fails(uri, AccessDeniedError, "wrong PIN for token 'etl'.*another PIN")
    assert "wrong-pin-999" not in str(err)


def test_the_pin_from_a_file(hsm: Hsm, kek: str, tmp_path: Path) -> None:
    pin_file = tmp_path / "pin"
    pin_file.write_text(PIN + "\n")
    pin_file.chmod(0o600)  # group- or world-readable PIN files are refused
    src = Pkcs11KeySource(kek.replace(f"env:{PIN_ENV}", f"file:{pin_file}"))
    key = src.generate_data_key()
    assert src.decrypt_data_key(key.wrapped) == key.plaintext


def test_a_missing_pin(hsm: Hsm, kek: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KMSBEAM_TEST_UNSET_PIN", raising=False)
    fails(kek.replace(f"env:{PIN_ENV}", "env:KMSBEAM_TEST_UNSET_PIN"), ConfigurationError,
          "env:KMSBEAM_TEST_UNSET_PIN is not set: export KMSBEAM_TEST_UNSET_PIN")  # fmt: skip
    missing = tmp_path / "no-such-pin"
    fails(kek.replace(f"env:{PIN_ENV}", f"file:{missing}"), ConfigurationError, "does not exist")


def test_an_unknown_token(hsm: Hsm) -> None:
    err = fails(hsm.uri("kek", token="nosuch"), KeyNotFoundError, "no initialised token labelled 'nosuch'")
    assert "'etl'" in str(err) and "check token=" in str(err) and err.code == "TokenNotFound"


def test_an_uninitialised_token(hsm: Hsm) -> None:
    uri = hsm.uri("kek", extra=f"&slot-id={hsm.free_slot}")
    err = fails(uri, ConfigurationError, f"the token in slot {hsm.free_slot} .* is not initialised")
    assert err.code == "TokenNotInitialized"


def test_a_token_whose_user_pin_is_not_initialised(hsm: Hsm) -> None:
    fails(hsm.uri("kek", token="nopin"), ConfigurationError, "user PIN of token 'nopin' is not initialised")


def test_a_missing_kek(hsm: Hsm) -> None:
    err = fails(hsm.uri("no-such-kek"), KeyNotFoundError,
                "no KEK label 'no-such-kek' on token 'etl' in .*libsofthsm2.so: create it with")  # fmt: skip
    assert "kmsbeam keys create --key 'pkcs11:token=etl;object=no-such-kek?" in str(err)
    assert type(err.__cause__).__name__ == "NoSuchKey"  # mapped at the boundary, from exc


def test_duplicate_kek_labels_need_an_id(hsm: Hsm) -> None:
    label = hsm.label("dup")
    for key_id in ("a1", "a2"):
        hsm.tool("--keygen", "--key-type", "AES:32", "--label", label, "--id", key_id, "--usage-wrap")
    fails(hsm.uri(label), ConfigurationError, "several secret keys match .* add id=")
    src = Pkcs11KeySource(hsm.uri(label, key_id=b"\xa2"))
    key = src.generate_data_key()
    assert key.key_version == "a2" and src.decrypt_data_key(key.wrapped) == key.plaintext


def test_a_key_that_may_not_wrap(hsm: Hsm) -> None:
    from pkcs11 import Attribute

    label = hsm.label("enc")
    hsm.make_key(label, {Attribute.WRAP: False, Attribute.UNWRAP: False, Attribute.ENCRYPT: True})
    fails(hsm.uri(label), ConfigurationError, "is not an AES key allowed to wrap and unwrap")


@pytest.mark.parametrize(
    ("module", "match"),
    [
        ("/nonexistent/libpkcs11.so", "no PKCS#11 module at /nonexistent/libpkcs11.so: check module-path"),
        ("/etc/hostname", "cannot load /etc/hostname as a PKCS#11 module"),
    ],
)
def test_a_bad_module_path(hsm: Hsm, module: str, match: str) -> None:
    fails(hsm.uri("kek", module=module), ConfigurationError, match)


def test_a_shared_library_that_is_not_a_pkcs11_module(hsm: Hsm) -> None:
    candidates = ("/lib/x86_64-linux-gnu/libz.so.1", "/usr/lib/x86_64-linux-gnu/libz.so.1")
    libs = [p for p in candidates if Path(p).exists()]
    if not libs:
        pytest.skip("no libz to load")
    fails(hsm.uri("kek", module=libs[0]), ConfigurationError, "undefined symbol: C_GetFunctionList")
