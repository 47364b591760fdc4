"""Data never picks a key source: key URIs in manifests and object headers are only hints.

A dataset directory that ships a shared library and names it as a PKCS#11 ``module-path`` (in
``_kmsbeam.json``, in an object header, in an export or rotation manifest) must never be
loaded by ``decrypt``, ``rotate --dry-run``, ``cat`` or ``inspect``; an object header naming
another host and port must never make a reader connect there. Each refusal is one
configuration error (exit 2) that says what to configure and never repeats the data's URI.
"""

from __future__ import annotations

import io
import json
import shutil
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from kmsbeam.emulator import EmulatorServer

from kmsbeam import ConfigurationError, open_key_source
from kmsbeam.formats.objects import ObjectReader, ObjectWriter, read_header
from kmsbeam.keys.trust import KEY_SOURCES_ENV, UntrustedKeySourceError
from tests.pipelines.conftest import shard_lines
from tests.pipelines.untrusted_helpers import build_marker_module, evil_uri

SENTENCE = KEY_SOURCES_ENV  # the one refusal names what to configure


@pytest.fixture()
def evil(tmp_path: Path) -> tuple[Path, Path]:
    """(the library inside a dataset-like directory, the marker its constructor writes)."""
    directory = tmp_path / "shipped"
    directory.mkdir()
    marker = tmp_path / "LOADED"
    return build_marker_module(directory, marker), marker


def _point_manifest_at(enc: Path, uri: str, **extra: object) -> None:
    path = enc / "_kmsbeam.json"
    manifest = json.loads(path.read_text())
    manifest.update(key=uri, **extra)
    path.write_text(json.dumps(manifest))


def _refused(r, *secrets: str) -> None:  # type: ignore[no-untyped-def]
    assert r.code == 2, r.out + r.err
    assert SENTENCE in r.err and "--key" in r.err and "Traceback" not in r.err
    for text in secrets:
        assert text not in r.out + r.err


def test_a_dataset_manifest_naming_a_module_is_never_loaded(cli, customers: Path, tmp_path: Path,
                                                            evil: tuple[Path, Path]) -> None:  # type: ignore[no-untyped-def]
    module, marker = evil
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn,email").code == 0
    shutil.copy(module, enc / "libevil.so")  # shipped inside the dataset
    uri = evil_uri(enc / "libevil.so")
    _point_manifest_at(enc, uri)
    (enc / "_kmsbeam_rotation.json").write_text(json.dumps(
        {"kmsbeam_rotation": 1, "target_key": uri, "target_version": "v"}))  # fmt: skip
    _refused(cli("decrypt", enc, tmp_path / "plain"), "libevil", str(enc))
    _refused(cli("rotate", enc, tmp_path / "rot", "--dry-run"), "libevil")
    _refused(cli("rotate", enc, tmp_path / "rot", "--dry-run", "--trust-manifest"), "libevil")
    _refused(cli("rotate", enc, tmp_path / "rot"), "libevil")
    assert not marker.exists()


def test_the_quickstart_needs_no_options(cli, customers: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    assert cli("encrypt", customers, enc, "--fields", "ssn,email").code == 0
    r = cli("decrypt", enc, plain)
    assert r.code == 0, r.err
    assert len(shard_lines(plain)) == len(customers.read_text().splitlines())


def test_a_pme_manifest_naming_a_module_is_never_loaded(cli, tmp_path: Path,
                                                        evil: tuple[Path, Path]) -> None:  # type: ignore[no-untyped-def]
    import pyarrow as pa
    import pyarrow.parquet as pq

    module, marker = evil
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({"id": [1, 2], "ssn": ["a", "b"]}), src)
    enc = tmp_path / "enc"
    r = cli("encrypt", src, enc, "--columns", "ssn", "--parquet-mode", "pme")
    assert r.code == 0, r.err
    uri = evil_uri(module)
    _point_manifest_at(enc, uri, footer_key=uri, column_keys={"ssn": uri})
    _refused(cli("decrypt", enc, tmp_path / "plain"), "libevil")
    _refused(cli("rotate", enc, tmp_path / "rot", "--dry-run"), "libevil")
    r = cli("inspect", enc)
    assert r.code == 0, r.err
    assert not marker.exists()


def _tampered_object(tmp_path: Path, key_uri: str) -> Path:
    """An object written under a local key whose header was rewritten to name ``key_uri``."""
    source = open_key_source("local:alias/objects", create=True)
    buf = io.BytesIO()
    with ObjectWriter(buf, source, context={"job": "t"}, close_raw=False) as w:
        w.write(b"secret rows\n" * 100)
    data = buf.getvalue()
    header, size = read_header(io.BytesIO(data))
    path = tmp_path / "obj.kmsb"
    path.write_bytes(header.with_wrapped(header.wrapped, key_uri).to_bytes() + data[size:])
    return path


def test_an_object_header_naming_a_module_is_never_loaded(cli, tmp_path: Path,
                                                           evil: tuple[Path, Path]) -> None:  # type: ignore[no-untyped-def]
    module, marker = evil
    obj = _tampered_object(tmp_path, evil_uri(module))
    _refused(cli("cat", obj), "libevil")
    with pytest.raises(UntrustedKeySourceError) as caught, obj.open("rb") as raw:
        ObjectReader(raw)
    assert "libevil" not in str(caught.value) and "pkcs11" in str(caught.value)
    # an export manifest next to the object naming the module: refused the same way
    (tmp_path / "_kmsbeam.json").write_text(json.dumps(
        {"kmsbeam_export": 1, "key": evil_uri(module), "context": {}, "objects": []}))  # fmt: skip
    _refused(cli("cat", obj), "libevil")
    assert not marker.exists()


@pytest.fixture()
def listener() -> Iterator[tuple[int, list[int]]]:
    """A loopback port that counts the connections it accepts (and closes them)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    sock.settimeout(0.1)  # accept() wakes to see stop: closing a socket does not wake it on Linux
    accepted: list[int] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield sock.getsockname()[1], accepted
    stop.set()
    sock.close()
    thread.join(timeout=10)


def test_an_object_header_naming_another_port_opens_no_connection(
    cli, tmp_path: Path, listener: tuple[int, list[int]], monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    port, accepted = listener
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "etl")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "etl-secret")
    obj = _tampered_object(tmp_path, f"kms-emulator://127.0.0.1:{port}/alias/pii")
    messages = []
    with obj.open("rb") as raw, pytest.raises(ConfigurationError) as caught:
        ObjectReader(raw, where=str(obj))
    messages.append(str(caught.value))
    r = cli("cat", obj)
    assert r.code == 2
    messages.append(r.err)
    # configured: another emulator port does not make the hint trusted either
    monkeypatch.setenv(KEY_SOURCES_ENV, "kms-emulator://127.0.0.1:1/alias/pii")
    r = cli("cat", obj)
    assert r.code == 2
    messages.append(r.err)
    assert accepted == []
    for message in messages:
        assert str(port) not in message and "alias/pii" not in message
        assert SENTENCE in message


@pytest.fixture()
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[EmulatorServer]:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "etl")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "etl-secret")
    with EmulatorServer(tmp_path / "kms", {"etl": "etl-secret"}) as server:
        server.engine.create_alias("alias/pii", server.engine.create_key("pii").key_id)
        server.engine.create_alias("alias/other", server.engine.create_key("other").key_id)
        yield server


def test_a_hint_matching_a_configured_emulator_works(cli, customers: Path, tmp_path: Path, emulator,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", key).code == 0
    _refused(cli("decrypt", enc, tmp_path / "p0"))  # the emulator is not configured
    r = cli("decrypt", enc, tmp_path / "p1", "--key", key)
    assert r.code == 0, r.err
    # the same endpoint configured (another key of it): the manifest's hint resolves to it
    monkeypatch.setenv(KEY_SOURCES_ENV, f"kms-emulator://{emulator.endpoint}/alias/other")
    r = cli("decrypt", enc, tmp_path / "p2")
    assert r.code == 0, r.err
    assert len(shard_lines(tmp_path / "p2")) == len(customers.read_text().splitlines())
    # objects: the header's hint on the configured endpoint
    buf = io.BytesIO()
    with ObjectWriter(buf, key, close_raw=False) as w:
        w.write(b"rows\n")
    obj = tmp_path / "o.kmsb"
    obj.write_bytes(buf.getvalue())
    with obj.open("rb") as raw, ObjectReader(raw) as reader:
        assert reader.read() == b"rows\n"
    monkeypatch.delenv(KEY_SOURCES_ENV)
    with obj.open("rb") as raw, pytest.raises(UntrustedKeySourceError):
        ObjectReader(raw)
    with obj.open("rb") as raw, ObjectReader(raw, key_sources=[key]) as reader:
        assert reader.read() == b"rows\n"


def test_every_flipped_byte_of_a_header_uri_is_one_uniform_error(
    tmp_path: Path, listener: tuple[int, list[int]]
) -> None:
    """The reviewer's experiment: flip each byte of the key URI in an object header."""
    port, accepted = listener
    uri = f"kms-emulator://127.0.0.1:{port}/alias/pii"
    obj = _tampered_object(tmp_path, uri)
    data = obj.read_bytes()
    start = data.index(uri.encode())
    messages = set()
    for i in range(len(uri)):
        for flip in (0x01, 0x20):
            tampered = bytearray(data)
            tampered[start + i] ^= flip
            text = bytes(tampered[start : start + len(uri)]).decode("latin-1")
            try:
                ObjectReader(io.BytesIO(bytes(tampered)))
            except UntrustedKeySourceError as exc:
                assert text not in str(exc) and str(port) not in str(exc)
                messages.add(str(exc))
            except Exception as exc:  # not UTF-8, or no longer a header: the opaque error
                assert text not in str(exc) and str(port) not in str(exc)
            else:
                raise AssertionError(f"byte {i} flipped was accepted")
    assert accepted == []
    assert len(messages) <= 2  # "a kms-emulator key source" or "a key source" (another scheme)
