"""The ``local:`` key source and ``open_key_source``, on real keystores under tmp_path."""

from __future__ import annotations

import base64
import os
import pickle
import stat
from pathlib import Path

import pytest

from kmsbeam.errors import (
    AuthenticationError,
    ConfigurationError,
    KeyDisabledError,
    KeyNotFoundError,
    MalformedValueError,
)
from kmsbeam.keys.source import KIND_LOCAL, DataKey, KeySource
from kmsbeam.kms import KEYSTORE_FILENAME, KeyStore, KmsEngine
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.keys.registry import keystore_home, open_key_source, wrapped_key_version

CTX = {"dataset": "crm", "field": "email"}


@pytest.fixture()
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


@pytest.fixture()
def pii(home: Path) -> LocalKeySource:
    return LocalKeySource("local:alias/pii", create=True)


def test_round_trip_and_kind_byte(pii: LocalKeySource) -> None:
    assert isinstance(pii, KeySource) and pii.kind == KIND_LOCAL and pii.uri == "local:alias/pii"
    dk = pii.generate_data_key(CTX)
    assert len(dk.plaintext) == 32
    assert dk.wrapped[0] == KIND_LOCAL and len(dk.wrapped) == 1 + 36 + 12 + 44 + 16
    info = pii.describe_key()
    assert (dk.key_id, dk.key_version) == (info.key_id, info.primary_version)
    assert dk.wrapped[1:37] == info.primary_version.encode()
    assert pii.decrypt_data_key(dk.wrapped, dict(reversed(CTX.items()))) == dk.plaintext
    assert pii.decrypt_data_key(bytearray(dk.wrapped), CTX) == dk.plaintext  # type: ignore[arg-type]


def test_bad_wrapped_keys_fail_alike(pii: LocalKeySource) -> None:
    dk = pii.generate_data_key(CTX)
    engine = KmsEngine(KeyStore(pii.home))
    not_base64 = engine.encrypt(pii.key_id, b"not base64!", CTX).ciphertext_blob
    short_key = engine.encrypt(pii.key_id, base64.b64encode(b"k" * 10), CTX).ciphertext_blob
    bad = [
        b"",
        bytes([KIND_LOCAL]),
        bytes([0x02]) + dk.wrapped[1:],
        bytes([0x00]) + dk.wrapped[1:],
        dk.wrapped[:-1],
        dk.wrapped[:-1] + bytes([dk.wrapped[-1] ^ 1]),
        bytes([KIND_LOCAL]) + not_base64,
        bytes([KIND_LOCAL]) + short_key,
    ]
    for wrapped in bad:
        with pytest.raises(AuthenticationError) as err:
            pii.decrypt_data_key(wrapped, CTX)
        assert str(err.value) == str(AuthenticationError())
    for ctx in ({}, None, {**CTX, "x": "y"}):
        with pytest.raises(AuthenticationError):
            pii.decrypt_data_key(dk.wrapped, ctx)
    with pytest.raises(TypeError):
        pii.decrypt_data_key(dk.wrapped.hex(), CTX)  # type: ignore[arg-type]


def test_created_on_first_use(home: Path) -> None:
    first = LocalKeySource("local:alias/new", create=True)
    again = LocalKeySource("local:alias/new", create=True)
    plain = LocalKeySource("local:alias/new")
    assert (first.created, again.created, plain.created) == (True, False, False)
    assert first.key_id == again.key_id == plain.key_id
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / KEYSTORE_FILENAME).stat().st_mode) == 0o600
    by_id = LocalKeySource(f"local:{first.key_id}", create=True)
    assert by_id.key_id == first.key_id and not by_id.created
    assert by_id.describe_key().aliases == ("alias/new",)


def test_missing_alias_explains_and_creates_nothing(home: Path) -> None:
    with pytest.raises(KeyNotFoundError) as err:
        LocalKeySource("local:alias/pii")
    message = str(err.value)
    assert "alias/pii" in message and str(home / KEYSTORE_FILENAME) in message
    assert "kmsbeam keys create --alias pii" in message
    assert err.value.code == "Forbidden.AliasNotFound"
    assert not home.exists()
    LocalKeySource("local:alias/other", create=True)
    with pytest.raises(KeyNotFoundError, match="kmsbeam keys create --alias pii") as again:
        LocalKeySource("local:alias/pii")
    assert again.value.code == "Forbidden.AliasNotFound"
    with pytest.raises(KeyNotFoundError, match="kmsbeam keys list") as by_id:
        LocalKeySource("local:0c6e1a8e-0000-4000-8000-000000000000", create=True)
    assert by_id.value.code == "Forbidden.KeyNotFound"
    with pytest.raises(ConfigurationError):
        LocalKeySource("alibaba-kms://cn-hangzhou/alias/pii")


def test_decrypts_any_key_of_the_keystore_and_rewraps(pii: LocalKeySource) -> None:
    other = LocalKeySource("local:alias/other", create=True)
    dk = other.generate_data_key(CTX)
    assert pii.decrypt_data_key(dk.wrapped, CTX) == dk.plaintext
    moved = pii.rewrap(dk.wrapped, CTX, {"v": "2"})
    assert moved[0] == KIND_LOCAL and moved[1:37] == pii.describe_key().primary_version.encode()
    assert other.decrypt_data_key(moved, {"v": "2"}) == dk.plaintext
    kept = pii.rewrap(dk.wrapped, CTX)  # new_context=None keeps the context
    assert pii.decrypt_data_key(kept, CTX) == dk.plaintext
    with pytest.raises(AuthenticationError):
        pii.rewrap(bytes([0x03]) + dk.wrapped[1:], CTX)
    KmsEngine(KeyStore(pii.home)).disable_key("alias/other")
    with pytest.raises(KeyDisabledError):
        pii.decrypt_data_key(dk.wrapped, CTX)
    with pytest.raises(KeyDisabledError):
        other.generate_data_key(CTX)


def test_versions_are_read_from_blobs(pii: LocalKeySource) -> None:
    engine = KmsEngine(KeyStore(pii.home))
    first = pii.current_version()
    key = pii.generate_data_key(CTX)
    assert pii.wrapped_key_version(key.wrapped) == first == key.key_version == wrapped_key_version(key.wrapped)
    engine.create_key_version("alias/pii")  # a rotation: a new primary version
    second = pii.current_version()
    assert second != first and pii.key_versions() == (first, second)
    assert pii.wrapped_key_version(pii.rewrap(key.wrapped, CTX)) == second
    assert pii.wrapped_key_version(key.wrapped) == first
    for bad in (b"", key.wrapped[:37], b"\x02" + key.wrapped[1:], b"\x01" + bytes(range(128, 228))):
        with pytest.raises(MalformedValueError):
            pii.wrapped_key_version(bad)
    engine.disable_key("alias/pii")
    with pytest.raises(KeyDisabledError):
        pii.current_version()


def test_describe_key(pii: LocalKeySource) -> None:
    info = pii.describe_key()
    assert info.key_id == pii.key_id and info.state == "Enabled" and info.aliases == ("alias/pii",)
    assert info.arn.endswith(f":key/{pii.key_id}") and info.created.endswith("Z")


def test_pickle_reopens_without_creating(pii: LocalKeySource, tmp_path: Path) -> None:
    dk = pii.generate_data_key(CTX)
    clone = pickle.loads(pickle.dumps(pii))
    assert isinstance(clone, LocalKeySource) and clone.uri == pii.uri and clone.home == pii.home
    assert clone.decrypt_data_key(dk.wrapped, CTX) == dk.plaintext
    elsewhere = LocalKeySource("local:alias/pii", home=tmp_path / "b", create=True)
    payload = pickle.dumps(elsewhere)
    for leftover in (tmp_path / "b").iterdir():
        leftover.unlink()
    with pytest.raises(KeyNotFoundError):
        pickle.loads(payload)
    assert not (tmp_path / "b" / KEYSTORE_FILENAME).exists()


def test_data_key_never_shows_plaintext(pii: LocalKeySource) -> None:
    dk = pii.generate_data_key(CTX)
    assert isinstance(dk, DataKey)
    text = repr(dk)
    for form in (repr(dk.plaintext), dk.plaintext.hex(), base64.b64encode(dk.plaintext).decode()):
        assert form not in text
    with pytest.raises(TypeError):
        pickle.dumps(dk)


def test_open_key_source_caches_per_uri_and_home(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(KeyNotFoundError):
        open_key_source("local:alias/pii")  # a failure is not cached
    a = open_key_source("local:alias/pii", create=True)
    assert isinstance(a, LocalKeySource) and a.created
    assert open_key_source("local:alias/pii") is a
    assert open_key_source("local:alias/other", create=True) is not a
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path / "second"))
    b = open_key_source("local:alias/pii", create=True)
    assert b is not a and isinstance(b, LocalKeySource) and b.home == tmp_path / "second"


def test_open_key_source_after_fork_starts_empty(home: Path) -> None:
    parent = open_key_source("local:alias/pii", create=True)
    wrapped = parent.generate_data_key(CTX).wrapped
    pid = os.fork()
    if pid == 0:  # child: only os._exit, never return into pytest
        child = open_key_source("local:alias/pii")
        ok = child is not parent and len(child.decrypt_data_key(wrapped, CTX)) == 32
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert open_key_source("local:alias/pii") is parent




def test_unknown_scheme_and_bad_uris() -> None:
    for uri in ("s3://bucket/key", "local:", "local://x", ""):
        with pytest.raises(ConfigurationError):
            open_key_source(uri)


def test_keystore_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path / "x"))
    assert keystore_home() == tmp_path / "x"
    monkeypatch.delenv("KMSBEAM_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert keystore_home() == tmp_path / ".kmsbeam"
