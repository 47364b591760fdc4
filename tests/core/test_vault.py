"""The key vault (``kmsbeam.vault``): LocalStore's create-once files, KeyVault's entries and
generations, ``resolve`` through a real embedded key source, and the engines writing and reading
field values v2 and records v2 end to end. Real keystores and vaults under tmp_path."""

from __future__ import annotations

import multiprocessing
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kmsbeam.errors import AuthenticationError, FormatError, MalformedValueError, RecordError
from kmsbeam.formats import FieldFormat, RecordFormat
from kmsbeam.formats._keys import Unwrapping
from kmsbeam.formats.envelope import (
    FIELD_V1, FIELD_V2, RECORD_V1, RECORD_V2, from_text, key_commitment, parse, to_text,
)  # fmt: skip
from kmsbeam.keys.cache import DataKeyCache
from kmsbeam.keys.policy import DataKeyPolicy
from kmsbeam.keys.registry import open_key_source
from kmsbeam.keys.source import KeySource
from kmsbeam.vault import (
    MARKER, KeyVault, LocalStore, VaultEntry, VaultEntryError, VaultEntryMissingError, entry_name,
)  # fmt: skip

CREATED = "2026-12-03T12:00:00Z"
MARKER_BYTES = b'{"format":"kmsbeam.vault.v1"}\n'


@pytest.fixture(autouse=True)
def _forget() -> Iterator[None]:
    """``KeyVault`` remembers resolved key ids per process: each test starts without."""
    KeyVault.forget()
    yield
    KeyVault.forget()


@pytest.fixture()
def src(kms_home: Path) -> KeySource:
    return open_key_source("local:alias/x", create=True)


def entry(key_id: bytes, generation: int = 1, wrapped: bytes = b"\x01wrapped") -> VaultEntry:
    return VaultEntry(key_id, generation, wrapped, "local:alias/x", "v", {"dataset": "d"}, CREATED)


def files_under(path: Path) -> list[str]:
    return sorted(p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file())


# -- LocalStore ------------------------------------------------------------------------------------


def test_local_store_creates_once_and_keeps_the_first_bytes(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "v"))
    assert store.read("ab/00000001.json") is None
    assert store.create("ab/00000001.json", b"first") is True
    assert store.create("ab/00000001.json", b"second") is False
    assert store.read("ab/00000001.json") == b"first"
    assert (tmp_path / "v" / "ab" / "00000001.json").read_bytes() == b"first"
    assert LocalStore("file://" + str(tmp_path / "v")).read("ab/00000001.json") == b"first"


@pytest.mark.parametrize("name", ["", "..", "../x", "a/../b", "/abs", "a//b", ".", "a/./b", "a/"])
def test_local_store_refuses_names_outside_its_prefix(tmp_path: Path, name: str) -> None:
    store = LocalStore(str(tmp_path / "v"))
    with pytest.raises(ValueError):
        store.create(name, b"x")
    with pytest.raises(ValueError):
        store.read(name)
    assert not (tmp_path / "x").exists() and not (tmp_path / "v").exists()


def test_local_store_leaves_no_temporaries_and_lists_none(tmp_path: Path) -> None:
    store = LocalStore(str(tmp_path / "v"))
    for name in ("a/1.json", "a/2.json", "b/1.json", "top.json"):
        assert store.create(name, name.encode())
    assert not store.create("a/1.json", b"again")  # a losing create removes its temporary too
    assert files_under(tmp_path / "v") == ["a/1.json", "a/2.json", "b/1.json", "top.json"]
    (tmp_path / "v" / "a" / ".tmp-crashed").write_bytes(b"torn")  # a crashed writer's
    assert sorted(store.list()) == ["a/1.json", "a/2.json", "b/1.json", "top.json"]
    assert sorted(store.list("a/")) == ["a/1.json", "a/2.json"]
    assert store.list("c/") == [] and LocalStore(str(tmp_path / "none")).list() == []


def _race(path: str, name: str, data: bytes, barrier: Any, results: Any) -> None:
    barrier.wait()
    results.put((data, LocalStore(path).create(name, data)))


def test_processes_racing_to_create_one_name_have_exactly_one_winner(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    n = 6
    barrier, results = ctx.Barrier(n), ctx.Queue()
    path = str(tmp_path / "v")
    procs = [ctx.Process(target=_race, args=(path, "k/00000001.json", b"writer %d" % i, barrier, results))
             for i in range(n)]  # fmt: skip
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=60) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    winners = [data for data, won in outcomes if won]
    assert len(winners) == 1 and len(outcomes) == n
    assert LocalStore(path).read("k/00000001.json") == winners[0]
    assert files_under(tmp_path / "v") == ["k/00000001.json"]


# -- KeyVault: entries and generations ------------------------------------------------------------


def test_record_writes_generation_1_and_the_marker(tmp_path: Path) -> None:
    vault = KeyVault(str(tmp_path / "v"))
    k = bytes(range(16))
    written = vault.record(k, b"\x01wrapped", "local:alias/x", "ver-1", {"b": "2", "a": "1"})
    assert written.generation == 1 and written.name == entry_name(k, 1) == f"{k.hex()}/00000001.json"
    assert (tmp_path / "v" / MARKER).read_bytes() == MARKER_BYTES and vault.is_vault()
    assert (tmp_path / "v" / k.hex() / "00000001.json").read_bytes() == written.encode()
    assert vault.read(k, 1) == written and vault.newest(k) == written
    assert b'"context":{"a":"1","b":"2"}' in written.encode() and written.master_key_version == "ver-1"
    assert vault.read(k, 2) is None and vault.newest(bytes(16)) is None


def test_put_of_an_identical_entry_is_false_and_of_another_wrapped_key_an_error(tmp_path: Path) -> None:
    vault = KeyVault(str(tmp_path / "v"))
    k = b"\x11" * 16
    first = entry(k)
    assert vault.put(first) is True
    assert vault.put(first) is False  # a retried write
    assert vault.put(VaultEntry(k, 1, first.wrapped, "local:alias/x", "v", {}, "2027-01-01T00:00:00Z")) is False
    with pytest.raises(FormatError, match="already holds another"):
        vault.put(entry(k, wrapped=b"\x01another"))
    assert vault.read(k, 1) == first


def test_generations_are_listed_newest_first_and_other_files_skipped(tmp_path: Path) -> None:
    vault = KeyVault(str(tmp_path / "v"))
    k, other = b"\xab" * 16, b"\x33" * 16
    for gen in (1, 3, 2, 10):
        vault.put(entry(k, gen))
    vault.put(entry(other, 1))
    store = LocalStore(str(tmp_path / "v"))
    for junk in (f"{k.hex()}/00000000.json", f"{k.hex()}/7.json", f"{k.hex()}/notes.txt",
                 f"{k.hex().upper()}/00000004.json", "README"):  # fmt: skip
        store.create(junk, b"{}")
    assert vault.generations(k) == [10, 3, 2, 1]
    assert vault.key_ids() == {k: [10, 3, 2, 1], other: [1]}
    assert vault.generations(b"\x44" * 16) == []


def test_a_vault_pickles_as_its_uri(tmp_path: Path) -> None:
    vault = KeyVault(str(tmp_path / "v"))
    vault.put(entry(b"\x55" * 16))
    again = pickle.loads(pickle.dumps(vault))
    assert again == vault and again.uri == vault.uri and again.generations(b"\x55" * 16) == [1]
    fmt = FieldFormat("ssn", vault=vault)
    assert pickle.loads(pickle.dumps(fmt)) == fmt


# -- resolve, through a real key source ----------------------------------------------------------


class Seen:
    """``Unwrapping.entry`` as ``resolve``'s unwrap callable, noting the wrapped keys it gets."""

    def __init__(self, source: KeySource) -> None:
        self.unwrapping = Unwrapping(source, {"dataset": "d"}, DataKeyCache())
        self.wrapped: list[bytes] = []

    def __call__(self, wrapped: bytes) -> Any:
        self.wrapped.append(wrapped)
        return self.unwrapping.entry(wrapped)


def test_resolve_takes_the_newest_generation(tmp_path: Path, src: KeySource) -> None:
    vault = KeyVault(str(tmp_path / "v"))
    key = src.generate_data_key({"dataset": "d"})
    k = Unwrapping(src, {"dataset": "d"}, DataKeyCache()).entry(key.wrapped)[0].commitment
    vault.record(k, key.wrapped, src.uri, key.key_version, {"dataset": "d"})
    KeyVault.forget()
    rotated = open_key_source("local:alias/y", create=True).rewrap(key.wrapped, {"dataset": "d"})
    assert rotated != key.wrapped
    vault.put(VaultEntry(k, 2, rotated, "local:alias/y", "v2", {"dataset": "d"}, CREATED))
    seen = Seen(src)
    cipher, _ = vault.resolve(k, seen)
    assert cipher.commitment == k and seen.wrapped == [rotated]
    vault.resolve(k, seen)  # resolved once per process: straight to the key that worked
    assert seen.wrapped == [rotated, rotated]


def test_resolve_falls_back_past_a_swapped_newest_generation(tmp_path: Path, src: KeySource) -> None:
    vault = KeyVault(str(tmp_path / "v"))
    a, b = src.generate_data_key({"dataset": "d"}), src.generate_data_key({"dataset": "d"})
    unwrap = Unwrapping(src, {"dataset": "d"}, DataKeyCache())
    ka, kb = unwrap.entry(a.wrapped)[0].commitment, unwrap.entry(b.wrapped)[0].commitment
    vault.put(VaultEntry(ka, 1, a.wrapped, src.uri, "v", {"dataset": "d"}, CREATED))
    vault.put(VaultEntry(ka, 2, b.wrapped, src.uri, "v", {"dataset": "d"}, CREATED))  # B's key under A's id
    seen = Seen(src)
    cipher, _ = vault.resolve(ka, seen)
    assert cipher.commitment == ka != kb and seen.wrapped == [b.wrapped, a.wrapped]
    # with only the swapped entry, the key id does not authenticate
    only = KeyVault(str(tmp_path / "w"))
    only.put(VaultEntry(ka, 1, b.wrapped, src.uri, "v", {"dataset": "d"}, CREATED))
    with pytest.raises(AuthenticationError):
        only.resolve(ka, Seen(src))


def test_resolve_of_a_missing_key_id_names_it_and_the_vault(tmp_path: Path, src: KeySource) -> None:
    uri = str(tmp_path / "v")
    vault = KeyVault(uri)
    vault.put(entry(b"\x66" * 16))
    k = b"\x77" * 16
    with pytest.raises(VaultEntryMissingError) as caught:
        vault.resolve(k, Seen(src))
    assert isinstance(caught.value, RecordError) and caught.value.key_id == k
    assert k.hex() in str(caught.value) and uri in str(caught.value)


def test_resolve_of_only_corrupt_entries_is_a_vault_entry_error(tmp_path: Path, src: KeySource) -> None:
    uri = str(tmp_path / "v")
    vault = KeyVault(uri)
    k = b"\x88" * 16
    store = LocalStore(uri)
    good = entry(k, 1).encode()
    store.create(entry_name(k, 1), good.replace(b'"generation":1', b'"generation": 1'))  # not canonical
    store.create(entry_name(k, 2), entry(k, 3).encode())  # another generation's entry
    store.create(entry_name(k, 3), b"\xff\xfe")
    seen = Seen(src)
    with pytest.raises(VaultEntryError) as caught:
        vault.resolve(k, seen)
    assert k.hex() in str(caught.value) and uri in str(caught.value) and seen.wrapped == []


# -- the engines, end to end ------------------------------------------------------------------------


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "ssn": f"{i:03d}-45-678901234", "contact": {"email": f"u{i}@example.com", "tier": i % 3},
             "n": i} for i in range(n)]  # fmt: skip


def raw_of(value: bytes | str) -> bytes:
    return from_text(value) if isinstance(value, str) else value


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_field_values_v2_round_trip(tmp_path: Path, src: KeySource, encoding: str) -> None:
    vault = KeyVault(str(tmp_path / "v"))
    fmt = FieldFormat(["ssn", "contact.email"], bind="id", encoding=encoding, vault=vault)
    data = records(300)
    out = fmt.encryptor(src).encrypt_batch(data[:200]) + [fmt.encryptor(src).encrypt(r) for r in data[200:]]
    for o in out:
        for value in (o["ssn"], o["contact"]["email"]):
            assert isinstance(value, str if encoding == "text" else bytes)
            assert raw_of(value)[0] == FIELD_V2 and raw_of(value)[17] == 0
        assert len(raw_of(o["ssn"])) == 18 + 4 + 17 + 16  # a 16-character string: 55 bytes
    dec = fmt.decryptor(src)
    assert dec.decrypt_batch(out) == data
    assert [dec.decrypt(o) for o in out[::37]] == data[::37]
    KeyVault.forget()  # a fresh process: every key id looked up in the vault again
    assert FieldFormat(["ssn", "contact.email"], bind="id", vault=KeyVault(str(tmp_path / "v"))).decryptor(
        src, cache=DataKeyCache()).decrypt_batch(out) == data  # fmt: skip


@pytest.mark.parametrize("encoding", ["text", "bytes"])
def test_records_v2_round_trip(tmp_path: Path, src: KeySource, encoding: str) -> None:
    fmt = RecordFormat(keep="id", encoding=encoding, vault=KeyVault(str(tmp_path / "v")))
    data = records(100)
    enc = fmt.encryptor(src)
    out = [enc.encrypt(r) for r in data]
    assert all(raw_of(o["kmsbeam_record"])[0] == RECORD_V2 and set(o) == {"id", "kmsbeam_record"} for o in out)
    dec = fmt.decryptor(src)
    assert [dec.decrypt(o) for o in out] == data
    moved = dict(out[0], id=1)  # the kept field is bound
    with pytest.raises(AuthenticationError):
        dec.decrypt(moved)


def test_one_data_key_is_one_entry_written_before_the_first_value(tmp_path: Path, src: KeySource) -> None:
    root = tmp_path / "v"
    fmt = FieldFormat("ssn", encoding="bytes", vault=KeyVault(str(root)))
    enc = fmt.encryptor(src, policy=DataKeyPolicy(max_records=10))
    first = enc.encrypt({"ssn": "a"})
    k = first["ssn"][1:17]
    assert (root / k.hex() / "00000001.json").is_file()  # there when the first value is
    assert files_under(root) == sorted([MARKER, f"{k.hex()}/00000001.json"])
    out = [first] + enc.encrypt_batch([{"ssn": f"s{i}"} for i in range(34)])
    used = {o["ssn"][1:17] for o in out}
    vault = KeyVault(str(root))
    assert enc.keys.generated == len(used) == 4 and set(vault.key_ids()) == used
    assert all(vault.key_ids()[key] == [1] for key in used)
    entry1 = vault.read(k, 1)
    assert entry1 is not None and entry1.master_key == src.uri and entry1.context == {}


def test_a_v2_value_without_a_vault_is_a_record_error_saying_so(tmp_path: Path, src: KeySource) -> None:
    out = FieldFormat("ssn", vault=KeyVault(str(tmp_path / "v"))).encryptor(src).encrypt({"ssn": "x"})
    with pytest.raises(RecordError, match="key vault") as caught:
        FieldFormat("ssn").decryptor(src).decrypt(out)
    assert not isinstance(caught.value, AuthenticationError)
    (failed,) = FieldFormat("ssn").decryptor(src).decrypt_batch([out])
    assert isinstance(failed, RecordError) and "key vault" in str(failed)
    rec = RecordFormat(vault=KeyVault(str(tmp_path / "v"))).encryptor(src).encrypt({"a": 1})
    with pytest.raises(RecordError, match="key vault"):
        RecordFormat().decryptor(src).decrypt(rec)


def test_a_tampered_or_moved_v2_value_fails(tmp_path: Path, src: KeySource) -> None:
    vault = KeyVault(str(tmp_path / "v"))
    fmt = FieldFormat("a,b", encoding="bytes", vault=vault)
    out = fmt.encryptor(src).encrypt({"a": "secret", "b": "other"})
    dec = fmt.decryptor(src)
    assert dec.decrypt(out) == {"a": "secret", "b": "other"}
    for at in (20, 25, len(out["a"]) - 1):  # counter, ciphertext, tag
        bad = bytearray(out["a"])
        bad[at] ^= 1
        with pytest.raises(AuthenticationError):
            dec.decrypt({"a": bytes(bad), "b": out["b"]})
    with pytest.raises(MalformedValueError):  # the header's zero byte
        dec.decrypt({"a": out["a"][:17] + b"\x01" + out["a"][18:], "b": out["b"]})
    with pytest.raises(VaultEntryMissingError):  # another K: no such data key in the vault
        dec.decrypt({"a": out["a"][:1] + bytes(16) + out["a"][17:], "b": out["b"]})
    with pytest.raises(AuthenticationError):  # moved from field a to field b
        dec.decrypt({"a": out["a"], "b": out["a"]})
    text = to_text(out["a"])
    tampered = text[:-3] + ("A" if text[-3] != "A" else "B") + text[-2:]
    with pytest.raises(AuthenticationError):
        FieldFormat("a,b", vault=vault).decryptor(src).decrypt({"a": tampered, "b": to_text(out["b"])})


def test_v1_values_still_decrypt_with_a_vault(tmp_path: Path, src: KeySource) -> None:
    data = records(20)
    v1 = FieldFormat(["ssn", "contact.email"], bind="id").encryptor(src).encrypt_batch(data)
    assert parse(v1[0]["ssn"], FIELD_V1).fmt == FIELD_V1
    vault = KeyVault(str(tmp_path / "v"))
    with_vault = FieldFormat(["ssn", "contact.email"], bind="id", vault=vault)
    v2 = with_vault.encryptor(src).encrypt_batch(data)
    written = files_under(tmp_path / "v")
    dec = with_vault.decryptor(src)
    assert dec.decrypt_batch(v1) == data and dec.decrypt_batch(v2) == data
    mixed = [a if i % 2 else b for i, (a, b) in enumerate(zip(v1, v2))]
    assert dec.decrypt_batch(mixed) == data and [dec.decrypt(m) for m in mixed] == data
    rec1 = RecordFormat(keep="id").encryptor(src).encrypt(data[0])
    assert parse(rec1["kmsbeam_record"], RECORD_V1).fmt == RECORD_V1
    assert RecordFormat(keep="id", vault=vault).decryptor(src).decrypt(rec1) == data[0]
    assert files_under(tmp_path / "v") == written  # reading writes nothing to the vault


# -- review fixes: what a writer may not write, and how far a reader falls back --------------


def test_an_entry_a_reader_would_refuse_is_never_written(tmp_path: Path) -> None:
    from kmsbeam.errors import ConfigurationError

    vault = KeyVault(str(tmp_path / "v"))
    with pytest.raises(ConfigurationError, match="64 KiB"):
        vault.record(bytes(16), b"\x01" + bytes(40), "local:alias/x", "v1", {"k": "x" * 70_000})
    assert vault.key_ids() == {}


def test_a_marker_that_is_deeply_nested_json_is_not_a_vault(tmp_path: Path) -> None:
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "_kmsbeam_vault.json").write_bytes(b"[" * 100_000)
    assert KeyVault(str(tmp_path / "v")).is_vault() is False


def test_resolve_falls_back_past_a_key_not_found_but_stops_at_a_disabled_key(tmp_path: Path) -> None:
    from kmsbeam.errors import KeyDisabledError, KeyNotFoundError
    from kmsbeam.formats.envelope import KeyCipher

    kid = key_commitment(bytes(range(32)))
    good, odd = b"\x01good", b"\x01odd"
    vault = KeyVault(str(tmp_path / "v"))
    vault.put(VaultEntry(kid, 1, good, "local:alias/a", "va"))
    vault.put(VaultEntry(kid, 2, odd, "local:alias/b", "vb"))

    def unwrap(raised: type[Exception]) -> Any:
        def run(wrapped: bytes) -> tuple[KeyCipher, float]:
            if wrapped == odd:
                raise raised("no such key")
            return KeyCipher.from_dek(bytes(range(32))), 0.0
        return run

    cipher, _ = vault.resolve(kid, unwrap(KeyNotFoundError), fresh=True)
    assert cipher.commitment == kid  # generation 1, past generation 2's unknown key
    with pytest.raises(KeyDisabledError):  # a revocation is not read around
        vault.resolve(kid, unwrap(KeyDisabledError), fresh=True)


def test_a_vault_uri_with_or_without_a_final_slash_is_one_vault(tmp_path: Path) -> None:
    a, b = KeyVault(str(tmp_path / "v")), KeyVault(str(tmp_path / "v") + "/")
    assert a == b and hash(a) == hash(b)
