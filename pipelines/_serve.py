"""Serving a loopback server from the CLI until Ctrl-C or SIGTERM (``kmsbeam emulator serve``,
``kmsbeam oss serve``): one loop for both."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from typing import Protocol

__all__ = ["serve_until_stopped"]


class _Server(Protocol):
    def start(self) -> object: ...

    def stop(self) -> None: ...


def serve_until_stopped(server: _Server, announce: Callable[[], None],
                        stop: threading.Event | None = None) -> None:  # fmt: skip
    """Start ``server``, ``announce`` it (where it listens), and serve until Ctrl-C, SIGTERM
    (caught on the main thread only) or ``stop`` (for tests); the server stops however it ends."""
    stop = stop or threading.Event()
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        server.start()
        announce()
        try:
            while not stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
    finally:
        server.stop()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
