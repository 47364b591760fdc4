"""``kmsbeam.keys.registry``: a key source added by registering its URI scheme and its
wrapped-key kind, with ``open_key_source`` untouched; real keystores under tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kmsbeam import ConfigurationError, MalformedValueError, parse_key_uri
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.keys.registry import open_key_source, register_kind, register_scheme, wrapped_key_version
from kmsbeam.keys.source import KIND_LOCAL, KeySource
from kmsbeam.keys.uri import KeyUri

CTX = {"dataset": "crm"}


def test_a_registered_scheme_is_opened_by_open_key_source(tmp_path: Path) -> None:
    opened: list[tuple[str, str, str | None, bool]] = []

    def open_vault(uri: KeyUri, *, create: bool) -> KeySource:  # a keystore per location
        opened.append((uri.location, uri.key, uri.param("shelf"), create))
        return LocalKeySource(f"local:{uri.key}", home=tmp_path / uri.location, create=create)

    register_scheme("test-vault", open_vault, params=("shelf",))
    uri = "test-vault://north/alias/pii?shelf=2"
    source = open_key_source(uri, create=True)
    assert opened == [("north", "alias/pii", "2", True)] and source.created
    assert open_key_source(uri) is source and len(opened) == 1  # cached per process
    key = source.generate_data_key(CTX)
    assert source.decrypt_data_key(key.wrapped, CTX) == key.plaintext
    assert wrapped_key_version(key.wrapped) == source.current_version()
    assert (tmp_path / "north" / "keystore.db").exists()
    with pytest.raises(ConfigurationError, match="unknown parameter"):
        parse_key_uri("test-vault://north/alias/pii?drawer=1")
    with pytest.raises(ConfigurationError, match="must not carry"):
        parse_key_uri("test-vault://north/alias/pii?secret=1")
    with pytest.raises(ConfigurationError, match="scheme"):
        register_scheme("Test Vault", open_vault)


def test_a_scheme_opener_may_be_named_and_is_imported_at_the_first_open(tmp_path: Path) -> None:
    register_scheme("test-named", "kmsbeam.keys.local:LocalKeySource")
    with pytest.raises(ConfigurationError, match="local: key URIs"):  # imported and called
        open_key_source("test-named://x/alias/pii")


def test_wrapped_key_versions_by_kind(tmp_path: Path) -> None:
    local = LocalKeySource("local:alias/pii", home=tmp_path, create=True)
    wrapped = local.generate_data_key(CTX).wrapped
    assert wrapped_key_version(wrapped) == local.current_version()
    for unknown in (b"", b"\x7e" + wrapped[1:]):
        with pytest.raises(MalformedValueError):
            wrapped_key_version(unknown)
    register_kind(0x7E, lambda w: f"test/{len(w)}")
    assert wrapped_key_version(b"\x7e" + wrapped[1:]) == f"test/{len(wrapped)}"
    assert wrapped[0] == KIND_LOCAL
    with pytest.raises(ConfigurationError):
        register_kind(256, lambda w: "")


def test_the_remote_sources_load_on_first_use_only() -> None:
    code = (
        "import sys, kmsbeam\n"
        "loaded = lambda: [m for m in ('pkcs11', 'alibabacloud_kms20160120') if m in sys.modules]\n"
        "print(loaded())\n"
        "kmsbeam.open_key_source('kms-emulator://127.0.0.1:9/alias/pii')  # opening makes no call\n"
        "print(loaded())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split("\n")[:2] == ["[]", "['alibabacloud_kms20160120']"]
