"""Credentials from the environment (static and STS), secrets kept out of every repr, message,
traceback and pickle, one SDK client per endpoint per process (fork-safe), threads."""

from __future__ import annotations

import multiprocessing
import os
import pickle
import traceback
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from kmsbeam import AccessDeniedError, ConfigurationError, open_key_source
from kmsbeam.alikms import AlibabaKmsKeySource, RetryPolicy, clear_clients
from kmsbeam.alikms._client import SdkClient, shared_client
from kmsbeam.emulator import EmulatorServer
from tests.alikms.conftest import ADMIN, NO_DECRYPT, STS, key_uri, make_source, use_credentials

SECRETS = (ADMIN[1], NO_DECRYPT[1], STS[1], STS[2])


def assert_no_secret(*texts: str | bytes) -> None:
    for text in texts:
        raw = text.encode() if isinstance(text, str) else text
        for secret in SECRETS:
            assert secret.encode() not in raw


def test_credentials_come_from_the_environment(
    server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrapped = open_key_source(key_uri(server)).generate_data_key().wrapped
    assert shared_client(open_key_source(key_uri(server)).endpoint).credentials == "environment"
    use_credentials(monkeypatch, *NO_DECRYPT)  # the next client reads the new variables
    with pytest.raises(AccessDeniedError, match=f"access key {NO_DECRYPT[0]} is not allowed"):
        open_key_source(key_uri(server)).decrypt_data_key(wrapped)
    use_credentials(monkeypatch, *ADMIN)
    assert len(open_key_source(key_uri(server)).decrypt_data_key(wrapped)) == 32


def test_sts_credentials_send_the_security_token(
    server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_credentials(monkeypatch, *STS)
    source = make_source(server)
    key = source.generate_data_key({"a": "b"})
    assert source.decrypt_data_key(key.wrapped, {"a": "b"}) == key.plaintext
    assert shared_client(source.endpoint).credentials == "environment (STS token)"
    use_credentials(monkeypatch, STS[0], STS[1])  # the token left out
    with pytest.raises(AccessDeniedError) as info:
        make_source(server).generate_data_key()
    assert (info.value.code or "").startswith("InvalidSecurityToken")


def test_half_an_access_key_is_a_configuration_error(
    server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("ALIBABA_CLOUD_ACCESS_KEY_ID")
    clear_clients()
    with pytest.raises(ConfigurationError, match="ALIBABA_CLOUD_ACCESS_KEY_ID is not set") as info:
        AlibabaKmsKeySource(key_uri(server))
    assert_no_secret(str(info.value))


def test_no_secret_in_repr_str_pickle_or_errors(
    server: EmulatorServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_credentials(monkeypatch, *STS)
    source = make_source(server)
    client = shared_client(source.endpoint)
    assert_no_secret(repr(source), str(source), repr(client), repr(source.endpoint))
    assert_no_secret(repr(source.__dict__), repr(vars(source.endpoint)))
    data = pickle.dumps(source)
    assert_no_secret(data)
    with pytest.raises(TypeError, match="never pickles"):
        pickle.dumps(client)
    copy = pickle.loads(data)
    assert isinstance(copy, AlibabaKmsKeySource) and copy.uri == source.uri
    key = copy.generate_data_key()
    assert source.decrypt_data_key(key.wrapped) == key.plaintext
    # errors, with their whole chain of SDK exceptions, name no secret either
    use_credentials(monkeypatch, STS[0], "a-wrong-secret", STS[2])
    failures: list[BaseException] = []
    garbage = b"\x02" + b"x" * 80
    once = make_source(server, max_attempts=1)
    for call in (make_source(server).generate_data_key, lambda: once.decrypt_data_key(garbage)):
        with pytest.raises(Exception) as info:
            call()
        failures.append(info.value)
    for failure in failures:
        assert_no_secret("".join(traceback.format_exception(failure)), repr(failure))
        assert_no_secret(pickle.dumps(failure))


def test_an_explicit_retry_policy_travels_in_the_pickle(server: EmulatorServer) -> None:
    source = AlibabaKmsKeySource(key_uri(server), retry=RetryPolicy(max_attempts=2))
    assert pickle.loads(pickle.dumps(source)).retry_policy == RetryPolicy(max_attempts=2)


def test_one_client_per_endpoint_per_process(server: EmulatorServer) -> None:
    a = open_key_source(key_uri(server, "alias/pii"))
    b = open_key_source(key_uri(server, "alias/other"))
    assert isinstance(a, AlibabaKmsKeySource) and isinstance(b, AlibabaKmsKeySource)
    assert a._sdk() is b._sdk() is shared_client(a.endpoint)
    assert isinstance(a._sdk(), SdkClient) and a._sdk().pid == os.getpid()
    remote = AlibabaKmsKeySource("alibaba-kms://cn-hangzhou/alias/pii")
    assert remote._sdk() is not a._sdk()


def _in_child(source: AlibabaKmsKeySource, parent_client: SdkClient, uri: str, out: Any) -> None:
    try:
        inherited = source._sdk()  # the parent's source object, used in the child
        fresh = open_key_source(uri)  # the cache was emptied at fork
        assert isinstance(fresh, AlibabaKmsKeySource)
        key = source.generate_data_key({"who": "child"})
        ok = fresh.decrypt_data_key(key.wrapped, {"who": "child"}) == key.plaintext
        out.put((ok, inherited is not parent_client, inherited.pid == os.getpid(),
                 fresh._sdk() is inherited, fresh is not source))  # fmt: skip
    except BaseException as exc:  # report, do not hang the parent
        out.put(repr(exc))


def test_a_forked_child_builds_its_own_client(server: EmulatorServer) -> None:
    uri = key_uri(server)
    source = open_key_source(uri)
    assert isinstance(source, AlibabaKmsKeySource)
    key = source.generate_data_key()  # the parent's client now has a pooled connection
    parent_client = source._sdk()
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_in_child, args=(source, parent_client, uri, out))
    child.start()
    result = out.get(timeout=60)
    child.join(60)
    assert result == (True, True, True, True, True) and child.exitcode == 0
    assert source._sdk() is parent_client  # the parent keeps its own
    assert source.decrypt_data_key(key.wrapped) == key.plaintext


def test_one_source_shared_by_threads(server: EmulatorServer) -> None:
    source = open_key_source(key_uri(server))

    def work(i: int) -> bool:
        context = {"thread": str(i)}
        key = source.generate_data_key(context)
        return source.decrypt_data_key(key.wrapped, context) == key.plaintext

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(work, range(48))) == [True] * 48
