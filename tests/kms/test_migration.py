"""Keystore schema migration: a version-1 file (as kmsbeam 0.1.0 wrote it) opens, is
migrated in place, keeps its keys, blobs, aliases and tags, and gains the new features."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam.errors import FormatError, KeySourceError
from kmsbeam.kms import KEYSTORE_FILENAME, KeyStore, KmsEngine

DAY = 86400
T0 = 1795435200.0
APPLICATION_ID = 0x6B6D7362

# Frozen copy of the version-1 schema (kmsbeam 0.1.0, kmsbeam/kms/_store.py): never edit.
V1_SCHEMA = (
    """CREATE TABLE keys (
        key_id TEXT PRIMARY KEY, description TEXT NOT NULL, key_state TEXT NOT NULL,
        key_spec TEXT NOT NULL, key_usage TEXT NOT NULL, protection_level TEXT NOT NULL,
        origin TEXT NOT NULL, creation_date TEXT NOT NULL, primary_key_version TEXT NOT NULL,
        delete_date TEXT NOT NULL, automatic_rotation TEXT NOT NULL,
        rotation_interval TEXT NOT NULL, next_rotation_date TEXT NOT NULL,
        last_rotation_date TEXT NOT NULL) STRICT""",
    """CREATE TABLE key_versions (
        key_version_id TEXT PRIMARY KEY, key_id TEXT NOT NULL REFERENCES keys(key_id),
        material BLOB NOT NULL, creation_date TEXT NOT NULL) STRICT""",
    "CREATE INDEX key_versions_by_key ON key_versions(key_id)",
    """CREATE TABLE aliases (
        alias_name TEXT PRIMARY KEY, key_id TEXT NOT NULL REFERENCES keys(key_id)) STRICT""",
    "CREATE INDEX aliases_by_key ON aliases(key_id)",
    """CREATE TABLE tags (
        key_id TEXT NOT NULL REFERENCES keys(key_id), tag_key TEXT NOT NULL,
        tag_value TEXT NOT NULL, PRIMARY KEY (key_id, tag_key)) STRICT""",
    f"PRAGMA application_id = {APPLICATION_ID}",
    "PRAGMA user_version = 1",
)
ROTATING = "11111111-1111-4111-8111-111111111111"
DISABLED = "22222222-2222-4222-8222-222222222222"
V_ROTATING = "33333333-3333-4333-8333-333333333333"
V_DISABLED = "44444444-4444-4444-8444-444444444444"
MATERIAL = bytes(range(32))


def build_v1(directory: Path, *, extra: str = "") -> Path:
    """A version-1 keystore the way version 1 created it: WAL, mode 0600, two keys."""
    directory.mkdir(mode=0o700, parents=True)
    path = directory / KEYSTORE_FILENAME
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    for statement in V1_SCHEMA + ((extra,) if extra else ()):
        conn.execute(statement)
    key = "INSERT INTO keys VALUES (?, ?, ?, 'Aliyun_AES_256', 'ENCRYPT/DECRYPT', 'SOFTWARE'," \
          " 'Aliyun_KMS', '2026-11-23T12:00:00Z', ?, '', 'Enabled', ?, ?, '')"  # fmt: skip
    conn.execute(key, (ROTATING, "old", "Enabled", V_ROTATING, "2592000s", "2026-12-23T12:00:00Z"))
    conn.execute(key, (DISABLED, "", "Disabled", V_DISABLED, "604800s", "2026-11-30T12:00:00Z"))
    version = "INSERT INTO key_versions VALUES (?, ?, ?, '2026-11-23T12:00:00Z')"
    conn.execute(version, (V_ROTATING, ROTATING, MATERIAL))
    conn.execute(version, (V_DISABLED, DISABLED, bytes(32)))
    conn.execute("INSERT INTO aliases VALUES ('alias/old', ?)", (ROTATING,))
    conn.execute("INSERT INTO tags VALUES (?, 'team', 'etl')", (ROTATING,))
    conn.execute("COMMIT")
    conn.close()
    return path


def _v1_blob(plaintext: bytes) -> bytes:
    vid, iv = V_ROTATING.encode(), b"\x07" * 12
    return vid + iv + AESGCM(MATERIAL).encrypt(iv, plaintext, vid + b'{"c":"1"}')


def _schema(path: Path) -> tuple[int, list[tuple[str, str, str]]]:
    conn = sqlite3.connect(path)
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    rows = conn.execute("SELECT type, name, sql FROM sqlite_master ORDER BY name").fetchall()
    conn.close()
    return version, rows


def test_v1_file_is_migrated_in_place(tmp_path: Path) -> None:
    path = build_v1(tmp_path / "old")
    now = [T0 + DAY]
    engine = KmsEngine(KeyStore(tmp_path / "old", create=False), clock=lambda: now[0])
    version, rows = _schema(path)
    fresh = KmsEngine(KeyStore(tmp_path / "fresh")).store.path
    assert version == 2 and (version, rows) == _schema(fresh)  # same schema as a new file
    for name in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        assert not name.exists() or stat.S_IMODE(name.stat().st_mode) == 0o600
    old = engine.describe_key("alias/old")
    assert (old.key_id, old.description, old.automatic_rotation) == (ROTATING, "old", "Enabled")
    assert old.last_rotation_date == old.creation_date and old.material_expire_time == ""
    assert engine.describe_key(DISABLED).automatic_rotation == "Suspended"
    assert engine.decrypt(_v1_blob(b"written by v1"), {"c": "1"}).plaintext == b"written by v1"
    assert engine.list_resource_tags(ROTATING) == {"team": "etl"}
    # the new features work on the migrated file
    engine.tag_resource(ROTATING, {"migrated": "yes"})
    external = engine.create_key(origin="EXTERNAL")
    assert engine.describe_key(external.key_id).key_state == "PendingImport"
    now[0] = T0 + 30 * DAY
    assert engine.rotate_due_keys() == [ROTATING]
    assert engine.enable_key(DISABLED).automatic_rotation == "Enabled"
    assert len(engine.list_key_versions(DISABLED)) == 2  # overdue: rotated on the next call
    engine.store.close()
    again = KmsEngine(KeyStore(tmp_path / "old"), clock=lambda: now[0])  # reopening is a no-op
    assert again.list_resource_tags(ROTATING) == {"migrated": "yes", "team": "etl"}


def test_failed_migration_changes_nothing(tmp_path: Path) -> None:
    path = build_v1(tmp_path / "odd", extra="CREATE TABLE import_tokens (x)")
    before = _schema(path)
    with pytest.raises(KeySourceError):
        KeyStore(tmp_path / "odd")
    assert _schema(path) == before  # still version 1, keys table untouched


def _open_in_child(directory: str, barrier: Any, queue: Any) -> None:
    barrier.wait()
    engine = KmsEngine(KeyStore(Path(directory), create=False), clock=lambda: T0)
    queue.put(engine.describe_key("alias/old").key_id)


def test_processes_opening_an_old_file_at_once_migrate_it_once(tmp_path: Path) -> None:
    path = build_v1(tmp_path / "old")
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_open_in_child, args=(str(tmp_path / "old"), barrier, queue))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    assert {queue.get(timeout=5) for _ in procs} == {ROTATING}
    assert _schema(path)[0] == 2


def test_unknown_old_schema_is_refused(tmp_path: Path) -> None:
    path = build_v1(tmp_path / "zero")
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA user_version = 0")
    conn.close()
    with pytest.raises(FormatError, match="unknown schema"):
        KeyStore(tmp_path / "zero")
