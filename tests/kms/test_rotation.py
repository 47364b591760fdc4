"""Automatic rotation that happens when due (lazily and via rotate_due_keys), and
UpdateRotationPolicy, with an injected clock instead of sleeping."""

from __future__ import annotations

import multiprocessing
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from kmsbeam.errors import ConfigurationError
from kmsbeam.kms import KeyStore, KmsEngine

DAY = 86400
CTX = {"c": "1"}


def test_rotates_when_due_and_not_before(engine: KmsEngine, clock: Any) -> None:
    key = engine.create_key(rotation_interval="7d")
    old = engine.encrypt(key.key_id, b"old", CTX)
    clock.advance(7 * DAY - 1)
    assert engine.describe_key(key.key_id).primary_key_version == key.primary_key_version
    assert engine.rotate_due_keys() == []
    clock.advance(1)
    new = engine.generate_data_key(key.key_id)  # the first call after the date rotates
    meta = engine.describe_key(key.key_id)
    assert new.key_version_id == meta.primary_key_version != key.primary_key_version
    assert meta.last_rotation_date == "2026-11-30T12:00:00Z"
    assert meta.next_rotation_date == "2026-12-07T12:00:00Z"
    assert [v.key_version_id for v in engine.list_key_versions(key.key_id)] == [
        key.primary_key_version,
        meta.primary_key_version,
    ]
    assert engine.decrypt(old.ciphertext_blob, CTX).plaintext == b"old"


def test_rotate_due_keys_rotates_only_due_keys_once(engine: KmsEngine, clock: Any) -> None:
    weekly = engine.create_key(rotation_interval="7d").key_id
    monthly = engine.create_key(rotation_interval="30d").key_id
    manual = engine.create_key().key_id
    clock.advance(100 * DAY)  # many weekly intervals late: still one new version
    assert sorted(engine.rotate_due_keys()) == sorted([weekly, monthly])
    assert engine.rotate_due_keys() == []
    assert [len(engine.list_key_versions(k)) for k in (weekly, monthly, manual)] == [2, 2, 1]
    assert engine.describe_key(weekly).next_rotation_date == "2027-03-10T12:00:00Z"  # now + 7d


def test_disabled_key_suspends_rotation(engine: KmsEngine, clock: Any) -> None:
    key = engine.create_key(rotation_interval="7d").key_id
    assert engine.disable_key(key).automatic_rotation == "Suspended"
    clock.advance(8 * DAY)
    assert engine.rotate_due_keys() == [] and len(engine.list_key_versions(key)) == 1
    assert engine.schedule_key_deletion(key, 30).automatic_rotation == "Suspended"
    assert engine.cancel_key_deletion(key).automatic_rotation == "Enabled"
    # enabled again with its date passed: the next operation rotates it
    meta = engine.describe_key(key)
    assert meta.automatic_rotation == "Enabled" and len(engine.list_key_versions(key)) == 2
    engine.disable_key(key)
    assert engine.enable_key(key).automatic_rotation == "Enabled"


def test_update_rotation_policy(engine: KmsEngine, clock: Any) -> None:
    key = engine.create_key().key_id
    meta = engine.update_rotation_policy(key, True, "30d")
    assert (meta.automatic_rotation, meta.rotation_interval, meta.next_rotation_date) == (
        "Enabled",
        "2592000s",
        "2026-12-23T12:00:00Z",
    )
    off = engine.update_rotation_policy(key, False)
    assert (off.automatic_rotation, off.rotation_interval) == ("Disabled", "")
    assert off.next_rotation_date == ""
    clock.advance(10 * DAY)
    assert engine.rotate_due_keys() == []
    # last rotation (creation) + 7d has passed: the policy change rotates right away
    meta = engine.update_rotation_policy(key, True, "7d")
    assert meta.last_rotation_date == "2026-12-03T12:00:00Z"
    assert meta.next_rotation_date == "2026-12-10T12:00:00Z"
    assert meta.primary_key_version == engine.list_key_versions(key)[-1].key_version_id
    assert engine.describe_key(key) == meta
    engine.disable_key(key)
    assert engine.update_rotation_policy(key, True, "8d").automatic_rotation == "Suspended"
    for args in ((True,), (True, "6d"), (True, "366d"), (True, "1y")):
        with pytest.raises(ConfigurationError) as err:
            engine.update_rotation_policy(key, *args)  # type: ignore[arg-type]
        assert err.value.code == "InvalidParameter"
    with pytest.raises(TypeError):
        engine.update_rotation_policy(key, "30d")  # type: ignore[arg-type]


def test_manual_version_moves_the_next_rotation(engine: KmsEngine, clock: Any) -> None:
    key = engine.create_key(rotation_interval="7d").key_id
    clock.advance(5 * DAY)
    version = engine.create_key_version(key)
    meta = engine.describe_key(key)
    assert meta.primary_key_version == version.key_version_id
    assert (meta.last_rotation_date, meta.next_rotation_date) == (
        "2026-11-28T12:00:00Z",
        "2026-12-05T12:00:00Z",
    )
    clock.advance(2 * DAY)
    assert engine.rotate_due_keys() == []


def test_nothing_due_means_no_write(engine: KmsEngine) -> None:
    """The lazy check only reads: it works while another process holds the write lock."""
    key = engine.create_key(rotation_interval="7d").key_id
    blob = engine.encrypt(key, b"x").ciphertext_blob
    other = sqlite3.connect(engine.store.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert engine.describe_key(key).key_id == key
        assert engine.decrypt(blob).plaintext == b"x"
        assert engine.generate_data_key(key).key_id == key
    finally:
        other.execute("ROLLBACK")
        other.close()


def _rotate_in_child(directory: str, now: float, barrier: Any, queue: Any) -> None:
    engine = KmsEngine(KeyStore(Path(directory), create=False), clock=lambda: now)
    barrier.wait()
    queue.put(engine.generate_data_key("alias/r").key_version_id)


def test_racing_processes_rotate_once(tmp_path: Path, clock: Any) -> None:
    engine = KmsEngine(KeyStore(tmp_path), clock=clock)
    key = engine.create_key(rotation_interval="7d").key_id
    engine.create_alias("alias/r", key)
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    args = (str(tmp_path), clock.now + 8 * DAY, barrier, queue)
    procs = [ctx.Process(target=_rotate_in_child, args=args) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    used = {queue.get(timeout=5) for _ in procs}
    versions = engine.list_key_versions(key)
    assert len(versions) == 2 and used == {versions[1].key_version_id}
