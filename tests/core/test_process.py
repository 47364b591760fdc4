"""``kmsbeam.process``: one object per process, made once under concurrency, fresh in a forked
child (never the parent's), the parent's untouched; and no other module handles fork itself."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from kmsbeam import process

ROOT = Path(__file__).resolve().parents[2]

class Thing:
    def __init__(self) -> None:
        self.pid = os.getpid()
        self.closed = False

    def close(self) -> None:
        self.closed = True


def in_child(check: Callable[[], bool]) -> bool:
    """Run ``check`` in a forked child; its answer (an exception is ``False``)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: only os._exit, never return into pytest
        ok = False
        try:
            ok = check()
        finally:
            os.write(write, b"1" if ok else b"0")
            os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.waitpid(pid, 0)
    os.close(read)
    return answer == b"1"


def test_one_object_per_name_and_key() -> None:
    a = process.shared("test.thing", "a", Thing)
    assert process.shared("test.thing", "a", Thing) is a
    assert process.shared("test.thing", "b", Thing) is not a
    assert process.shared("test.other", "a", Thing) is not a
    assert {id(t) for t in process.objects("test.thing")} >= {id(a)}
    process.discard("test.thing")
    process.discard("test.other")
    assert process.objects("test.thing") == []


def test_a_forked_child_makes_its_own_and_the_parent_keeps_its_own() -> None:
    parent = process.shared("test.fork", "k", Thing)
    slot: process.Slot[Thing] = process.Slot(Thing)
    held = slot.get()

    def child() -> bool:
        mine = process.shared("test.fork", "k", Thing)
        own = slot.get()
        return (
            mine is not parent and mine.pid == os.getpid() and process.shared("test.fork", "k", Thing) is mine
            and own is not held and own.pid == os.getpid() and slot.get() is own
            and not parent.closed and not held.closed  # the parent's objects are never closed there
            and process.objects("test.fork") == [mine]
        )  # fmt: skip

    assert in_child(child)
    assert process.shared("test.fork", "k", Thing) is parent and slot.get() is held
    assert not parent.closed and not held.closed
    process.discard("test.fork")


def test_fork_holds_the_fork_locks_so_no_call_is_half_done_in_the_child() -> None:
    class Guarded(Thing):
        def __init__(self) -> None:
            super().__init__()
            self.lock = threading.Lock()

    guarded = process.shared("test.guarded", "", Guarded, fork_lock=lambda g: g.lock)
    # the child's copy of the lock was taken by fork (it belongs to the abandoned object)
    assert in_child(lambda: guarded.lock.locked() and process.shared("test.guarded", "", Guarded) is not guarded)
    assert not guarded.lock.locked()  # released in the parent
    process.discard("test.guarded")


def test_factories_run_once_per_process_under_concurrency() -> None:
    calls: list[int] = []
    entered, gate = threading.Event(), threading.Event()

    def factory() -> Thing:
        calls.append(1)
        entered.set()
        gate.wait(10)  # hold the others at the door until the first is inside
        return Thing()

    start = threading.Barrier(9)
    got: list[Thing] = []

    def worker() -> None:
        start.wait(10)
        got.append(process.shared("test.once", "k", factory))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    start.wait(10)
    assert entered.wait(10)
    gate.set()
    for t in threads:
        t.join(10)
    assert len(calls) == 1 and len(got) == 8 and all(t is got[0] for t in got)
    process.discard("test.once")


def test_a_failing_factory_makes_nothing_and_the_next_call_tries_again() -> None:
    def broken() -> Thing:
        raise RuntimeError("no")

    try:
        process.shared("test.retry", "k", broken)
    except RuntimeError:
        pass
    assert process.objects("test.retry") == []
    assert isinstance(process.shared("test.retry", "k", Thing), Thing)
    process.discard("test.retry")


def test_discard_closes_and_forgets() -> None:
    first = process.shared("test.close", "k", Thing, close=Thing.close)
    kept = process.shared("test.close", "other", Thing, close=Thing.close)
    process.discard("test.close", "k")
    assert first.closed and not kept.closed
    assert process.shared("test.close", "k", Thing) is not first
    process.discard("test.close")
    assert kept.closed


def test_shared_objects_are_closed_at_exit() -> None:
    script = (
        "from kmsbeam import process\n"
        "process.shared('t', 1, object, close=lambda o: print('closed', flush=True))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout == "closed\n"


# -- one fork rule, in one place ------------------------------------------------------------
# pipelines/rotate/lock.py: the lock's owner id is a pid (hostname, pid, nonce), not a cache.
NOT_A_CACHE = {"pipelines/rotate/lock.py"}


def _fork_handling(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr == "register_at_fork":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: register_at_fork")
        if isinstance(node, ast.Compare):
            for part in (node.left, *node.comparators):
                if any(isinstance(n, ast.Attribute) and n.attr == "getpid" for n in ast.walk(part)):
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno}: compares os.getpid()")
    return found


def test_only_kmsbeam_process_handles_fork() -> None:
    found = []
    for package in ("kmsbeam", "transforms", "pipelines"):
        for path in sorted((ROOT / package).rglob("*.py")):
            rel = str(path.relative_to(ROOT))
            if rel not in NOT_A_CACHE and rel != "kmsbeam/process.py":
                found += _fork_handling(path)
    assert found == []
    assert _fork_handling(ROOT / "kmsbeam" / "process.py")  # the check sees the one that is there


def test_no_cache_is_keyed_by_process_id() -> None:
    """``os.getpid()`` only names things (temporary files, journal files, lock owners)."""
    found = []
    for package in ("kmsbeam", "transforms", "pipelines"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, (ast.Tuple, ast.Subscript)):
                    parts = node.elts if isinstance(node, ast.Tuple) else [node.slice]
                    for part in parts:
                        if isinstance(part, ast.Call) and getattr(part.func, "attr", "") == "getpid":
                            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert found == []
