"""Per-process objects: one registry for caches, sessions, clients and budgets, and one fork rule.

Everything kmsbeam keeps per process (key sources, SDK and OSS clients, SQLite connections,
PKCS#11 libraries and sessions, data-key caches, failure memories, rewrap memos, journal
writers, KMS call buckets) is made here on first use, by a factory:

- ``shared(name, key, factory)``: this process's object for ``(name, key)``, e.g.
  ``shared("oss.client", config, lambda: OssClient(config))``;
- ``Slot(factory)``: this process's object held by one instance (a keystore's connection).

Either way the factory runs once per process, even when many threads ask at once (they wait
for the first); a factory that raises makes nothing, and the next call tries again.

The fork rule, kept by the one ``os.register_at_fork`` of kmsbeam (here):

- A forked child never reuses, calls into or closes an object its parent made here: not a
  SQLite connection, a PKCS#11 session, an HTTP client or its pool, a plaintext data-key
  cache, a call bucket. Its first use makes its own. The parent's objects stay referenced,
  unused, until the child exits: closing them there could disturb the parent (a SQLite WAL,
  a token's login).
- The child keeps plain configuration: module settings, installed KMS limits, and objects
  made outside the registry (a key source a DoFn holds), which keep nothing per process
  themselves and look their clients, sessions and connections up here on every use.
- ``fork()`` first waits until no thread is inside an object registered with a
  ``fork_lock`` (a PKCS#11 library), so the child's copy of its state is consistent.
- The parent keeps everything, untouched.

Python runs the hook on every ``os.fork()`` (multiprocessing's fork start method too), so no
object compares process ids; spawn and forkserver workers start empty anyway.

Closing: an object's ``close`` runs when this process discards it (``discard``) and, for
``shared`` objects, at exit (newest first); never in a child for its parent's objects.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar, cast

__all__ = ["Slot", "discard", "objects", "shared"]

T = TypeVar("T")
_UNSET: Any = object()
_ALL: Any = object()

_lock = threading.Lock()  # guards _entries and _slots, never held while a factory runs
_entries: dict[tuple[str, Hashable], Slot[Any]] = {}
_slots: weakref.WeakSet[Slot[Any]] = weakref.WeakSet()
_abandoned: list[Any] = []  # a child's inheritance: referenced, never used or closed
_held: list[threading.Lock] = []  # fork locks held by the forking thread


class Slot(Generic[T]):
    """This process's object, made by ``factory`` on the first ``get()`` (thread-safe).

    Args:
        factory: makes the object (called once per process).
        close: closes it when this process discards it (``reset`` leaves that to the caller).
        fork_lock: a lock of the object that ``fork()`` holds, so no call is half-done in the
            child's copy.
    """

    __slots__ = ("__weakref__", "_factory", "_lock", "_value", "close", "fork_lock")

    def __init__(
        self,
        factory: Callable[[], T],
        *,
        close: Callable[[T], None] | None = None,
        fork_lock: Callable[[T], threading.Lock] | None = None,
    ) -> None:
        self._factory = factory
        self.close = close
        self.fork_lock = fork_lock
        self._lock = threading.Lock()
        self._value: T = _UNSET
        with _lock:
            _slots.add(self)

    def __repr__(self) -> str:
        return f"Slot({'made' if self._value is not _UNSET else 'empty'})"

    def get(self) -> T:
        """This process's object, made now if this process has none yet."""
        return self._get(self._factory)

    def _get(self, factory: Callable[[], T]) -> T:
        value = self._value
        if value is _UNSET:
            with self._lock:
                value = self._value
                if value is _UNSET:
                    value = self._value = factory()
        return value

    def peek(self) -> T | None:
        """This process's object, or ``None`` if it has not been made."""
        value = self._value
        return None if value is _UNSET else value

    def reset(self) -> T | None:
        """Forget this process's object (the next ``get()`` makes another); returns it."""
        with self._lock:
            value, self._value = self._value, _UNSET
        return None if value is _UNSET else value

    def _abandon(self) -> None:
        """In a forked child: keep the parent's object referenced and never touch it again."""
        if self._value is not _UNSET:
            _abandoned.append(self._value)
        self._value = _UNSET
        self._lock = threading.Lock()  # the parent may have held it while forking


def shared(
    name: str,
    key: Hashable,
    factory: Callable[[], T],
    *,
    close: Callable[[T], None] | None = None,
    fork_lock: Callable[[T], threading.Lock] | None = None,
) -> T:
    """This process's object for ``(name, key)``, made by ``factory`` on first use.

    ``name`` says what it is (``"keys.source"``), ``key`` which one (a URI, a config).
    Every caller of one name passes the same ``close`` and ``fork_lock`` (see ``Slot``).
    """
    slot = _entries.get((name, key))
    if slot is None:
        made = Slot(factory, close=close, fork_lock=fork_lock)
        with _lock:
            slot = _entries.setdefault((name, key), made)
    return cast(T, slot._get(factory))


def objects(name: str) -> list[Any]:
    """This process's objects made under ``name``, oldest first."""
    with _lock:
        slots = [slot for (n, _), slot in _entries.items() if n == name]
    return [value for value in (slot.peek() for slot in slots) if value is not None]


def discard(name: str, key: Hashable = _ALL) -> None:
    """Forget this process's object for ``(name, key)`` (every key: all of ``name``) and close
    it if it has a ``close``. The next ``shared`` call makes a new one; holders of the old
    one keep it (usable unless closed)."""
    with _lock:
        gone = [k for k in _entries if k[0] == name and (key is _ALL or k[1] == key)]
        slots = [_entries.pop(k) for k in gone]
    for slot in slots:
        value = slot.reset()
        if value is not None and slot.close is not None:
            slot.close(value)


def _before_fork() -> None:
    with _lock:
        guarded = [(s.fork_lock, s.peek()) for s in _slots if s.fork_lock is not None]
    # a thread inside a guarded object may make a new entry (taking _lock): wait for it first
    locks = [fork_lock(value) for fork_lock, value in guarded if value is not None]
    for lock in locks:
        lock.acquire()
    _lock.acquire()
    _held[:] = locks


def _after_fork_in_parent() -> None:
    _lock.release()
    for lock in reversed(_held):
        lock.release()
    _held.clear()


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()
    _held.clear()  # the child's copies are abandoned with their objects
    for slot in list(_slots):
        slot._abandon()
    _entries.clear()


os.register_at_fork(
    before=_before_fork, after_in_parent=_after_fork_in_parent, after_in_child=_after_fork_in_child
)


@atexit.register
def _close_at_exit() -> None:
    with _lock:
        slots = list(_entries.values())
    for slot in reversed(slots):
        value = slot.peek()
        if value is not None and slot.close is not None:
            try:
                slot.close(value)
            except Exception:  # noqa: BLE001 - exiting: one failed close must not stop the rest
                pass
