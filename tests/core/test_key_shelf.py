"""Data keys kept across bundles (``DataKeyPolicy.across_bundles``, ``kmsbeam.keys.shelf``):
one key for many bundles within the caps, exclusive leases, nonce uniqueness across threads,
bundles, retries and forks, revocation within the max age, and kmsbeam's own call counts.

Real local keystore; injected clocks (nothing sleeps).
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest

from kmsbeam import (
    DataKeyPolicy,
    FieldEncryptor,
    KeyDisabledError,
    call_counts,
    forget_data_keys,
)
from kmsbeam.formats.envelope import FIELD_V1, MAX_VALUES_PER_KEY, Sealer, parse
from kmsbeam.kms import KeyStore, KmsEngine
from kmsbeam.keys.policy import DataKeys
from kmsbeam.keys.shelf import MAX_IDLE, KeyShelf, Lease, key_shelf


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def keys(source: Any, shelf: KeyShelf | None = None, clock: Clock | None = None, **policy: Any) -> DataKeys:
    policy.setdefault("across_bundles", True)
    return DataKeys(source, FIELD_V1, {"job": "t"}, DataKeyPolicy(**policy), shelf=KeyShelf() if shelf is None else shelf,
                    clock=clock or Clock())  # fmt: skip


def nonce_of(value: bytes) -> tuple[bytes, bytes]:
    """(K, counter) of a field value v1: the nonce's identity."""
    parsed = parse(value, FIELD_V1)
    return parsed.commitment, bytes(parsed.body[:4])


def seal(k: DataKeys, n: int) -> list[tuple[bytes, bytes]]:
    """``n`` one-value records through ``k``, as an engine seals them."""
    return [nonce_of(k.sealer(1, 1).seal(b"v", "f")) for _ in range(n)]


def test_across_bundles_false_gives_every_bundle_its_own_key(source: Any) -> None:
    k = keys(source, across_bundles=False)
    commitments = set()
    for _ in range(5):
        commitments.add(k.sealer().commitment)
        k.reset()
    assert len(commitments) == 5 and k.generated == k.calls == 5 and k.reused == 0


def test_across_bundles_reuses_one_key_and_its_counter_moves_on(source: Any) -> None:
    k = keys(source)
    seen = []
    for _ in range(50):  # 50 one-record bundles
        seen += seal(k, 1)
        k.reset()
    assert k.calls == k.generated == 1 and k.reused == 49
    assert len({c for c, _ in seen}) == 1 and len(set(seen)) == 50  # one key, 50 counters


def test_none_means_one_key_per_bundle_outside_beam(source: Any) -> None:
    k = DataKeys(source, FIELD_V1, None, DataKeyPolicy(), shelf=KeyShelf())
    k.sealer()
    k.reset()
    k.sealer()
    assert k.generated == 2 and DataKeyPolicy().across_bundles is None


@pytest.mark.parametrize("bad", ["yes", 1, 0.0])
def test_across_bundles_is_true_false_or_none(bad: Any) -> None:
    with pytest.raises(ValueError, match="across_bundles"):
        DataKeyPolicy(across_bundles=bad)


def test_the_caps_hold_across_bundles(source: Any) -> None:
    clock = Clock()
    k = keys(source, clock=clock, max_records=10, max_age_seconds=60)
    for _ in range(25):  # records cap: 25 records in 1-record bundles -> 3 keys
        k.sealer()
        k.reset()
    assert k.generated == 3
    clock.now += 60  # the age cap: the idle key is spent, never handed out again
    k.sealer()
    assert k.generated == 4
    k = keys(source, max_bytes=100)
    for _ in range(3):
        k.sealer()
        k.bytes += 60  # as Sealing counts a record's plaintext bytes
        k.reset()
    assert k.generated == 2


def test_room_counts_the_key_waiting_on_the_shelf(source: Any) -> None:
    """A batch cut by the records cap fills the kept key before a new one is made."""
    k = keys(source, max_records=700)
    k.sealer(300, 300)
    k.reset()
    assert k.room(1000) == 400  # the shelf key's rest, not a whole new key's 700
    k.sealer(400, 400)
    assert k.room(1000) == 700 and k.generated == 1  # spent: the next run is a new key
    forget_data_keys()
    enc = FieldEncryptor(["ssn"], source, policy=DataKeyPolicy(max_records=700, across_bundles=True))
    for _ in range(3):  # 3 bundles of 1,000 records: 3,000 records fill 5 keys, not 6
        enc.encrypt_batch([{"ssn": f"{i}"} for i in range(1000)])
        enc.reset()
    assert enc.keys.generated == 5


def test_a_spent_key_is_not_put_back(source: Any) -> None:
    shelf = KeyShelf()
    k = keys(source, shelf, max_records=1)
    k.sealer()
    k.reset()
    assert len(shelf) == 0


def test_leases_are_exclusive(source: Any) -> None:
    shelf = KeyShelf()
    a, b = keys(source, shelf), keys(source, shelf)
    sa = a.sealer()
    sb = b.sealer()  # a holds its key: b gets its own
    assert sa.commitment != sb.commitment and shelf.take(a._shelf_key) is None
    a.reset()
    b.reset()
    assert len(shelf) == 2
    assert keys(source, shelf).sealer().commitment == sb.commitment  # the last given back


def test_only_matching_keys_are_shared(source: Any) -> None:
    from kmsbeam.formats.envelope import RECORD_V1

    shelf = KeyShelf()
    a = keys(source, shelf)
    a.sealer()
    a.reset()
    other_context = DataKeys(source, FIELD_V1, {"job": "other"}, DataKeyPolicy(across_bundles=True), shelf=shelf)
    other_format = DataKeys(source, RECORD_V1, {"job": "t"}, DataKeyPolicy(across_bundles=True), shelf=shelf)
    other_context.sealer()
    other_format.sealer()
    assert other_context.generated == other_format.generated == 1 and len(shelf) == 1


def test_the_shelf_keeps_at_most_max_idle_keys(source: Any) -> None:
    shelf = KeyShelf()
    holders = [keys(source, shelf) for _ in range(MAX_IDLE + 3)]
    for h in holders:
        h.sealer()
    for h in holders:
        h.reset()
    assert len(shelf) == MAX_IDLE


def test_forget_data_keys_drops_idle_and_held_keys(source: Any) -> None:
    a, b = keys(source, key_shelf()), keys(source, key_shelf())
    a.sealer()
    a.reset()  # idle
    b.sealer()  # held
    forget_data_keys()
    b.reset()  # a lease from before forget_data_keys() is not kept
    assert len(key_shelf()) == 0
    c = keys(source, key_shelf())
    c.sealer()
    assert c.generated == 1


def test_a_retried_bundle_never_reuses_a_counter(source: Any) -> None:
    """A bundle that fails mid-way: its values were reserved; the retry (same DoFn, or a new
    one when the runner threw the failed one away) seals under fresh (key, counter) pairs."""
    shelf = KeyShelf()
    k = keys(source, shelf)
    first = seal(k, 3)
    k.reset()  # bundle 1 done: the key goes back on the shelf
    failed = seal(k, 4)  # bundle 2 takes it, seals 4 values, then fails (no finish_bundle)
    k.reset()  # the same DoFn's next start_bundle gives it back: the counter has moved on
    retried = seal(k, 4)
    replacement = keys(source, shelf)  # a new DoFn instance for a later retry
    k2 = seal(replacement, 4)
    dropped = keys(source, shelf)  # a failed DoFn thrown away with its lease held...
    lost = seal(dropped, 2)
    del dropped
    after = seal(keys(source, shelf), 2)  # ...is never seen again: a new key
    every = first + failed + retried + k2 + lost + after
    assert len(set(every)) == len(every)
    assert {c for c, _ in retried} == {c for c, _ in first}  # the same data key, later counters


def test_nonce_uniqueness_across_threads(source: Any) -> None:
    shelf = KeyShelf()
    out: list[list[tuple[bytes, bytes]]] = [[] for _ in range(8)]

    def worker(i: int) -> None:
        k = keys(source, shelf)
        for _ in range(200):  # 200 bundles of 5 records
            out[i] += seal(k, 5)
            k.reset()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [pair for part in out for pair in part]
    assert len(every) == 8000 and len(set(every)) == 8000
    assert len({c for c, _ in every}) <= 8  # at most one key per concurrent thread


def _child(k: DataKeys, conn: Any) -> None:
    conn.send((k.sealer().commitment, len(key_shelf()), k.generated))


def test_a_forked_child_never_uses_its_parents_keys(source: Any) -> None:
    def process_keys() -> DataKeys:  # on this process's shelf, as the Beam DoFns use it
        return DataKeys(source, FIELD_V1, {"job": "t"}, DataKeyPolicy(across_bundles=True))

    forget_data_keys()
    k = process_keys()
    held = k.sealer().commitment  # a lease held while the process forks
    idle = process_keys()
    idle.sealer()
    idle.reset()  # and one idle on the shelf
    ctx = multiprocessing.get_context("fork")
    parent_end, child_end = ctx.Pipe()
    p = ctx.Process(target=_child, args=(k, child_end))
    p.start()
    commitment, idle_in_child, generated = parent_end.recv()
    p.join(30)
    assert p.exitcode == 0
    assert commitment != held and idle_in_child == 0 and generated == 2  # its own new key
    assert k.sealer().commitment == held  # the parent carries on with its own


def test_the_hard_value_limit_holds_across_bundles(source: Any) -> None:
    shelf = KeyShelf()
    k = keys(source, shelf)
    sealer = k.sealer()
    sealer._count = MAX_VALUES_PER_KEY - 1  # as if 2**32 - 1 values were sealed
    k.reset()
    assert k.sealer(1, 1) is sealer  # one value left
    k.reset()
    assert k.sealer(2, 1) is not sealer  # two would cross 2**32: a new key


def test_a_lease_never_pickles(source: Any) -> None:
    import pickle

    lease = Lease(Sealer(FIELD_V1, b"k" * 32, b"\x01w"), 0.0)
    with pytest.raises(TypeError, match="never pickles"):
        pickle.dumps(lease.sealer)
    assert "records=0" in repr(lease) and "k" * 8 not in repr(lease)


def test_a_disabled_key_stops_a_stream_within_the_max_age(source: Any) -> None:
    clock = Clock()
    enc = FieldEncryptor(["ssn"], source, policy=DataKeyPolicy(max_age_seconds=30, across_bundles=True),
                         clock=clock)  # fmt: skip
    enc.encrypt({"ssn": "1"})
    enc.reset()
    KmsEngine(KeyStore(source.home)).disable_key(source.key_id)
    clock.now += 29.9  # inside the max age: the key kept across bundles still seals
    enc.encrypt({"ssn": "2"})
    enc.reset()
    clock.now += 0.1  # the max age is over: the next record needs a new key, which is refused
    with pytest.raises(KeyDisabledError):
        enc.encrypt({"ssn": "3"})


def test_call_counts_are_kmsbeams_own(source: Any) -> None:
    before = call_counts()
    k = keys(source, KeyShelf())
    for _ in range(10):
        k.sealer()
        k.reset()
    after = call_counts()
    delta = {name: after[name] - before[name] for name in after}
    assert delta["data_keys_generated"] == 1 and delta["kms_calls_generate_data_key"] == 1
    assert delta["data_keys_reused"] == 9 and delta["kms_calls_decrypt"] == 0
