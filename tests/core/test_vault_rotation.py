"""``kmsbeam.vault.rotation.rotate_vault`` with the embedded key source: one rewrap per data
key, idempotent, resumable past a torn entry, filters, ``verify``; no data is involved."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from kmsbeam.formats import FieldFormat
from kmsbeam.keys.policy import DataKeyPolicy
from kmsbeam.keys.registry import clear_key_source_cache, open_key_source
from kmsbeam.keys.source import KeySource
from kmsbeam.vault import KeyVault, entry_name
from kmsbeam.vault.rotation import rotate_vault


@pytest.fixture()
def keys(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[KeySource, KeySource]]:
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path / "home"))
    clear_key_source_cache()
    KeyVault.forget()
    yield open_key_source("local:alias/a", create=True), open_key_source("local:alias/b", create=True)
    clear_key_source_cache()
    KeyVault.forget()


def _dataset(vault: KeyVault, source: KeySource, n: int = 40) -> list[dict[str, object]]:
    fmt = FieldFormat("ssn", vault=vault)
    enc = fmt.encryptor(source, context={"t": "x"}, policy=DataKeyPolicy(max_records=10))
    return [enc.encrypt({"ssn": f"s{i}"}) for i in range(n)]


def _decrypts(vault: KeyVault, source: KeySource, records: list[dict[str, object]]) -> bool:
    KeyVault.forget()
    dec = FieldFormat("ssn", vault=vault).decryptor(source, context={"t": "x"})
    return [dec.decrypt(r)["ssn"] for r in records] == [f"s{i}" for i in range(len(records))]


def test_one_rewrap_per_data_key_then_none(tmp_path: Path, keys: tuple[KeySource, KeySource]) -> None:
    a, b = keys
    vault = KeyVault(str(tmp_path / "v"))
    records = _dataset(vault, a)
    done = rotate_vault(vault, b, verify=True)
    assert (done.keys, done.rewrapped, done.calls, done.verify_calls, done.failed) == (4, 4, 4, 4, {})
    assert all(gens == [2, 1] for gens in vault.key_ids().values())
    assert {vault.newest(k).master_key for k in vault.key_ids()} == {"local:alias/b"}  # type: ignore[union-attr]
    again = rotate_vault(vault, b)
    assert (again.already, again.rewrapped, again.calls) == (4, 0, 0)
    assert _decrypts(vault, b, records)


def test_a_torn_newest_entry_is_skipped_and_never_reused(tmp_path: Path, keys: tuple[KeySource, KeySource]) -> None:
    a, b = keys
    vault = KeyVault(str(tmp_path / "v"))
    records = _dataset(vault, a)
    torn = sorted(vault.key_ids())[0]
    path = tmp_path / "v" / entry_name(torn, 2)
    path.parent.mkdir(exist_ok=True)
    path.write_bytes(b'{"context":')  # a rotation that died before its sync
    done = rotate_vault(vault, b)
    assert done.rewrapped == 4 and not done.failed
    assert vault.key_ids()[torn] == [3, 2, 1]  # written after the torn one, which stays as it was
    assert _decrypts(vault, b, records)


def test_filters_leave_other_keys_as_they_are(tmp_path: Path, keys: tuple[KeySource, KeySource]) -> None:
    a, b = keys
    vault = KeyVault(str(tmp_path / "v"))
    _dataset(vault, a)
    first, *others = sorted(vault.key_ids())
    done = rotate_vault(vault, b, only_keys=[first, bytes(16)])
    assert (done.keys, done.rewrapped, done.filtered) == (4, 1, 3)
    assert done.failed == {bytes(16).hex(): "no such data key in the vault"}
    assert [len(vault.key_ids()[k]) for k in others] == [1, 1, 1]
    version = vault.newest(others[0]).master_key_version  # type: ignore[union-attr]
    done = rotate_vault(vault, b, only_versions=["no-such-version"])
    assert (done.filtered, done.rewrapped) == (4, 0)
    done = rotate_vault(vault, b, only_versions=[version])
    assert (done.rewrapped, done.filtered) == (3, 1)


def test_no_data_file_is_needed(tmp_path: Path, keys: tuple[KeySource, KeySource]) -> None:
    a, b = keys
    vault = KeyVault(str(tmp_path / "v"))
    _dataset(vault, a)
    before = sorted(os.listdir(tmp_path))
    rotate_vault(vault, b)
    assert sorted(os.listdir(tmp_path)) == before  # only the vault's own directory changed


@pytest.mark.parametrize("parallel", [1, 8])
def test_many_keys_at_a_time_or_one(tmp_path: Path, keys: tuple[KeySource, KeySource], parallel: int) -> None:
    a, b = keys
    vault = KeyVault(str(tmp_path / "v"))
    records = _dataset(vault, a, n=400)  # 40 data keys
    seen: list[int] = []
    done = rotate_vault(vault, b, parallel=parallel, verify=True,
                        on_key=lambda r: seen.append(r.rewrapped))  # fmt: skip
    assert (done.keys, done.rewrapped, done.calls, done.verify_calls) == (40, 40, 40, 40)
    assert sorted(seen) == list(range(1, 41))  # one report per key, counts never lost
    assert all(gens == [2, 1] for gens in vault.key_ids().values())
    assert _decrypts(vault, b, records)


def test_a_disabled_target_fails_before_anything_is_written(tmp_path: Path,
                                                           keys: tuple[KeySource, KeySource]) -> None:  # fmt: skip
    from kmsbeam.errors import KeyDisabledError
    from kmsbeam.keys.local import shared_engine

    a, b = keys
    vault = KeyVault(str(tmp_path / "v"))
    _dataset(vault, a)
    shared_engine(tmp_path / "home").disable_key("alias/b")
    with pytest.raises(KeyDisabledError):
        rotate_vault(vault, b)
    assert all(gens == [1] for gens in vault.key_ids().values())
