"""The key-vault store over Beam's filesystems (``kmsbeam.transforms.vault_fs``): on the
loopback OSS server with the real oss2 client (create-once on the server), and on a local
path through Beam; the same ``KeyVault`` on top of both."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

import kmsbeam.transforms  # noqa: F401  (registers oss:// and the vault store)
from kmsbeam.transforms.vault_fs import BeamVaultStore
from kmsbeam.vault import KeyVault, VaultEntry, open_store

from tests.oss.conftest import bucket, oss_server  # noqa: F401  (fixtures)


@pytest.fixture(params=["oss", "beam-local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> BeamVaultStore:
    if request.param == "oss":
        name = request.getfixturevalue("bucket")
        return BeamVaultStore(f"oss://{name}/_keys/")
    return BeamVaultStore(str(tmp_path / "_keys"))  # Beam's generic path (open_store gives LocalStore)


def test_create_once_read_list_delete(store: BeamVaultStore) -> None:
    assert store.read("a/00000001.json") is None
    assert store.create("a/00000001.json", b"first") is True
    assert store.create("a/00000001.json", b"second") is False  # never overwritten
    assert store.read("a/00000001.json") == b"first"
    store.create("b/00000001.json", b"x")
    assert sorted(store.list()) == ["a/00000001.json", "b/00000001.json"]
    assert store.list("a/") == ["a/00000001.json"]
    store.delete("a/00000001.json")
    assert store.read("a/00000001.json") is None and store.list("a/") == []
    with pytest.raises(ValueError):
        store.read("../escape")


def test_racing_writers_of_one_name_on_oss_have_one_winner(bucket: str) -> None:
    store = BeamVaultStore(f"oss://{bucket}/_race/")
    wins: list[bool] = []
    lock = threading.Lock()

    def write(i: int) -> None:
        won = store.create("k/00000002.json", f"writer {i}".encode())
        with lock:
            wins.append(won)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(wins) == [False] * 7 + [True]  # x-oss-forbid-overwrite: atomic on the server
    assert store.read("k/00000002.json") in {f"writer {i}".encode() for i in range(8)}


def test_a_key_vault_on_oss(bucket: str) -> None:
    vault = KeyVault(f"oss://{bucket}/_keys")
    assert isinstance(open_store(vault.uri), BeamVaultStore)
    entry = vault.record(bytes(range(16)), b"\x01wrapped", "local:alias/a", "v1", {"d": "x"})
    assert vault.is_vault() and vault.key_ids() == {bytes(range(16)): [1]}
    assert vault.newest(bytes(range(16))) == entry
    assert vault.put(VaultEntry(bytes(range(16)), 1, b"\x01wrapped", "local:alias/a", "v1", {"d": "x"},
                                entry.created)) is False  # a retried write of the same entry
