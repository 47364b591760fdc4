"""kmsbeam's SDK client keeps its connections: every key source of an endpoint shares one
client per process, whose pooled HTTP/1.1 connections the emulator keeps alive."""

from __future__ import annotations

import threading

from kmsbeam import open_key_source
from kmsbeam.emulator import EmulatorServer
from kmsbeam.emulator._http import HTTPServer
from tests.alikms.conftest import key_uri

CTX = {"dataset": "customers"}


def _http(server: EmulatorServer) -> HTTPServer:
    assert server._http is not None  # noqa: SLF001
    return server._http  # noqa: SLF001


def test_calls_of_every_source_of_an_endpoint_share_one_connection(server: EmulatorServer) -> None:
    pii, other = open_key_source(key_uri(server)), open_key_source(key_uri(server, "alias/other"))
    for source in (pii, other, pii):
        data_key = source.generate_data_key(CTX)
        assert source.decrypt_data_key(data_key.wrapped, CTX) == data_key.plaintext
        source.describe_key()
    assert _http(server).accepted == 1


def test_threads_open_at_most_one_connection_each_and_keep_them(server: EmulatorServer) -> None:
    source = open_key_source(key_uri(server))
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(5):
                source.generate_data_key(CTX)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    opened = _http(server).accepted
    assert 1 <= opened <= 4
    for _ in range(5):  # one at a time now: the pooled connections serve them
        source.generate_data_key(CTX)
    assert _http(server).accepted == opened
