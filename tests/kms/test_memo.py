"""The engine's per-process memo of usable keys never serves stale key state.

GenerateDataKey, Encrypt and Decrypt skip the keystore's read transaction while the file is
unchanged (``KeyStore.memo``: ``PRAGMA data_version`` and this connection's own writes) and
nothing scheduled is due. A key disabled, rotated, scheduled for deletion or re-aliased by
another process or another connection is seen on the very next call; so is a scheduled event
whose date has come. Real keystores, real child processes.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kmsbeam.errors import KeyDisabledError, KeyNotFoundError
from kmsbeam.kms import KeyStore, KmsEngine

DAY = 86400

CHANGE = (
    "import sys\n"
    "from kmsbeam.kms import KeyStore, KmsEngine\n"
    "engine = KmsEngine(KeyStore(sys.argv[1], create=False))\n"
    "print(eval(sys.argv[2], {'engine': engine}))\n"
)


def in_another_process(directory: Path, expression: str) -> str:
    """Evaluate ``expression`` on an engine of another process over the same keystore."""
    done = subprocess.run(
        [sys.executable, "-c", CHANGE, str(directory), expression],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout.strip()


@pytest.fixture()
def warm(tmp_path: Path) -> tuple[KmsEngine, str, str]:
    """An engine that has served its key twice (so the memo holds it), the key, a blob."""
    engine = KmsEngine(KeyStore(tmp_path / "ks"))
    key = engine.create_key().key_id
    engine.create_alias("alias/memo", key)
    engine.generate_data_key("alias/memo")
    blob = engine.generate_data_key(key).ciphertext_blob
    engine.decrypt(blob)
    return engine, key, blob


def test_a_key_disabled_by_another_process_is_refused_on_the_next_call(
    warm: tuple[KmsEngine, str, str],
) -> None:
    engine, key, blob = warm
    in_another_process(engine.store.directory, f"engine.disable_key({key!r}).key_state")
    for call in (lambda: engine.generate_data_key(key), lambda: engine.decrypt(blob),
                 lambda: engine.encrypt("alias/memo", b"x")):  # fmt: skip
        with pytest.raises(KeyDisabledError) as caught:
            call()
        assert caught.value.code == "Rejected.Disabled"
    in_another_process(engine.store.directory, f"engine.enable_key({key!r}).key_state")
    assert engine.decrypt(blob).key_id == key


def test_a_rotation_and_a_deletion_by_another_process_are_seen_on_the_next_call(
    warm: tuple[KmsEngine, str, str],
) -> None:
    engine, key, blob = warm
    before = engine.generate_data_key(key).key_version_id
    rotated = in_another_process(
        engine.store.directory, f"engine.create_key_version({key!r}).key_version_id"
    )
    assert rotated != before
    assert engine.generate_data_key("alias/memo").key_version_id == rotated
    in_another_process(engine.store.directory, f"engine.schedule_key_deletion({key!r}, 7)")
    with pytest.raises(KeyDisabledError) as caught:
        engine.decrypt(blob)
    assert caught.value.code == "Rejected.PendingDeletion"


def test_an_alias_moved_by_another_connection_is_followed_on_the_next_call(
    warm: tuple[KmsEngine, str, str],
) -> None:
    engine, key, _ = warm
    other = KmsEngine(KeyStore(engine.store.directory, create=False))  # same process
    assert other.store.memo() is not engine.store.memo()
    second = other.create_key().key_id
    other.update_alias("alias/memo", second)
    assert engine.generate_data_key("alias/memo").key_id == second
    other.delete_alias("alias/memo")
    with pytest.raises(KeyNotFoundError):
        engine.generate_data_key("alias/memo")


def test_a_scheduled_rotation_and_deletion_happen_when_their_date_comes(
    engine: KmsEngine, clock: Any
) -> None:
    key = engine.create_key(enable_automatic_rotation=True, rotation_interval="604800s").key_id
    first = engine.generate_data_key(key).key_version_id
    assert engine.generate_data_key(key).key_version_id == first  # served from the memo
    clock.advance(7 * DAY)
    assert engine.generate_data_key(key).key_version_id != first
    blob = engine.generate_data_key(key).ciphertext_blob
    engine.schedule_key_deletion(key, 7)
    engine.cancel_key_deletion(key)
    engine.decrypt(blob)
    engine.schedule_key_deletion(key, 7)
    clock.advance(7 * DAY)
    with pytest.raises(KeyNotFoundError):
        engine.decrypt(blob)


def test_the_memo_lasts_exactly_while_the_file_is_unchanged(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "ks")
    engine = KmsEngine(store)
    key = engine.create_key().key_id
    memo: Any = store.memo()
    memo["mark"] = 1
    assert store.memo() is memo  # nothing changed: a call costs one PRAGMA
    engine.generate_data_key(key)
    assert store.memo() is memo  # reads change nothing
    engine.describe_key(key)
    engine.disable_key(key)  # this connection's write
    assert "mark" not in store.memo()
    store.memo()["mark"] = 2
    in_another_process(store.directory, f"engine.enable_key({key!r}).key_state")
    assert "mark" not in store.memo()
    store.memo()["mark"] = 3
    KmsEngine(KeyStore(store.directory, create=False)).create_key()  # another connection
    assert "mark" not in store.memo()
