"""The emulator HTTP server's connection table: the open connections and the calls in flight.

One lock guards them and no socket operation runs under it; its condition wakes whoever
waits for the table to change (``wait_for_connections``, ``stop`` draining the calls).
"""

from __future__ import annotations

import socket
import threading

from kmsbeam.emulator._http_conn import Conn, shut

__all__ = ["ConnTable"]


class ConnTable:
    """The server's open connections, its calls in flight and whether its I/O loop is over."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._conns: dict[socket.socket, Conn] = {}
        self._in_flight = 0
        self._loop_over = False

    def __len__(self) -> int:
        with self._lock:
            return len(self._conns)

    def snapshot(self) -> list[Conn]:
        with self._lock:
            return list(self._conns.values())

    def oldest_waiting(self) -> Conn | None:
        """The connection that has waited longest for a request (none a worker is serving)."""
        waiting = [c for c in self.snapshot() if c.state in ("reading", "writing")]
        return min(waiting, key=lambda c: c.waiting_since, default=None)

    def largest_over(self, budget: int) -> Conn | None:
        """The reading connection buffering most, if the reading ones together buffer more
        than ``budget`` bytes of unfinished requests; else ``None``."""
        reading = [c for c in self.snapshot() if c.state == "reading"]
        if sum(len(c.buffer) for c in reading) <= budget:
            return None
        return max(reading, key=lambda c: len(c.buffer))

    def add(self, conn: Conn) -> None:
        with self._changed:
            self._conns[conn.sock] = conn
            self._changed.notify_all()

    def drop(self, conn: Conn) -> None:
        """Mark ``conn`` closed, shut its socket and forget it (the caller holds it)."""
        conn.state = "closed"
        shut(conn.sock)
        with self._changed:
            self._conns.pop(conn.sock, None)
            self._changed.notify_all()

    def wait_for(self, low: int, high: int, timeout: float) -> bool:
        """Wait until ``low <= open connections <= high``; ``False`` on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: low <= len(self._conns) <= high, timeout)

    def call_started(self) -> None:
        with self._lock:
            self._in_flight += 1

    def call_done(self, closing: bool) -> bool:
        """One call less in flight; ``False`` if the I/O loop is over (close the connection)."""
        with self._changed:
            self._in_flight -= 1
            if closing:
                self._changed.notify_all()
            return not self._loop_over

    def loop_ended(self) -> None:
        with self._changed:
            self._loop_over = True
            self._changed.notify_all()

    def wait_drained(self, timeout: float) -> bool:
        """Wait until the I/O loop is over and no call is in flight; ``False`` on timeout."""
        with self._changed:
            return self._changed.wait_for(lambda: self._loop_over and not self._in_flight, timeout)
