"""Pkcs11KeySource on a real SoftHSM2 token: round trips, context binding, tampering, rotation,
pickling, and an independent look at the KEK with OpenSC's pkcs11-tool."""

from __future__ import annotations

import pickle

import pytest
from pkcs11_helpers import PIN, PIN_B, Hsm

from kmsbeam import AuthenticationError, ConfigurationError, KeyNotFoundError, MalformedValueError, parse_key_uri
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.keys.source import KIND_PKCS11, KeySource
from kmsbeam.pkcs11 import Pkcs11KeySource, create_kek, hsm_call_counts, open_pkcs11_source
from kmsbeam.pkcs11._blob import Blob

CTX = {"dataset": "customers", "column": "ssn"}


def source(uri: str) -> Pkcs11KeySource:
    return open_pkcs11_source(parse_key_uri(uri))


def test_round_trip_and_the_protocol(kek: str) -> None:
    src = source(kek)
    assert isinstance(src, KeySource) and src.kind == KIND_PKCS11 and src.uri == kek
    key = src.generate_data_key(CTX)
    assert len(key.plaintext) == 32 and key.wrapped[0] == KIND_PKCS11
    assert src.decrypt_data_key(key.wrapped, dict(reversed(list(CTX.items())))) == key.plaintext
    assert src.generate_data_key(CTX).plaintext != key.plaintext
    blob = Blob.decode(key.wrapped[1:])
    assert (blob.token, blob.kek_label, len(blob.kek_id), len(blob.wrapped_seed)) == (
        "etl", parse_key_uri(kek).key, 8, 40)  # fmt: skip
    assert key.key_id == blob.kek_label and key.key_version == blob.kek_id.hex()
    info = src.describe_key()
    assert info.key_id == blob.kek_label and "sensitive, never extractable" in info.description


def test_the_context_is_bound(kek: str) -> None:
    src = source(kek)
    key = src.generate_data_key(CTX)
    for wrong in ({}, None, {**CTX, "column": "email"}, {**CTX, "extra": ""}):
        with pytest.raises(AuthenticationError):
            src.decrypt_data_key(key.wrapped, wrong)
    empty = src.generate_data_key()
    assert src.decrypt_data_key(empty.wrapped, {}) == empty.plaintext
    with pytest.raises(AuthenticationError):
        src.decrypt_data_key(empty.wrapped, CTX)


def test_every_bit_flip_and_truncation_fails_to_authenticate(kek: str) -> None:
    src = source(kek)
    key = src.generate_data_key(CTX)
    wrapped = key.wrapped
    for i in range(len(wrapped)):
        for bit in range(8):
            bad = wrapped[:i] + bytes([wrapped[i] ^ (1 << bit)]) + wrapped[i + 1 :]
            with pytest.raises(AuthenticationError):
                src.decrypt_data_key(bad, CTX)
    for n in range(len(wrapped)):
        with pytest.raises(AuthenticationError):
            src.decrypt_data_key(wrapped[:n], CTX)
    with pytest.raises(AuthenticationError):
        src.decrypt_data_key(wrapped + b"\x00", CTX)
    with pytest.raises(TypeError):
        src.decrypt_data_key("not bytes", CTX)  # type: ignore[arg-type]
    assert src.decrypt_data_key(wrapped, CTX) == key.plaintext  # the source still works


def test_a_wrapped_key_of_another_token_is_refused(hsm: Hsm) -> None:
    a, b = source(hsm.new_kek()), source(hsm.new_kek("second"))
    with pytest.raises(AuthenticationError):
        a.decrypt_data_key(b.generate_data_key(CTX).wrapped, CTX)


def test_pickling_carries_only_the_uri(kek: str) -> None:
    src = source(kek)
    key = src.generate_data_key(CTX)
    data = pickle.dumps(src)
    assert PIN.encode() not in data and key.plaintext not in data
    copy = pickle.loads(data)
    assert isinstance(copy, Pkcs11KeySource) and copy.uri == src.uri
    assert copy.decrypt_data_key(key.wrapped, CTX) == key.plaintext
    assert PIN not in repr(src) and repr(src) == f"Pkcs11KeySource({kek!r})"
    with pytest.raises(TypeError):
        pickle.dumps(key)


def test_the_kek_made_by_kmsbeam_is_wrap_only_and_never_extractable(hsm: Hsm, kek: str) -> None:
    label = parse_key_uri(kek).key
    [listing] = hsm.objects(label)  # OpenSC's own reading of the attributes
    assert "AES length 32" in listing
    assert "Usage:      wrap, unwrap\n" in listing, listing
    assert "Access:     sensitive, always sensitive, never extractable, local" in listing, listing
    with pytest.raises(ConfigurationError, match="already exists"):
        create_kek(kek)


def test_rewrap_to_a_new_kek_then_the_old_kek_is_destroyed(hsm: Hsm) -> None:
    old, new = source(hsm.new_kek(prefix="old")), source(hsm.new_kek(prefix="new"))
    old_label, new_label = parse_key_uri(old.uri).key, parse_key_uri(new.uri).key
    keys = [(old.generate_data_key({"n": str(i)}), {"n": str(i)}) for i in range(20)]
    before = hsm_call_counts()
    rewrapped = [new.rewrap(k.wrapped, ctx) for k, ctx in keys]
    calls = {k: v - before.get(k, 0) for k, v in hsm_call_counts().items()}
    assert calls.get("C_GetAttributeValue", 0) == 0  # the seed was never read out of the HSM
    assert calls["C_UnwrapKey"] == calls["C_WrapKey"] == calls["C_DestroyObject"] == 20
    assert all(Blob.decode(w[1:]).kek_label == new_label for w in rewrapped)
    # the new KEK's source also reads what is not rewrapped yet (the blob names its KEK)
    assert new.decrypt_data_key(keys[0][0].wrapped, keys[0][1]) == keys[0][0].plaintext
    with pytest.raises(AuthenticationError):
        new.rewrap(keys[0][0].wrapped, {"n": "wrong"})
    hsm.tool("--delete-object", "--type", "secrkey", "--label", old_label)
    assert hsm.objects(old_label) == []
    fresh = Pkcs11KeySource(new.uri)  # a new process would start here
    for (k, ctx), w in zip(keys, rewrapped):
        assert fresh.decrypt_data_key(w, ctx) == k.plaintext
    with pytest.raises(AuthenticationError):  # what was not rewrapped is gone with the old KEK
        fresh.decrypt_data_key(keys[0][0].wrapped, keys[0][1])
    with pytest.raises(KeyNotFoundError, match="kmsbeam keys create"):
        Pkcs11KeySource(hsm.uri(old_label))
    with pytest.raises(KeyNotFoundError):  # a source opened before: its cached handle is stale
        old.generate_data_key()


def test_rewrap_can_change_the_context_inside_the_hsm(kek: str) -> None:
    src = source(kek)
    key = src.generate_data_key(CTX)
    moved = src.rewrap(key.wrapped, CTX, {"dataset": "archive"})
    assert src.decrypt_data_key(moved, {"dataset": "archive"}) == key.plaintext
    with pytest.raises(AuthenticationError):
        src.decrypt_data_key(moved, CTX)
    assert src.rewrap(key.wrapped, CTX) == key.wrapped  # RFC 3394 is deterministic


def test_rewrap_to_another_token_needs_an_explicit_host_copy(hsm: Hsm, kek: str) -> None:
    a, b = source(kek), source(hsm.new_kek("second"))
    key = a.generate_data_key(CTX)
    with pytest.raises(ConfigurationError, match="allow_host_copy=True"):
        a.rewrap_to(key.wrapped, CTX, b)
    with pytest.raises(AuthenticationError):
        a.rewrap_to(key.wrapped, {"wrong": "context"}, b, allow_host_copy=True)
    moved = a.rewrap_to(key.wrapped, CTX, b, {"new": "ctx"}, allow_host_copy=True)
    assert Blob.decode(moved[1:]).token == "second"
    assert b.decrypt_data_key(moved, {"new": "ctx"}) == key.plaintext
    same_token = source(hsm.new_kek())
    assert same_token.decrypt_data_key(a.rewrap_to(key.wrapped, CTX, same_token), CTX) == key.plaintext
    assert PIN_B not in repr(b)


def test_threads_share_one_session_safely(kek: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    src = source(kek)

    def work(i: int) -> bool:
        ctx = {"thread": str(i % 4)}
        keys = [src.generate_data_key(ctx) for _ in range(25)]
        return all(src.decrypt_data_key(k.wrapped, ctx) == k.plaintext for k in keys)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(work, range(16)))


def test_a_lost_session_is_reopened_while_the_process_stays_logged_in(kek: str) -> None:
    src = source(kek)
    key = src.generate_data_key(CTX)
    src._token._session = None  # as after SessionHandleInvalid: C_Login now says "already"
    assert src.decrypt_data_key(key.wrapped, CTX) == key.plaintext


def test_create_on_open_makes_the_kek_once(hsm: Hsm) -> None:
    uri = hsm.uri(hsm.label("lazy"))
    with pytest.raises(KeyNotFoundError):
        Pkcs11KeySource(uri)
    first, second = Pkcs11KeySource(uri, create=True), Pkcs11KeySource(uri, create=True)
    assert first.created and not second.created
    key = first.generate_data_key()
    assert second.decrypt_data_key(key.wrapped) == key.plaintext
    assert first.stats()["generate_data_key"] == 1 and second.stats()["decrypt_data_key"] == 1


def test_versions_name_the_kek_from_the_blob(hsm: Hsm, kek: str) -> None:
    src = source(kek)
    name = src.current_version()
    token, label, id_hex = name.split("/")
    assert (token, label, len(bytes.fromhex(id_hex))) == ("etl", parse_key_uri(kek).key, 8)
    assert src.key_versions() == (name,) and src.created is False
    key = src.generate_data_key(CTX)
    assert src.wrapped_key_version(key.wrapped) == name == wrapped_key_version(key.wrapped)
    other = source(hsm.new_kek())
    assert other.current_version() != name
    assert other.wrapped_key_version(key.wrapped) == name  # any KEK's keys, no HSM call
    assert other.wrapped_key_version(other.rewrap(key.wrapped, CTX)) == other.current_version()
    for bad in (b"", key.wrapped[:-1], bytes([0x01]) + key.wrapped[1:]):
        with pytest.raises(MalformedValueError):
            src.wrapped_key_version(bad)
