"""The KMS engine and its SQLite store, on real keystore files."""

from __future__ import annotations

import base64
import multiprocessing
import os
import pickle
import random
import re
import sqlite3
import stat
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from kmsbeam.errors import (
    AuthenticationError,
    ConfigurationError,
    FormatError,
    KeyDisabledError,
    KeyNotFoundError,
)
from kmsbeam.kms import KEYSTORE_FILENAME, KeyStore, KmsEngine

CTX = {"table": "users", "column": "ssn"}
T0 = 1795435200.0  # 2026-11-23T12:00:00Z


def _engine(directory: Path, **kwargs: object) -> KmsEngine:
    return KmsEngine(KeyStore(directory), **kwargs)  # type: ignore[arg-type]


@pytest.fixture()
def engine(tmp_path: Path) -> KmsEngine:
    return _engine(tmp_path / "ks", clock=lambda: T0)


def _is_uuid4(text: str) -> bool:
    return len(text) == 36 and uuid.UUID(text).version == 4 and str(uuid.UUID(text)) == text


def test_create_describe_list_keys(engine: KmsEngine) -> None:
    a = engine.create_key("first")
    b = engine.create_key(rotation_interval="7d")
    assert _is_uuid4(a.key_id) and _is_uuid4(a.primary_key_version)
    assert a.arn == f"acs:kms:local:{'0' * 16}:key/{a.key_id}"
    assert (a.key_state, a.key_spec, a.key_usage) == (
        "Enabled",
        "Aliyun_AES_256",
        "ENCRYPT/DECRYPT",
    )
    assert (a.protection_level, a.origin, a.description) == ("SOFTWARE", "Aliyun_KMS", "first")
    assert a.creation_date == "2026-11-23T12:00:00Z"
    assert a.automatic_rotation == "Disabled" and a.delete_date == ""
    assert (b.automatic_rotation, b.rotation_interval) == ("Enabled", "604800s")
    assert b.next_rotation_date == "2026-11-30T12:00:00Z"
    assert engine.describe_key(a.key_id) == a
    assert {k.key_id for k in engine.list_keys()} == {a.key_id, b.key_id}
    with pytest.raises(ConfigurationError) as bad:
        engine.create_key(rotation_interval="1d")
    assert bad.value.code == "InvalidParameter"


def test_injected_clock_and_randomness(tmp_path: Path) -> None:
    now = [T0]
    eng = _engine(tmp_path, clock=lambda: now[0], random_bytes=random.Random(7).randbytes)
    key = eng.create_key()
    now[0] += 86400
    version = eng.create_key_version(key.key_id)
    assert (key.creation_date, version.creation_date) == (
        "2026-11-23T12:00:00Z",
        "2026-11-24T12:00:00Z",
    )
    assert eng.schedule_key_deletion(key.key_id, 7).delete_date == "2026-12-01T12:00:00Z"
    same = _engine(tmp_path / "other", clock=lambda: T0, random_bytes=random.Random(7).randbytes)
    assert same.create_key().key_id == key.key_id  # every random byte comes from the injection


def test_aliases(engine: KmsEngine) -> None:
    a, b = engine.create_key(), engine.create_key()
    engine.create_alias("alias/pii", a.key_id)
    engine.create_alias("alias/other", a.arn)
    with pytest.raises(ConfigurationError) as dup:
        engine.create_alias("alias/pii", b.key_id)
    assert dup.value.code == "AliasAlreadyExists"
    alias_arn = f"acs:kms:local:{'0' * 16}:alias/pii"
    for name in (a.key_id, a.arn, "alias/pii", alias_arn):
        assert engine.describe_key(name).key_id == a.key_id
    assert [x.alias_name for x in engine.list_aliases_by_key_id("alias/pii")] == [
        "alias/other",
        "alias/pii",
    ]
    engine.update_alias("alias/pii", b.key_id)
    assert engine.describe_key("alias/pii").key_id == b.key_id
    assert engine.list_aliases()[1].alias_arn == alias_arn
    engine.delete_alias("alias/pii")
    assert [(x.alias_name, x.key_id) for x in engine.list_aliases()] == [("alias/other", a.key_id)]
    cases: list[tuple[Callable[[], object], str]] = [
        (lambda: engine.describe_key("alias/pii"), "Forbidden.AliasNotFound"),
        (lambda: engine.delete_alias("alias/pii"), "Forbidden.AliasNotFound"),
        (lambda: engine.update_alias("alias/nope", a.key_id), "Forbidden.AliasNotFound"),
        (lambda: engine.describe_key(str(uuid.uuid4())), "Forbidden.KeyNotFound"),
        (
            lambda: engine.describe_key(f"acs:kms:cn-hangzhou:1:key/{a.key_id}"),
            "Forbidden.KeyNotFound",
        ),
        (lambda: engine.create_alias("alias/x", str(uuid.uuid4())), "Forbidden.KeyNotFound"),
    ]
    for call, code in cases:
        with pytest.raises(KeyNotFoundError) as missing:
            call()
        assert missing.value.code == code and not isinstance(missing.value, KeyDisabledError)
    for bad_name in ("pii", "alias/", "alias/a b", "alias/acs/x"):
        with pytest.raises(ConfigurationError) as bad:
            engine.create_alias(bad_name, a.key_id)
        assert bad.value.code == "InvalidParameter"


def _raises_disabled(code: str, call: Callable[[], object]) -> None:
    with pytest.raises(KeyDisabledError) as err:
        call()
    assert err.value.code == code


def test_key_state_machine(engine: KmsEngine) -> None:
    key = engine.create_key().key_id
    blob = engine.generate_data_key(key, context=CTX).ciphertext_blob
    assert engine.disable_key(key).key_state == "Disabled"
    _raises_disabled("Rejected.Disabled", lambda: engine.generate_data_key(key))
    _raises_disabled("Rejected.Disabled", lambda: engine.encrypt(key, b"x"))
    _raises_disabled("Rejected.Disabled", lambda: engine.decrypt(blob, CTX))
    _raises_disabled("Rejected.Disabled", lambda: engine.create_key_version(key))
    assert engine.enable_key(key).key_state == "Enabled"
    assert engine.decrypt(blob, CTX).key_id == key
    meta = engine.schedule_key_deletion(key, 30)
    assert (meta.key_state, meta.delete_date) == ("PendingDeletion", "2026-12-23T12:00:00Z")
    assert engine.describe_key(key) == meta
    _raises_disabled("Rejected.PendingDeletion", lambda: engine.decrypt(blob, CTX))
    _raises_disabled("Rejected.PendingDeletion", lambda: engine.enable_key(key))
    _raises_disabled("Rejected.PendingDeletion", lambda: engine.schedule_key_deletion(key, 7))
    back = engine.cancel_key_deletion(key)  # Alibaba: the key returns to Enabled
    assert (back.key_state, back.delete_date) == ("Enabled", "")
    assert engine.decrypt(blob, CTX).key_id == key
    with pytest.raises(ConfigurationError):
        engine.cancel_key_deletion(key)
    for days in (6, 367):
        with pytest.raises(ConfigurationError):
            engine.schedule_key_deletion(key, days)


def test_data_key_round_trip_and_blob_layout(engine: KmsEngine) -> None:
    key = engine.create_key()
    result = engine.generate_data_key("alias/x" if False else key.key_id, context=CTX)
    assert len(result.plaintext) == 32 and result.key_version_id == key.primary_key_version
    text = base64.b64encode(result.plaintext)
    blob = result.ciphertext_blob
    assert len(blob) == 36 + 12 + len(text) + 16 == 108
    assert len(base64.b64encode(blob)) == 144
    assert blob[:36] == key.primary_key_version.encode("ascii")
    assert engine.decrypt(blob, CTX) == (key.key_id, key.primary_key_version, text)
    assert len(engine.generate_data_key(key.key_id, 16).plaintext) == 16
    with pytest.raises(ConfigurationError):
        engine.generate_data_key(key.key_id, 0)
    bare = engine.generate_data_key_without_plaintext(key.key_id, context=CTX)
    assert len(base64.b64decode(engine.decrypt(bare.ciphertext_blob, CTX).plaintext)) == 32
    enc = engine.encrypt(key.key_id, b"\x00hello", {})
    assert engine.decrypt(enc.ciphertext_blob).plaintext == b"\x00hello"
    with pytest.raises(ConfigurationError):
        engine.encrypt(key.key_id, b"x" * 6145)


def test_results_hide_plaintext(engine: KmsEngine) -> None:
    key = engine.create_key().key_id
    dk = engine.generate_data_key(key)
    dec = engine.decrypt(dk.ciphertext_blob)
    for result in (dk, dec):
        assert "plaintext" not in repr(result) and str(dk.plaintext) not in repr(result)
        with pytest.raises(TypeError):
            pickle.dumps(result)


def test_context_is_bound(engine: KmsEngine) -> None:
    key = engine.create_key().key_id
    blob = engine.encrypt(key, b"secret", CTX).ciphertext_blob
    assert engine.decrypt(blob, {"column": "ssn", "table": "users"}).plaintext == b"secret"
    for ctx in (None, {}, {"table": "users"}, {**CTX, "extra": "1"}, {**CTX, "column": "dob"}):
        with pytest.raises(AuthenticationError) as err:
            engine.decrypt(blob, ctx)
        assert err.value.code == "InvalidCiphertext"
    with pytest.raises(ConfigurationError) as bad:
        engine.decrypt(blob, {"": "x"})
    assert bad.value.code == "InvalidParameter"


def test_every_tamper_and_truncation_fails_alike(engine: KmsEngine, tmp_path: Path) -> None:
    key = engine.create_key().key_id
    blob = engine.generate_data_key(key, context=CTX).ciphertext_blob
    candidates = [blob[:n] for n in range(len(blob))]
    candidates += [blob[:i] + bytes([blob[i] ^ 0xFF]) + blob[i + 1 :] for i in range(len(blob))]
    candidates += [blob[:i] + bytes([blob[i] ^ 0x01]) + blob[i + 1 :] for i in range(len(blob))]
    candidates += [blob + b"\x00", engine.store.path.read_bytes()[:108]]
    messages = set()
    for bad in candidates:
        with pytest.raises(AuthenticationError) as err:
            engine.decrypt(bad, CTX)
        assert err.value.code == "InvalidCiphertext"
        messages.add(str(err.value))
    assert len(messages) == 1 and key not in messages.pop()
    stranger = _engine(tmp_path / "stranger").generate_data_key(
        _engine(tmp_path / "stranger").create_key().key_id, context=CTX
    )
    with pytest.raises(AuthenticationError):
        engine.decrypt(stranger.ciphertext_blob, CTX)  # a version id this keystore lacks


def test_key_versions(engine: KmsEngine) -> None:
    key = engine.create_key()
    old = engine.encrypt(key.key_id, b"yesterday", CTX)
    v2 = engine.create_key_version(key.key_id)
    assert _is_uuid4(v2.key_version_id) and "material" not in repr(v2)
    assert engine.describe_key(key.key_id).primary_key_version == v2.key_version_id
    assert [v.key_version_id for v in engine.list_key_versions(key.key_id)] == [
        key.primary_key_version,
        v2.key_version_id,
    ]
    new = engine.encrypt(key.key_id, b"today", CTX)
    assert new.key_version_id == v2.key_version_id
    assert new.ciphertext_blob[:36] == v2.key_version_id.encode()
    assert engine.decrypt(old.ciphertext_blob, CTX) == (
        key.key_id,
        key.primary_key_version,
        b"yesterday",
    )
    assert engine.decrypt(new.ciphertext_blob, CTX) == (key.key_id, v2.key_version_id, b"today")


def test_re_encrypt_to_another_key(engine: KmsEngine) -> None:
    a, b = engine.create_key(), engine.create_key()
    engine.create_alias("alias/new", b.key_id)
    blob = engine.generate_data_key(a.key_id, context=CTX).ciphertext_blob
    text = engine.decrypt(blob, CTX).plaintext
    moved = engine.re_encrypt(blob, "alias/new", CTX, {"v": "2"})
    assert (moved.key_id, moved.key_version_id) == (b.key_id, b.primary_key_version)
    assert engine.decrypt(moved.ciphertext_blob, {"v": "2"}) == (
        b.key_id,
        b.primary_key_version,
        text,
    )
    with pytest.raises(AuthenticationError):
        engine.re_encrypt(blob, b.key_id, {"wrong": "ctx"}, {})
    engine.disable_key(b.key_id)
    _raises_disabled("Rejected.Disabled", lambda: engine.re_encrypt(blob, b.key_id, CTX, {}))


def test_persists_across_instances(tmp_path: Path) -> None:
    first = _engine(tmp_path)
    key = first.create_key("kept")
    first.create_alias("alias/kept", key.key_id)
    blob = first.generate_data_key("alias/kept", context=CTX).ciphertext_blob
    first.store.close()
    second = _engine(tmp_path)
    assert second.describe_key("alias/kept").description == "kept"
    assert len(base64.b64decode(second.decrypt(blob, CTX).plaintext)) == 32


def test_file_modes_and_sqlite_settings(tmp_path: Path) -> None:
    home = tmp_path / "a" / "home"
    _engine(home).create_key()
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert stat.S_IMODE((home / KEYSTORE_FILENAME).stat().st_mode) == 0o600
    with sqlite3.connect(home / KEYSTORE_FILENAME) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    conn.close()
    assert tables == {
        "keys", "key_versions", "aliases", "tags",
        "import_tokens", "imported_material", "deleted_versions",
    }  # fmt: skip


def test_missing_store_without_create_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        KeyStore(tmp_path / "nothing", create=False)
    assert not (tmp_path / "nothing").exists()


def test_not_a_keystore(tmp_path: Path) -> None:
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / KEYSTORE_FILENAME).write_bytes(b"hello, this is not sqlite" * 100)
    other = tmp_path / "other"
    other.mkdir()
    conn = sqlite3.connect(other / KEYSTORE_FILENAME)
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()
    newer = tmp_path / "newer"
    _engine(newer).store.close()
    conn = sqlite3.connect(newer / KEYSTORE_FILENAME)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    for directory, pattern in [
        ("text", "not a kmsbeam keystore"),
        ("other", "not a kmsbeam"),
        ("newer", "newer"),
    ]:
        with pytest.raises(FormatError, match=pattern):
            KeyStore(tmp_path / directory)


def _ensure_in_process(directory: str, barrier: object, queue: object) -> None:
    barrier.wait()  # type: ignore[attr-defined]
    meta, created = KmsEngine(KeyStore(Path(directory))).get_or_create_alias("alias/race")
    queue.put((meta.key_id, created))  # type: ignore[attr-defined]


def test_concurrent_ensure_alias_creates_one_key(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(4), ctx.Queue()
    procs = [
        ctx.Process(target=_ensure_in_process, args=(str(tmp_path / "ks"), barrier, queue))
        for _ in range(4)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    results = [queue.get(timeout=5) for _ in procs]
    assert len({key_id for key_id, _ in results}) == 1
    assert sorted(created for _, created in results) == [False, False, False, True]
    keys = _engine(tmp_path / "ks").list_keys()
    assert [k.key_id for k in keys] == [results[0][0]]


def test_forked_child_uses_its_own_connection(engine: KmsEngine) -> None:
    key = engine.create_key().key_id
    blob = engine.encrypt(key, b"fork", CTX).ciphertext_blob
    pid = os.fork()
    if pid == 0:  # child: only os._exit, never return into pytest
        ok = engine.decrypt(blob, CTX).plaintext == b"fork" and engine.create_key().key_id != key
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert len(engine.list_keys()) == 2  # the parent's connection still works and sees it


def test_messages_never_show_material(engine: KmsEngine) -> None:
    key = engine.create_key().key_id
    engine.disable_key(key)
    with pytest.raises(KeyDisabledError) as err:
        engine.generate_data_key(key)
    assert re.fullmatch(rf"key {key} is Disabled", str(err.value))
