"""A small HTTP/1.1 server for the emulator: one I/O thread, a bounded worker pool, deadlines.

One thread owns the waiting: it accepts, reads request heads and bodies without blocking
(``_http_parse``), writes what a response could not send at once, enforces deadlines and
closes idle or late connections. A complete request goes to a worker (``_http_workers``),
which runs the service, sends the answer and hands the connection back to the selector. A
connection (``_http_table`` keeps them) is touched by one thread at a time: the I/O thread
while it waits, one worker while its call runs. So a slow or idle client costs one file
descriptor and its buffer, never a thread, and no lock is ever held across a socket operation.

Bounds (``Limits``):

- at most ``max_connections`` open connections; past it the connection that has waited longest
  for a request is closed (if every one is being served, the newcomer gets a 503 and is closed);
- ``workers`` threads serve calls; a connection has at most one call in flight;
- a request must arrive whole within ``request_timeout`` seconds of its first byte (of the
  connection, for a first request), and its response must be taken within as long;
- an idle keep-alive connection is closed after ``idle_timeout`` seconds;
- unfinished requests hold at most ``MAX_BUFFERED`` bytes together (past it the connection
  holding most is closed).

Malformed HTTP gets an Alibaba JSON error and the connection is closed. ``stop`` closes
every connection, answers nothing more and waits for the calls in flight, so nothing runs
against the keystore after the server closed it.
"""

from __future__ import annotations

import logging
import selectors
import socket
import time

from kmsbeam.emulator._http_conn import Conn, Limits, error_bytes, response_bytes, send_and_close
from kmsbeam.emulator._http_parse import BadRequest, parse_head
from kmsbeam.emulator._http_table import ConnTable
from kmsbeam.emulator._http_workers import Workers
from kmsbeam.emulator._service import Request, Service

__all__ = ["HTTPServer", "Limits"]

SWEEP_SECONDS = 0.25  # how often deadlines are checked
LARGE_BUFFER = 65536  # a connection buffering more makes the I/O thread check the total
MAX_BUFFERED = 64 << 20  # bytes of unfinished requests held at most, all connections together
_log = logging.getLogger("kmsbeam.emulator")


class HTTPServer:
    """Serves ``service`` on ``address`` within ``limits``; ``serve`` runs the I/O loop."""

    def __init__(self, address: tuple[str, int], service: Service, limits: Limits) -> None:
        self.service = service
        self.limits = limits
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        backlog = min(limits.max_connections, 4096)  # the kernel caps it at somaxconn
        self._listener = socket.create_server(address, family=family, backlog=backlog)
        self._listener.setblocking(False)
        self.server_address: tuple[str, int] = self._listener.getsockname()[:2]
        self._wake_r, self._wake_w = socket.socketpair()  # wakes the I/O thread to stop
        for sock in (self._wake_r, self._wake_w):
            sock.setblocking(False)
        self._workers = Workers(limits.workers, self._work)
        self._table = ConnTable()
        self.closing, self.accepted = False, 0  # accepted: connections so far
        self._selector = selectors.DefaultSelector()

    @property
    def open_connections(self) -> int:
        return len(self._table)

    @property
    def threads(self) -> int:
        """Worker threads started so far (at most ``limits.workers``)."""
        return len(self._workers)

    def wait_for_connections(self, *, at_most: int | None = None, at_least: int | None = None,
                             timeout: float) -> bool:  # fmt: skip
        """Wait until at most / at least that many connections are open (for tests, tools)."""
        return self._table.wait_for(at_least or 0, (1 << 62) if at_most is None else at_most, timeout)

    # -- the I/O thread ------------------------------------------------------------------
    def serve(self) -> None:
        """Run the I/O loop until ``stop``."""
        sel = self._selector
        sel.register(self._listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        next_sweep = time.monotonic() + SWEEP_SECONDS
        try:
            while not self.closing:
                for key, events in sel.select(SWEEP_SECONDS):
                    data = key.data
                    if data == "accept":
                        self._accept()
                    elif data == "wake":
                        continue
                    elif data.state in ("closed", "busy"):
                        continue  # changed hands earlier in this round
                    elif events & selectors.EVENT_WRITE:
                        self._write_more(data)
                    else:
                        self._read(data)
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + SWEEP_SECONDS
        finally:
            self._close_all()

    def _accept(self) -> None:
        for _ in range(256):
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of descriptors: the next round tries again
                _log.warning("the emulator could not accept a connection: %s", exc.strerror)
                return
            self.accepted += 1
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if len(self._table) >= self.limits.max_connections and not self._evict():
                send_and_close(sock, error_bytes("ServiceUnavailableTemporary", 503,
                                                   "too many connections; retry later"))  # fmt: skip
                continue
            conn = Conn(sock, str(address[0]), time.monotonic(), self.limits.request_timeout)
            self._table.add(conn)
            self._selector.register(sock, selectors.EVENT_READ, conn)

    def _evict(self) -> bool:
        """Close the connection that has waited longest for a request; ``False`` if none."""
        oldest = self._table.oldest_waiting()
        if oldest is not None:
            self._close(oldest)
        return oldest is not None

    def _read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._close(conn)
            return
        if not conn.buffer and conn.head is None and conn.served:  # a new request starts
            conn.deadline = time.monotonic() + self.limits.request_timeout
        conn.buffer += data
        if len(conn.buffer) > LARGE_BUFFER and not self._within_memory_budget(conn):
            return
        self._advance(conn)

    def _within_memory_budget(self, conn: Conn) -> bool:
        """Past ``MAX_BUFFERED`` bytes of unfinished requests, close the one holding most
        (slow large bodies cannot exhaust memory); ``False`` if that was ``conn``."""
        largest = self._table.largest_over(MAX_BUFFERED)
        if largest is None:
            return True
        self._close(largest)
        return largest is not conn

    def _advance(self, conn: Conn) -> None:
        """Parse what is buffered; hand a complete request to a worker."""
        try:
            if conn.head is None:
                parsed = parse_head(conn.buffer)
                if parsed is None:
                    return
                conn.head, used = parsed
                del conn.buffer[:used]
                if conn.head.expect_continue and len(conn.buffer) < conn.head.length:
                    conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            head = conn.head
            if len(conn.buffer) < head.length:
                return
        except BadRequest as exc:
            self._start_write(conn, error_bytes("InvalidParameter", exc.status, str(exc)), False)
            return
        except OSError:
            self._close(conn)
            return
        body = bytes(conn.buffer[: head.length])
        del conn.buffer[: head.length]
        conn.head = None
        conn.keep_alive = head.keep_alive
        if self.closing:
            self._close(conn)
            return
        self._selector.unregister(conn.sock)
        conn.state = "busy"  # from here on, only the worker touches it
        self._table.call_started()
        self._workers.submit(conn, Request(head.method, head.target, head.headers, body, conn.peer))

    def _start_write(self, conn: Conn, data: bytes, keep: bool) -> None:
        conn.keep_alive = keep
        conn.out = data
        conn.state = "writing"
        conn.deadline = time.monotonic() + self.limits.request_timeout
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write_more(conn)

    def _write_more(self, conn: Conn) -> None:
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._close(conn)
            return
        conn.out = conn.out[sent:]
        if conn.out:
            return
        if not conn.keep_alive or self.closing:
            self._close(conn)
            return
        self._wait_for_request(conn)
        self._selector.modify(conn.sock, selectors.EVENT_READ, conn)
        if conn.buffer:  # a pipelined request already arrived
            self._advance(conn)

    def _wait_for_request(self, conn: Conn) -> None:
        now = time.monotonic()
        conn.state = "reading"
        conn.served += 1
        conn.waiting_since = now
        conn.deadline = now + (self.limits.request_timeout if conn.buffer else self.limits.idle_timeout)

    def _sweep(self, now: float) -> None:
        for conn in self._table.snapshot():
            if conn.state in ("reading", "writing") and conn.deadline <= now:
                self._close(conn)

    def _close(self, conn: Conn) -> None:
        """Close a connection this thread holds (not one a worker is serving)."""
        try:
            self._selector.unregister(conn.sock)
        except (KeyError, ValueError, RuntimeError):
            pass  # not registered, or the selector is closed
        self._table.drop(conn)

    def _close_all(self) -> None:
        self._table.loop_ended()
        for conn in self._table.snapshot():
            if conn.state in ("reading", "writing"):
                self._close(conn)
        self._selector.close()

    # -- worker threads ------------------------------------------------------------------
    def _work(self, conn: Conn, request: Request) -> None:
        keep = False  # False: close the connection
        try:
            response = None if self.closing else self.service.handle(request)
            if response is not None:  # None: stopping, or an injected dropped connection
                conn.keep_alive = conn.keep_alive and not self.closing
                data = response_bytes(response, conn.keep_alive)
                try:
                    sent = conn.sock.send(data)
                except (BlockingIOError, InterruptedError):
                    sent = 0
                conn.out = data[sent:]  # the I/O thread writes the rest
                keep = conn.keep_alive or bool(conn.out)
        except OSError:
            pass  # the client is gone; the call is audited all the same
        except Exception:
            _log.warning("a connection from %s failed", conn.peer, exc_info=True)
        self._hand_back(conn, keep)

    def _hand_back(self, conn: Conn, keep: bool) -> None:
        """Give the connection back to the I/O thread's selector, or close it."""
        if self._table.call_done(self.closing) and keep:
            if conn.out or conn.buffer:  # the I/O thread sends the rest, or reads what
                conn.state = "writing"   # was pipelined, as soon as the socket is writable
                conn.deadline = time.monotonic() + self.limits.request_timeout
                events = selectors.EVENT_WRITE
            else:
                self._wait_for_request(conn)
                events = selectors.EVENT_READ
            try:  # epoll and the key map are safe to change while the I/O thread selects
                self._selector.register(conn.sock, events, conn)
                return  # the I/O thread owns it now: not one more touch here
            except (KeyError, ValueError, RuntimeError, OSError):
                pass  # stopped meanwhile (the selector is closed) or closed by stop
        self._table.drop(conn)

    # -- stopping -------------------------------------------------------------------------
    def stop(self, timeout: float) -> bool:
        """Stop serving: close connections, answer nothing more, wait ``timeout`` s for the
        calls in flight; ``True`` if none is left."""
        self.closing = True
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass
        drained = self._table.wait_drained(timeout)
        self._workers.stop()  # no worker starts once the loop is over
        return drained

    def server_close(self) -> None:
        for sock in (self._listener, self._wake_r, self._wake_w):
            sock.close()
