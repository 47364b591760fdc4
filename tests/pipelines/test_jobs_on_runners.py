"""Every ``kmsbeam`` CLI job end to end on the two non-default local runners.

multi_processing (2 worker processes: pickling, fork, one keystore opened per process) and the
PortableRunner in embed/LOOPBACK mode (the runner-API serialization Flink, Spark and Dataflow
use). Each case runs the job through the CLI entry point, decrypts what it wrote, and checks
that the output equals the input and that nothing went to the dead letters.

Already covered elsewhere and not repeated here: a plain fields-mode JSONL encrypt/decrypt on
both runners (``test_roundtrip.py``: ``test_multi_processing_round_trip``,
``test_portable_runner_round_trip``); this file's fields case adds ``--bind``, ``--context``
and several data keys. In-memory (the default runner) is what every other CLI test uses.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmsbeam.oss import LoopbackOssServer, clear_clients
from tests.pipelines.conftest import EXAMPLES, Run, shard_lines, table_value

RUNNERS = {
    "multi_processing": ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
    "portable_loopback": ["--runner", "PortableRunner", "--job_endpoint", "embed",
                          "--environment_type", "LOOPBACK"],
}  # fmt: skip
N = 200
_buckets = itertools.count()


@pytest.fixture(params=[pytest.param("multi_processing", marks=pytest.mark.slow), "portable_loopback"])
def runner(request: pytest.FixtureRequest) -> list[str]:
    """The Beam options of one runner (the test id names it). multi_processing starts two
    worker processes per pipeline (~15 s a case here): those cases are marked slow."""
    return list(RUNNERS[request.param])


def ok(r: Run) -> Run:
    assert r.code == 0, r.err + r.out
    return r


def no_dead_letters(r: Run, *outputs: Path) -> None:
    """No dead-letter shards were written, and the summary (when it has the row) says 0."""
    for out in outputs:
        assert not (out / "_dead_letters").exists(), sorted((out / "_dead_letters").iterdir())
    try:
        value = table_value(r.out, "dead letters")
    except AssertionError:  # this job's summary has no such row
        return
    assert value == "0", r.out


@pytest.fixture()
def jsonl(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "customers.jsonl"
    path.parent.mkdir()
    lines = (EXAMPLES / "customers.jsonl").read_text(encoding="utf-8").splitlines()[:N]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture()
def csv_file(tmp_path: Path) -> Path:
    path = tmp_path / "in" / "customers.csv"
    path.parent.mkdir(exist_ok=True)
    lines = (EXAMPLES / "customers.csv").read_text(encoding="utf-8").splitlines()[: N + 1]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def sorted_lines(directory: Path) -> list[str]:
    return sorted(shard_lines(directory))


def test_fields_jsonl_with_bind_and_context(cli: Any, runner: list[str], jsonl: Path, tmp_path: Path) -> None:
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    r = ok(cli("encrypt", jsonl, enc, "--fields", "ssn,email,address.zip", "--bind", "id",
               "--key", "local:alias/runners", "--context", "dataset=customers",
               "--max-records-per-key", "50", *runner))  # fmt: skip
    assert table_value(r.out, "records out") == f"{N:,}"
    assert table_value(r.out, "values encrypted") == f"{3 * N:,}"
    assert int(table_value(r.out, "data keys generated")) >= 4  # 50 records per key at most
    no_dead_letters(r, enc)
    text = "".join(shard_lines(enc))
    assert "930-55-5208" not in text and "dana.oneil1@example.com" not in text
    r = ok(cli("decrypt", enc, plain, *runner))
    assert table_value(r.out, "values decrypted") == f"{3 * N:,}"
    no_dead_letters(r, plain)
    assert sorted_lines(plain) == sorted(jsonl.read_text(encoding="utf-8").splitlines())


def test_record_mode_csv(cli: Any, runner: list[str], csv_file: Path, tmp_path: Path) -> None:
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    r = ok(cli("encrypt", csv_file, enc, "--mode", "record", "--keep", "id", *runner))
    assert table_value(r.out, "records out") == f"{N:,}"
    no_dead_letters(r, enc)
    lines = shard_lines(enc)
    assert lines[0] == "id,kmsbeam_record" and "930-55-5208" not in "".join(lines)
    r = ok(cli("decrypt", enc, plain, *runner))
    no_dead_letters(r, plain)
    got, expected = shard_lines(plain), csv_file.read_text(encoding="utf-8").splitlines()
    assert got[0] == expected[0]  # the header, first in its shard
    assert sorted(got[1:]) == sorted(expected[1:])


def _people(n: int = N) -> pa.Table:
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "name": [f"name {i}" for i in range(n)],
        "ssn": [None if i % 9 == 0 else f"900-11-{i:04d}" for i in range(n)],
        "card": [f"4111-0000-0000-{i:04d}" for i in range(n)],
        "score": [i / 7 for i in range(n)],
    })  # fmt: skip


def _read_dir(directory: Path) -> pa.Table:
    shards = sorted(directory.glob("part-*.parquet"))
    assert shards, sorted(directory.iterdir())
    return pa.concat_tables(pq.read_table(s) for s in shards)


@pytest.mark.parametrize("mode", ["pme", "cells"])
def test_parquet_modes(cli: Any, runner: list[str], mode: str, tmp_path: Path) -> None:
    source = tmp_path / "people.parquet"
    pq.write_table(_people(), source)
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    r = ok(cli("encrypt", source, enc, "--columns", "ssn,card", "--parquet-mode", mode,
               "--key", "local:alias/pq", *runner))  # fmt: skip
    no_dead_letters(r, enc)
    for shard in enc.glob("part-*.parquet"):
        assert b"4111-0000-0000-0001" not in shard.read_bytes()
    r = ok(cli("decrypt", enc, plain, *runner))
    no_dead_letters(r, plain)
    got = _read_dir(plain)
    assert got.schema.equals(pq.read_schema(source))
    assert got.sort_by("id").to_pylist() == _people().to_pylist()


@pytest.fixture(scope="module")
def oss_server() -> Iterator[LoopbackOssServer]:
    with LoopbackOssServer(buckets=()) as server:
        yield server


@pytest.fixture()
def bucket(oss_server: LoopbackOssServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh bucket; the environment (inherited by worker processes) points at the server."""
    name = f"runners-{next(_buckets):04d}"
    oss_server.create_bucket(name)
    for var, value in oss_server.environ().items():
        monkeypatch.setenv(var, value)
    monkeypatch.setenv("KMSBEAM_OSS_BACKOFF_SECONDS", "0.001")
    for var in ("ALIBABA_CLOUD_SECURITY_TOKEN", "KMSBEAM_OSS_AUTH_VERSION"):
        monkeypatch.delenv(var, raising=False)
    clear_clients()
    yield name
    clear_clients()


def test_export_to_oss_and_decrypt_back(cli: Any, runner: list[str], jsonl: Path, tmp_path: Path,
                                        oss_server: LoopbackOssServer, bucket: str) -> None:  # fmt: skip
    enc = tmp_path / "enc"
    ok(cli("encrypt", jsonl, enc, "--fields", "ssn", "-q"))  # an encrypted dataset to ship
    (enc / "sub").mkdir()
    (enc / "sub" / "notes.txt").write_bytes(b"x" * 3000 + b"\n")
    dest = f"oss://{bucket}/exports/runners/"
    r = ok(cli("export", str(enc) + "/", dest, "--key", "local:alias/export", *runner))
    assert table_value(r.out, "objects") == "3"
    names = sorted(oss_server.objects(bucket))
    assert "exports/runners/part-00000-of-00001.jsonl.kmsb" in names
    assert "exports/runners/sub/notes.txt.kmsb" in names
    restored = tmp_path / "restored"
    r = ok(cli("decrypt", dest, restored, *runner))
    no_dead_letters(r, restored)
    for p in enc.rglob("*"):
        if p.is_file():
            assert (restored / p.relative_to(enc)).read_bytes() == p.read_bytes(), p
    plain = tmp_path / "plain"  # and the restored dataset still decrypts to the input
    ok(cli("decrypt", restored, plain, "-q"))
    assert sorted_lines(plain) == sorted(jsonl.read_text(encoding="utf-8").splitlines())


def test_rotate_fields_to_a_new_local_key(cli: Any, runner: list[str], jsonl: Path, tmp_path: Path) -> None:
    enc, rot, plain = tmp_path / "enc", tmp_path / "rot", tmp_path / "plain"
    ok(cli("encrypt", jsonl, enc, "--fields", "ssn,email", "--key", "local:alias/old",
           "--max-records-per-key", "50", "-q"))  # fmt: skip
    ok(cli("keys", "create", "--alias", "new"))
    r = ok(cli("rotate", enc, rot, "--to-key", "local:alias/new", "--verify", *runner))
    no_dead_letters(r, rot)
    rotation = json.loads((rot / "_kmsbeam_rotation.json").read_text())
    assert rotation["counts"]["dead_letters"] == 0
    assert rotation["data_keys_moved"] >= 4
    assert json.loads((rot / "_kmsbeam.json").read_text())["key"] == "local:alias/new"
    before = {json.loads(line)["id"]: json.loads(line) for line in shard_lines(enc)}
    after = {json.loads(line)["id"]: json.loads(line) for line in shard_lines(rot)}
    assert sorted(after) == sorted(before)
    assert all(after[i]["ssn"] != before[i]["ssn"] for i in before)  # new wrapped keys
    r = ok(cli("decrypt", rot, plain, *runner))
    no_dead_letters(r, plain)
    assert sorted_lines(plain) == sorted(jsonl.read_text(encoding="utf-8").splitlines())
