"""ScheduleKeyDeletion / CancelKeyDeletion and the deletion that happens when the date
passes: the key and everything naming it are gone, and calls get Forbidden.KeyNotFound."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kmsbeam.errors import ConfigurationError, KeyDisabledError, KeyNotFoundError
from kmsbeam.kms import KeyStore, KmsEngine

DAY = 86400
CTX = {"k": "v"}


def _code(call: Callable[[], object], error: type[Exception]) -> str | None:
    with pytest.raises(error) as err:
        call()
    assert error is not KeyNotFoundError or not isinstance(err.value, KeyDisabledError)
    return getattr(err.value, "code", None)


def _rows(path: Path, table: str, key_id: str) -> int:
    with sqlite3.connect(path) as conn:
        count = conn.execute(f"SELECT COUNT(*) FROM {table} WHERE key_id = ?", (key_id,))
        result = int(count.fetchone()[0])
    conn.close()
    return result


def test_key_is_deleted_when_the_window_ends(engine: KmsEngine, clock: Any) -> None:
    doomed, kept = engine.create_key().key_id, engine.create_key().key_id
    engine.create_alias("alias/doomed", doomed)
    engine.tag_resource(doomed, {"t": "1"})
    engine.create_key_version(doomed)
    blob = engine.encrypt(doomed, b"x", CTX).ciphertext_blob
    kept_blob = engine.encrypt(kept, b"y", CTX).ciphertext_blob
    meta = engine.schedule_key_deletion(doomed, 7)
    assert meta.delete_date == "2026-11-30T12:00:00Z"
    clock.advance(7 * DAY - 1)
    assert _code(lambda: engine.decrypt(blob, CTX), KeyDisabledError) == "Rejected.PendingDeletion"
    assert engine.describe_key("alias/doomed").key_state == "PendingDeletion"
    clock.advance(1)
    for call in (
        lambda: engine.describe_key(doomed),
        lambda: engine.decrypt(blob, CTX),
        lambda: engine.cancel_key_deletion(doomed),
        lambda: engine.list_resource_tags(doomed),
        lambda: engine.encrypt(doomed, b"x"),
    ):
        assert _code(call, KeyNotFoundError) == "Forbidden.KeyNotFound"
    assert _code(lambda: engine.describe_key("alias/doomed"), KeyNotFoundError) == (
        "Forbidden.AliasNotFound"
    )
    assert [k.key_id for k in engine.list_keys()] == [kept]
    assert engine.list_aliases() == []
    for table in ("key_versions", "tags", "aliases", "keys"):
        assert _rows(engine.store.path, table, doomed) == 0
    assert _rows(engine.store.path, "deleted_versions", doomed) == 2
    assert engine.decrypt(kept_blob, CTX).plaintext == b"y"


def test_deletion_seen_by_another_engine_and_via_rotate_due_keys(
    tmp_path: Path, clock: Any
) -> None:
    first = KmsEngine(KeyStore(tmp_path), clock=clock)
    second = KmsEngine(KeyStore(tmp_path), clock=clock)
    key = first.create_key().key_id
    first.schedule_key_deletion(key, 30)
    clock.advance(30 * DAY)
    assert second.rotate_due_keys() == []  # it deleted the key, rotated nothing
    assert _code(lambda: first.describe_key(key), KeyNotFoundError) == "Forbidden.KeyNotFound"


def test_window_and_state_rules(engine: KmsEngine) -> None:
    key = engine.create_key().key_id
    for days in (6, 31, 366, 0, -7):
        assert _code(lambda: engine.schedule_key_deletion(key, days), ConfigurationError) == (
            "InvalidParameter"
        )
    for wrong in (True, 7.0, "7"):
        with pytest.raises(TypeError):
            engine.schedule_key_deletion(key, wrong)  # type: ignore[arg-type]
    assert _code(lambda: engine.cancel_key_deletion(key), ConfigurationError) == "InvalidParameter"
    engine.disable_key(key)
    assert engine.schedule_key_deletion(key, 7).key_state == "PendingDeletion"
    for call in (
        lambda: engine.enable_key(key),
        lambda: engine.disable_key(key),
        lambda: engine.schedule_key_deletion(key, 8),
        lambda: engine.create_key_version(key),
        lambda: engine.generate_data_key(key),
    ):
        assert _code(call, KeyDisabledError) == "Rejected.PendingDeletion"
    assert engine.cancel_key_deletion(key).key_state == "Enabled"  # even if it was Disabled
    # metadata operations still work on keys that cannot encrypt
    engine.disable_key(key)
    engine.tag_resource(key, {"a": "b"})
    assert engine.update_key_description(key, "still here").description == "still here"


def test_re_encrypt_from_a_key_pending_deletion_is_rejected(engine: KmsEngine) -> None:
    source, destination = engine.create_key().key_id, engine.create_key().key_id
    blob = engine.encrypt(source, b"x", CTX).ciphertext_blob
    engine.schedule_key_deletion(source, 30)
    code = _code(lambda: engine.re_encrypt(blob, destination, CTX, CTX), KeyDisabledError)
    assert code == "Rejected.PendingDeletion"
    engine.cancel_key_deletion(source)
    engine.schedule_key_deletion(destination, 30)
    code = _code(lambda: engine.re_encrypt(blob, destination, CTX, CTX), KeyDisabledError)
    assert code == "Rejected.PendingDeletion"
