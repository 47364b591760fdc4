"""The rotation journal (``kmsbeam.rotation.journal``) and ``Rewrapper`` resuming from it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from kmsbeam import DataKeyCache, DataKeyPolicy, FieldDecryptor, FieldEncryptor
from kmsbeam.formats.envelope import FIELD_V1, parse
from kmsbeam.kms import KeyStore, KmsEngine
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.formats.values import rewrap_paths
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.rotation.rewrap import RESUMED, REWRAPPED, Rewrapper, record_paths
from kmsbeam.rotation.journal import JournalWriter, journal_writer, read_journal

CTX = {"dataset": "crm"}
RECORDS = [{"id": i, "ssn": f"123-45-{i:04d}"} for i in range(12)]


@pytest.fixture()
def source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalKeySource:
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path / "home"))
    return LocalKeySource("local:alias/pii", create=True)


def _dataset(source: LocalKeySource) -> tuple[list[dict[str, Any]], LocalKeySource]:
    enc = FieldEncryptor(["ssn"], source, context=CTX, policy=DataKeyPolicy(max_records=4))
    encrypted = [enc.encrypt(r) for r in RECORDS]  # 3 data keys
    engine = KmsEngine(KeyStore(source.home))
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    return encrypted, LocalKeySource("local:alias/pii")


def test_a_crashed_run_resumes_without_calls_for_journaled_keys(source: LocalKeySource, tmp_path: Path) -> None:
    encrypted, target = _dataset(source)
    paths, fmt = record_paths("fields", ["ssn"], "")
    journal = tmp_path / "journal"
    first = Rewrapper(target, context=CTX, cache=DataKeyCache(), on_moved=JournalWriter(journal).moved)
    done = [rewrap_paths(r, paths, fmt, first) for r in encrypted[:6]]  # then the "crash"
    assert first.calls == 2
    version = first.check_target()
    known = read_journal(journal, version)
    assert len(known) == 2 and all(wrapped_key_version(w) == version for w in known.values())

    calls: list[int] = []
    second = Rewrapper(target, context=CTX, cache=DataKeyCache(), known=known,
                       on_call=lambda: calls.append(1))  # fmt: skip
    again = [rewrap_paths(r, paths, fmt, second) for r in encrypted]
    assert len(calls) == 1  # only the data key the crashed run never reached
    assert second.counts[RESUMED] == 8 and second.counts[REWRAPPED] == 4  # keys 1-2; key 3
    assert again[:6] == done  # the same new headers as the first run wrote
    for old, new in zip(encrypted, again):
        assert parse(old["ssn"], fmt).body == parse(new["ssn"], fmt).body
    back = FieldDecryptor(["ssn"], target, context=CTX, cache=DataKeyCache())
    assert [back.decrypt(r) for r in again] == RECORDS


def test_a_journal_for_another_target_version_is_ignored(source: LocalKeySource, tmp_path: Path) -> None:
    encrypted, target = _dataset(source)
    paths, fmt = record_paths("fields", ["ssn"], "")
    rewrap_paths(encrypted[0], paths, fmt, Rewrapper(target, context=CTX, cache=DataKeyCache(),
                                                     on_moved=JournalWriter(tmp_path / "j").moved))
    assert read_journal(tmp_path / "j", "another-version") == {}
    assert read_journal(tmp_path / "missing", "v") == {}


def test_torn_and_foreign_lines_are_skipped(tmp_path: Path) -> None:
    writer = JournalWriter(tmp_path / "j")
    writer.moved(b"k" * 16, "v1", "v2", b"\x02wrapped")
    (shard,) = (tmp_path / "j").glob("journal-*.jsonl")
    with open(shard, "a", encoding="utf-8") as f:
        f.write('{"k": "zz", "kmsbeam_journal": 1, "to": "v2", "wrapped": "AA"}\n[1, 2]\n'
                '{"from": "v1", "k": "%s", "kmsbeam_journal": 2, "to": "v2", "wrapped": "AA=="}\n'
                '{"k": "6b6b' % ("6c" * 16))  # another version; a torn last line
    assert read_journal(tmp_path / "j", "v2") == {b"k" * 16: b"\x02wrapped"}
    assert writer.lines == 1 and "wrapped" not in repr(writer)


def test_each_process_appends_to_its_own_file(tmp_path: Path) -> None:
    journal_writer(tmp_path / "j").moved(b"a" * 16, "v1", "v2", b"\x02one")
    pid = os.fork()
    if pid == 0:  # the child: a fresh writer, a file of its own
        try:
            journal_writer(tmp_path / "j").moved(b"b" * 16, "v1", "v2", b"\x02two")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    journal_writer(tmp_path / "j").moved(b"c" * 16, "v1", "v2", b"\x02three")
    assert len(list((tmp_path / "j").glob("journal-*.jsonl"))) == 2
    assert set(read_journal(tmp_path / "j", "v2")) == {b"a" * 16, b"b" * 16, b"c" * 16}


def test_values_of_unknown_keys_are_still_rewrapped(source: LocalKeySource) -> None:
    encrypted, target = _dataset(source)
    paths, fmt = record_paths("fields", ["ssn"], "")
    rw = Rewrapper(target, context=CTX, cache=DataKeyCache(), known={b"x" * 16: b"\x01bogus"})
    out = [rewrap_paths(r, paths, fmt, rw) for r in encrypted]
    assert rw.counts[RESUMED] == 0 and rw.calls == 3
    assert all(parse(r["ssn"], FIELD_V1).wrapped != parse(o["ssn"], FIELD_V1).wrapped
               for r, o in zip(encrypted, out))  # fmt: skip


def test_the_journal_line_in_format_md_reads_and_is_written(tmp_path: Path) -> None:
    spec = (Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md").read_text(encoding="utf-8")
    section = spec.split("## Rotation journal v1", 1)[1]
    line = next(x for x in section.splitlines() if x.startswith('{"from"'))
    (tmp_path / "j").mkdir()
    (tmp_path / "j" / "journal-vector.jsonl").write_text(line + "\n", encoding="utf-8")
    k, wrapped = bytes.fromhex("00112233445566778899aabbccddeeff"), b"\x02" + b"w" * 8
    assert read_journal(tmp_path / "j", "b1b2c3d4-0000-4000-8000-000000000002") == {k: wrapped}
    JournalWriter(tmp_path / "k").moved(k, "a1b2c3d4-0000-4000-8000-000000000001",
                                        "b1b2c3d4-0000-4000-8000-000000000002", wrapped)  # fmt: skip
    assert next((tmp_path / "k").glob("journal-*.jsonl")).read_text(encoding="utf-8") == line + "\n"
