"""Many processes on one token: spawn and fork workers, threads, and a start-up storm while
another process writes the token files (the half-written token file race)."""

from __future__ import annotations

import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pkcs11_helpers import Hsm

from kmsbeam.pkcs11 import Pkcs11KeySource, Pkcs11Config, hsm_call_counts

CTX = {"job": "processes"}


def _use(src: Pkcs11KeySource, n: int) -> list[tuple[bytes, bytes]]:
    """n keys made and unwrapped in this process, from two threads: (wrapped, dek) pairs."""

    def work(_: int) -> list[tuple[bytes, bytes]]:
        out = []
        for _ in range(n // 2):
            key = src.generate_data_key(CTX)
            assert src.decrypt_data_key(key.wrapped, CTX) == key.plaintext
            out.append((key.wrapped, key.plaintext))
        return out

    with ThreadPoolExecutor(2) as pool:
        return [pair for part in pool.map(work, range(2)) for pair in part]


def _spawned(uri: str) -> tuple[int, list[tuple[bytes, bytes]]]:
    return os.getpid(), _use(Pkcs11KeySource(uri), 20)


_inherited: Pkcs11KeySource | None = None


def _forked(_: int) -> tuple[int, list[tuple[bytes, bytes]], dict[str, int]]:
    assert _inherited is not None  # the parent's object, session and all: must re-initialise
    before = hsm_call_counts()  # the parent's counts, inherited
    pairs = _use(_inherited, 20)
    after = hsm_call_counts()
    names = ("C_Initialize", "C_OpenSession+C_Login")
    return os.getpid(), pairs, {k: after[k] - before.get(k, 0) for k in names}


def test_spawned_workers_share_the_token(kek: str) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        results = pool.map(_spawned, [kek] * 8, chunksize=1)
    here = Pkcs11KeySource(kek)
    assert len({pid for pid, _ in results}) >= 2
    for _, pairs in results:
        assert len(pairs) == 20
        assert all(here.decrypt_data_key(w, CTX) == dek for w, dek in pairs)


def test_forked_workers_reinitialise_and_log_in_again(kek: str) -> None:
    global _inherited
    _inherited = src = Pkcs11KeySource(kek)
    src.generate_data_key(CTX)  # the parent is logged in and busy while it forks
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            key = src.generate_data_key(CTX)
            assert src.decrypt_data_key(key.wrapped, CTX) == key.plaintext

    threads = [threading.Thread(target=busy) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        with multiprocessing.get_context("fork").Pool(3, maxtasksperchild=1) as pool:
            results = pool.map(_forked, range(6), chunksize=1)
    finally:
        stop.set()
        for t in threads:
            t.join()
        _inherited = None
    for pid, pairs, calls in results:
        assert pid != os.getpid()
        # each child re-initialised the library (more than once if its start-up was retried:
        # children starting together sometimes read the token files mid-update) and logged in
        assert calls["C_Initialize"] >= 1 and calls["C_OpenSession+C_Login"] == 1
        assert all(src.decrypt_data_key(w, CTX) == dek for w, dek in pairs)
    assert src.decrypt_data_key(src.generate_data_key(CTX).wrapped, CTX)  # the parent still works


def _writer(uri: str, started: Any, stop: Any) -> None:
    """Create and destroy token objects until told to stop: SoftHSM rewrites the token files."""
    from pkcs11 import KeyType

    from kmsbeam.pkcs11._session import attach

    session = attach(Pkcs11Config.from_uri(uri))
    while not stop.is_set():
        session.run(lambda s: s.generate_key(KeyType.AES, 128, label="churn", store=True).destroy())
        started.set()


def _starter(uri: str) -> str:
    try:
        src = Pkcs11KeySource(uri)
        key = src.generate_data_key(CTX)
        ok = src.decrypt_data_key(key.wrapped, CTX) == key.plaintext
        return f"ok retries={hsm_call_counts().get('startup_retries', 0)}" if ok else "wrong key"
    except Exception as exc:  # reported, not raised: the test shows every failure
        return f"{type(exc).__name__}: {exc}"


def test_many_workers_start_while_the_token_is_being_written(kek: str, hsm: Hsm) -> None:
    ctx = multiprocessing.get_context("spawn")
    started, stop = ctx.Event(), ctx.Event()
    writer = ctx.Process(target=_writer, args=(kek, started, stop))
    writer.start()
    try:
        assert started.wait(60)
        # forked starters, each task a fresh process: they start close together. Without the
        # start-up retries about one in five fails here (NoSuchToken, GeneralError at login).
        with multiprocessing.get_context("fork").Pool(8, maxtasksperchild=1) as pool:
            results = pool.map(_starter, [kek] * 48, chunksize=1)
    finally:
        stop.set()
        writer.join(30)
    assert writer.exitcode == 0
    assert all(r.startswith("ok") for r in results), results


_EXIT_SCRIPT = """
import atexit, sys

def check():  # registered before kmsbeam's own handler, so it runs after it (LIFO)
    from kmsbeam import process
    live = [t for m in process.objects("pkcs11.module") for t in m.tokens.values() if t._session is not None]
    print("open sessions after exit handlers:", len(live))

atexit.register(check)
from kmsbeam.pkcs11 import Pkcs11KeySource
src = Pkcs11KeySource(sys.argv[1])
src.decrypt_data_key(src.generate_data_key().wrapped)
print("logins:", src.stats()["C_OpenSession+C_Login"])
"""


def test_the_session_is_closed_at_exit(kek: str) -> None:
    import subprocess
    import sys

    cmd = [sys.executable, "-c", _EXIT_SCRIPT, kek]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["logins: 1", "open sessions after exit handlers: 0"], out.stdout
