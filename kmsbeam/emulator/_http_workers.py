"""The emulator HTTP server's worker threads: at most ``Limits.workers``, started as needed.

A complete request is queued with its connection; an idle worker takes it and runs the
server's call on it. A worker is started while queued calls outnumber the idle workers (an
idle worker may be about to take a call queued before the new one), up to the limit.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from queue import SimpleQueue

from kmsbeam.emulator._http_conn import Conn
from kmsbeam.emulator._service import Request

__all__ = ["Workers"]


class Workers:
    """At most ``size`` daemon threads running ``run(conn, request)`` for each ``submit``."""

    def __init__(self, size: int, run: Callable[[Conn, Request], None]) -> None:
        self._size, self._run = size, run
        self._queue: SimpleQueue[tuple[Conn, Request] | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._idle = 0
        self._pending = 0  # calls queued and not yet taken by a worker

    def __len__(self) -> int:
        """Worker threads started so far."""
        return len(self._threads)

    def submit(self, conn: Conn, request: Request) -> None:
        with self._lock:
            self._pending += 1
            spawn = self._pending > self._idle and len(self._threads) < self._size
        if spawn:
            worker = threading.Thread(target=self._loop, daemon=True,
                                      name=f"kms-emulator-worker-{len(self._threads)}")  # fmt: skip
            self._threads.append(worker)
            worker.start()
        self._queue.put((conn, request))

    def stop(self) -> None:
        """Let every worker end once it has taken the calls queued before (call it last)."""
        for _ in self._threads:
            self._queue.put(None)

    def _loop(self) -> None:
        while True:
            with self._lock:
                self._idle += 1
            item = self._queue.get()
            with self._lock:
                self._idle -= 1
                if item is not None:
                    self._pending -= 1
            if item is None:
                return
            self._run(*item)
