"""The worker's data keys kept across bundles: ``Lease`` (one data key and what it has sealed)
and the process-wide ``KeyShelf`` that holds the idle ones.

A streaming pipeline hands each DoFn tiny bundles (often one record). With one data key per
bundle, a stream of 1,000 records/s in 1-record bundles makes 3.6 million GenerateDataKey calls
an hour, and as many Decrypt calls to read the data back. With ``DataKeyPolicy(across_bundles=
True)`` (the default of the Beam transforms in a streaming pipeline) a data key outlives its
bundle: at a bundle's end its ``Lease`` goes back on this process's shelf, and the next bundle
of any DoFn of the process with the same key source, encryption context, value format and key
vault takes it again, until a ``DataKeyPolicy`` cap (records, bytes, age) or a hard limit says
it is spent. A worker then asks for one data key per ``max_age_seconds`` (and per concurrent
thread) at most.

The invariant is nonce uniqueness: a (data key, counter) pair is never used twice. It holds
because

- a lease is exclusive: ``take`` removes it from the shelf, so one thread at a time seals with
  it; a second thread finds nothing idle and gets a data key of its own;
- a ``Sealer``'s counter only moves forward: values are reserved before they are encrypted,
  whether or not the bundle then succeeds, and no counter is ever rewound;
- a retried bundle therefore seals under fresh counter values of the same data key (when the
  DoFn gave the lease back at its next ``start_bundle``), or under a new data key (when the
  runner threw the failed DoFn away, its lease with it): the failed attempt's values are
  discarded by the runner, and their counters are never reused;
- fork safety: the shelf is per process (``kmsbeam.process``), and a ``DataKeys`` holds its
  lease through a ``process.Slot``, so a forked child never sees its parent's leases (idle or
  held) and generates its own data keys;
- a lease is never pickled (``Sealer`` refuses), so a key cannot travel to another process.

The shelf holds at most ``MAX_IDLE`` idle leases per (source, context, format, vault); more
(after a burst of concurrent threads) are dropped, oldest first. ``forget_data_keys()`` empties
it (tests, and a process that wants new keys at once).
"""

from __future__ import annotations

import threading
from collections.abc import Hashable

from kmsbeam import process
from kmsbeam.formats.envelope import Sealer

__all__ = ["MAX_IDLE", "KeyShelf", "Lease", "forget_data_keys", "key_shelf"]

MAX_IDLE = 8


class Lease:
    """One data key in use: its sealer and what it has sealed since it was generated.

    Attributes:
        sealer: the data key's ``Sealer`` (its counter: values sealed).
        records: records sealed under it.
        bytes: plaintext bytes sealed under it.
        born: when it was generated (the ``DataKeys`` clock).
    """

    __slots__ = ("born", "bytes", "epoch", "records", "sealer")

    def __init__(self, sealer: Sealer, born: float, epoch: int = 0) -> None:
        self.sealer = sealer
        self.records = 0
        self.bytes = 0
        self.born = born
        self.epoch = epoch

    def __repr__(self) -> str:
        return f"Lease(records={self.records}, bytes={self.bytes}, values={self.sealer.count})"


class KeyShelf:
    """Idle leases of one process by (key source, context, format, vault): thread-safe."""

    def __init__(self, max_idle: int = MAX_IDLE) -> None:
        self.max_idle = max_idle
        self._lock = threading.Lock()
        self._idle: dict[Hashable, list[Lease]] = {}
        self.epoch = 0  # ``clear`` moves it on: a lease of an older epoch is never kept again

    def __len__(self) -> int:
        with self._lock:
            return sum(map(len, self._idle.values()))

    def __repr__(self) -> str:
        return f"KeyShelf(idle={len(self)})"

    def take(self, key: Hashable) -> Lease | None:
        """The most recently returned idle lease of ``key`` (now the caller's alone), or None."""
        with self._lock:
            leases = self._idle.get(key)
            if not leases:
                return None
            lease = leases.pop()
            if not leases:
                del self._idle[key]
            return lease

    def give(self, key: Hashable, lease: Lease) -> None:
        """Put a lease its holder no longer uses back (the holder must not use it again)."""
        with self._lock:
            if lease.epoch != self.epoch:  # born before a ``clear``
                return
            leases = self._idle.setdefault(key, [])
            leases.append(lease)
            if len(leases) > self.max_idle:
                del leases[0]

    def clear(self) -> None:
        """Drop every idle lease, and every lease held now when it is given back."""
        with self._lock:
            self._idle.clear()
            self.epoch += 1


def key_shelf() -> KeyShelf:
    """This process's shelf (a forked child gets an empty one of its own)."""
    return process.shared("keys.shelf", None, KeyShelf)


def forget_data_keys() -> None:
    """Drop this process's data keys kept across bundles: idle ones now, held ones when their
    bundle ends; the next bundle of every DoFn generates a new one."""
    key_shelf().clear()
