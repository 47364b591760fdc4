"""Dead letters are for bad records: a key-source failure fails the bundle in every DoFn.

Each transform runs ``.with_dead_letters()`` against a key that is disabled (or a source that
cannot be opened): the pipeline must raise one sentence naming the failure, and no record may
reach the dead-letter output (on encrypt that would be cleartext that was never encrypted).
Bad records next to good ones still become dead letters.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pytest

from kmsbeam import (
    AccessDeniedError,
    FieldEncryptor,
    KeyDisabledError,
    KeyNotFoundError,
    RecordEncryptor,
    shared_cache,
)
from kmsbeam.kms import KeyStore, KmsEngine
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.formats.parquet import CellEncryptor
from kmsbeam.transforms import (
    DecryptCells,
    DecryptFields,
    DecryptObjects,
    DecryptRecords,
    EncryptCells,
    EncryptFields,
    EncryptObjects,
    EncryptRecords,
    RewrapDataKeys,
)
from tests.transforms.test_transforms import Pipeline

KEY = "local:alias/ks"
CTX = {"ds": "t"}
_SINKS: dict[str, list[Any]] = {"good": [], "dead": []}


def _collect(element: Any, sink: str) -> None:
    _SINKS[sink].append(element)  # the in_memory FnApiRunner runs in this process


def run(transform: Any, inputs: list[Any]) -> tuple[list[Any], list[Any]]:
    for sink in _SINKS.values():
        sink.clear()
    p = Pipeline()
    out, letters = p | beam.Create(inputs, reshuffle=False) | transform.with_dead_letters()
    out | "Good" >> beam.Map(_collect, "good")
    letters | "Dead" >> beam.Map(_collect, "dead")
    p.run().wait_until_finish()
    return list(_SINKS["good"]), list(_SINKS["dead"])


def records(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "ssn": f"{i:09d}", "email": f"u{i}@x.io"} for i in range(n)]


def table(n: int) -> pa.Table:
    return pa.Table.from_pylist(records(n))


def disable() -> None:
    engine = KmsEngine(KeyStore(LocalKeySource(KEY).home))
    engine.disable_key("alias/ks")
    shared_cache().clear()


def fails_with_no_dead_letters(transform: Any, inputs: list[Any], error: type[Exception],
                               words: str) -> None:  # fmt: skip
    with pytest.raises(error, match=words) as info:
        run(transform, inputs)
    assert not _SINKS["dead"], "a key-source failure is never a dead letter"
    assert "@x.io" not in str(info.value) and "000000001" not in str(info.value)
    assert info.value.__cause__ is None


@pytest.mark.parametrize("make", [
    lambda: EncryptFields(KEY, ["ssn", "email"], context=CTX),
    lambda: EncryptRecords(KEY, context=CTX),
], ids=["EncryptFields", "EncryptRecords"])  # fmt: skip
def test_encrypt_with_a_disabled_key_fails_the_job(make: Any) -> None:
    LocalKeySource(KEY, create=True)
    disable()
    fails_with_no_dead_letters(make(), records(50), KeyDisabledError, "key disabled")


def test_encrypt_cells_with_a_disabled_key_fails_the_job() -> None:
    LocalKeySource(KEY, create=True)
    disable()
    fails_with_no_dead_letters(EncryptCells(KEY, ["ssn"], context=CTX), [table(50)], KeyDisabledError,
                               "EncryptCells: key disabled")  # fmt: skip


def test_decrypt_with_a_disabled_key_fails_the_job_in_every_decrypting_dofn() -> None:
    source = LocalKeySource(KEY, create=True)
    fields = [FieldEncryptor(["ssn", "email"], source, context=CTX).encrypt(r) for r in records(40)]
    whole = [RecordEncryptor(source, context=CTX).encrypt(r) for r in records(40)]
    cells = CellEncryptor(["ssn"], source, context=CTX).encrypt_table(table(40))
    disable()
    for transform, inputs in [(DecryptFields(KEY, ["ssn", "email"], context=CTX), fields),
                              (DecryptRecords(KEY, context=CTX), whole),
                              (DecryptCells(KEY, ["ssn"], context=CTX), [cells])]:  # fmt: skip
        fails_with_no_dead_letters(transform, inputs, KeyDisabledError, "key disabled")


def test_bad_records_still_go_to_the_dead_letters_beside_good_ones() -> None:
    source = LocalKeySource(KEY, create=True)
    good = [FieldEncryptor(["ssn"], source, context=CTX).encrypt(r) for r in records(20)]
    bad = [{"id": 98, "email": "x"}, {"id": 99, "ssn": "not a value"}]
    out, dead = run(DecryptFields(KEY, ["ssn"], context=CTX), good + bad)
    assert len(out) == 20
    assert sorted(d["reason"] for d in dead) == [
        "malformed value (field ssn): not a kmsbeam encrypted value", "missing field: ssn"]


def test_rewrap_with_the_old_key_disabled_fails_the_job() -> None:
    source = LocalKeySource(KEY, create=True)
    encrypted = [FieldEncryptor(["ssn"], source, context=CTX).encrypt(r) for r in records(30)]
    engine = KmsEngine(KeyStore(source.home))
    old = engine.describe_key("alias/ks").key_id
    engine.update_alias("alias/ks", engine.create_key("B").key_id)
    engine.disable_key(old)
    fails_with_no_dead_letters(RewrapDataKeys(KEY, ["ssn"], context=CTX), encrypted, KeyDisabledError,
                               "key disabled")  # fmt: skip


def test_a_source_that_cannot_be_opened_fails_the_job() -> None:
    LocalKeySource(KEY, create=True)  # a keystore, without alias/nope
    fails_with_no_dead_letters(DecryptFields("local:alias/nope", ["ssn"]), records(5), KeyNotFoundError,
                               "DecryptFields: key not found")  # fmt: skip


def test_objects_with_a_disabled_key_fail_the_job_and_a_missing_file_is_a_dead_letter(tmp_path: Path) -> None:
    LocalKeySource(KEY, create=True)
    src = tmp_path / "a.txt"
    src.write_text("secret object\n")
    out, dead = run(EncryptObjects(KEY, str(tmp_path / "enc")), [str(src), str(tmp_path / "missing.txt")])
    assert len(out) == 1 and len(dead) == 1 and dead[0]["record"].endswith("missing.txt")
    disable()
    fails_with_no_dead_letters(EncryptObjects(KEY, str(tmp_path / "enc2")), [str(src)], KeyDisabledError,
                               "key disabled")  # fmt: skip
    fails_with_no_dead_letters(DecryptObjects(KEY, str(tmp_path / "plain")),
                               [str(tmp_path / "enc" / "a.txt.kmsb")], KeyDisabledError, "key disabled")
    assert not (tmp_path / "plain" / "a.txt").exists()



# -- failed calls are remembered: one per data key per worker (emulator audit log) --------------
WRITER, READER = ("writer", "writer-secret-51aa"), ("reader", "reader-secret-07bc")


def _deny(action: str) -> dict[str, Any]:
    return {"Statement": [{"Effect": "Allow", "Action": "kms:*", "Resource": "*"},
                          {"Effect": "Deny", "Action": f"kms:{action}", "Resource": "*"}]}  # fmt: skip


def _as(monkeypatch: pytest.MonkeyPatch, who: tuple[str, str]) -> None:
    from kmsbeam.alikms import clear_clients
    from kmsbeam.keys.registry import clear_key_source_cache

    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", who[0])
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", who[1])
    monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
    clear_clients()
    clear_key_source_cache()
    shared_cache().clear()


@pytest.mark.parametrize("denied", ["Decrypt", "ReEncrypt"])
def test_a_denied_unwrap_or_rewrap_is_one_call_per_data_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             denied: str) -> None:  # fmt: skip
    import json

    from kmsbeam import open_key_source
    from kmsbeam.emulator import AccessKey, EmulatorServer

    keys = [AccessKey(*WRITER), AccessKey(*READER, policy=_deny(denied))]
    with EmulatorServer(tmp_path / "kms", keys, rotation_check_seconds=None) as server:
        server.engine.ensure_alias("alias/pii")
        key = f"kms-emulator://{server.endpoint}/alias/pii"
        _as(monkeypatch, WRITER)
        enc = FieldEncryptor(["ssn", "email"], open_key_source(key), context=CTX)
        encrypted = [enc.encrypt(r) for r in records(1000)]  # one data key
        if denied == "ReEncrypt":
            server.engine.update_alias("alias/pii", server.engine.create_key("B").key_id)
        _as(monkeypatch, READER)
        make = (lambda: DecryptFields(key, ["ssn", "email"], context=CTX)) if denied == "Decrypt" else (
            lambda: RewrapDataKeys(key, ["ssn", "email"], context=CTX))  # fmt: skip
        fails_with_no_dead_letters(make(), encrypted, AccessDeniedError, "access denied")
        fails_with_no_dead_letters(make(), encrypted, AccessDeniedError, "access denied")  # remembered
        events = [json.loads(x) for x in server.audit.path.read_text().splitlines()]
    described = ("DescribeKey", "ListAliasesByKeyId")  # the rewrap target, checked on the driver
    by_reader = [(e["eventName"], e["outcome"]) for e in events
                 if e["userIdentity"]["accessKeyId"] == READER[0] and e["eventName"] not in described]  # fmt: skip
    assert by_reader == [(denied, "error")]  # 1,000 records, two runs: one call in all
