"""PME through kmsbeam key sources, without Beam: round trips, KMS-call counts, bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmsbeam import (
    AuthenticationError,
    ConfigurationError,
    FormatError,
    KeyDisabledError,
    open_key_source,
)
from kmsbeam.keys.local import shared_engine
from kmsbeam.formats.parquet import (
    PmeDecryption,
    PmeEncryption,
    crypto_factory,
    inspect_parquet,
    iter_row_group,
    key_material_path,
    kms_call_totals,
    master_key_id,
    open_parquet,
    rotate_key_material,
)
from tests.parquet.conftest import events


def write(path: Path, table: pa.Table, enc: PmeEncryption) -> None:
    pq.write_table(table, path, encryption_properties=enc.properties(table.schema, str(path)),
                   row_group_size=400)  # fmt: skip


def read(path: Path, dec: PmeDecryption | None, columns: list[str] | None = None) -> pa.Table:
    pf = open_parquet(str(path), path.name, dec, str(path))
    batches = [b for i in range(pf.num_row_groups) for b in iter_row_group(pf, i, path.name, columns)]
    return pa.Table.from_batches(batches)


@pytest.fixture(autouse=True)
def fresh_pme_caches() -> None:
    """Each test starts without cached KEKs (pyarrow keeps them per process)."""
    crypto_factory().remove_cache_entries_for_all_tokens()


def encryption(keys: dict[str, str], **options: object) -> PmeEncryption:
    return PmeEncryption(keys["foot"], {"ssn": keys["pii"], "card": keys["pci"], "contact": keys["pii"]},
                         **options)  # type: ignore[arg-type]  # fmt: skip


def reader(keys: dict[str, str], **options: object) -> PmeDecryption:
    return PmeDecryption(list(keys.values()), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize("plaintext_footer", [False, True])
@pytest.mark.parametrize("double_wrapping", [True, False])
def test_round_trip(keys: dict[str, str], tmp_path: Path, plaintext_footer: bool, double_wrapping: bool) -> None:
    table = events()
    enc = encryption(keys, plaintext_footer=plaintext_footer, double_wrapping=double_wrapping)
    write(tmp_path / "f.parquet", table, enc)
    data = (tmp_path / "f.parquet").read_bytes()
    assert b"4111-1111-" not in data and b"example.com" not in data
    assert read(tmp_path / "f.parquet", reader(keys)).equals(table)


def test_double_wrapping_makes_one_wrap_per_master_key_for_many_files(keys: dict[str, str], tmp_path: Path) -> None:
    before = kms_call_totals()
    for i in range(5):
        write(tmp_path / f"f{i}.parquet", events(), encryption(keys))
    after = kms_call_totals()
    assert after.generate - before.generate == 3  # foot, pii, pci: once each for 5 files
    for i in range(5):
        read(tmp_path / f"f{i}.parquet", reader(keys))
    assert kms_call_totals().decrypt - after.decrypt == 3
    # every file holds new data keys: the column chunks differ although the data is the same
    assert (tmp_path / "f0.parquet").read_bytes() != (tmp_path / "f1.parquet").read_bytes()


def test_single_wrapping_reuses_the_wrapping_data_key(keys: dict[str, str], tmp_path: Path) -> None:
    before = kms_call_totals()
    for i in range(3):
        write(tmp_path / f"f{i}.parquet", events(), encryption(keys, double_wrapping=False))
        read(tmp_path / f"f{i}.parquet", reader(keys, cache_lifetime_seconds=0.001))
    after = kms_call_totals()
    assert after.generate - before.generate == 3 and after.decrypt - before.decrypt == 3


def test_the_context_is_bound(keys: dict[str, str], tmp_path: Path) -> None:
    write(tmp_path / "f.parquet", events(), encryption(keys, context={"dataset": "events"}))
    assert read(tmp_path / "f.parquet", reader(keys, context={"dataset": "events"})).num_rows == 1000
    with pytest.raises(AuthenticationError):
        read(tmp_path / "f.parquet", reader(keys, context={"dataset": "other"}))


def test_a_missing_key_is_named(keys: dict[str, str], tmp_path: Path) -> None:
    write(tmp_path / "f.parquet", events(), encryption(keys))
    partial = PmeDecryption([keys["foot"], keys["pii"]])
    assert read(tmp_path / "f.parquet", partial, ["id", "ssn"]).column("ssn").to_pylist()[:1] == ["000-45-0000"]
    with pytest.raises(ConfigurationError, match=f"{master_key_id(keys['pci'])} \\(a local key\\) is not among"):
        read(tmp_path / "f.parquet", partial)
    with pytest.raises(ConfigurationError, match=f"{master_key_id(keys['foot'])} \\(a local key\\)"):
        read(tmp_path / "f.parquet", PmeDecryption([keys["pii"]]))


def test_a_key_map_resolves_a_key_named_by_another_uri(keys: dict[str, str], tmp_path: Path) -> None:
    write(tmp_path / "f.parquet", events(), PmeEncryption(keys["foot"], {"ssn": keys["pii"]}))
    by_id = {u: f"local:{open_key_source(u).describe_key().key_id}" for u in (keys["foot"], keys["pii"])}
    with pytest.raises(ConfigurationError, match="not among the keys"):
        read(tmp_path / "f.parquet", PmeDecryption(list(by_id.values())))
    mapped = PmeDecryption(key_map={master_key_id(u): v for u, v in by_id.items()})
    assert read(tmp_path / "f.parquet", mapped).equals(events())


def test_a_disabled_column_key_fails_that_column_only(keys: dict[str, str], tmp_path: Path, kms_home: Path) -> None:
    write(tmp_path / "f.parquet", events(), encryption(keys))
    engine = shared_engine(kms_home)
    engine.disable_key("alias/pci")
    assert read(tmp_path / "f.parquet", reader(keys), ["id", "ssn"]).num_rows == 1000
    with pytest.raises(KeyDisabledError):
        read(tmp_path / "f.parquet", reader(keys), ["card"])
    with pytest.raises(KeyDisabledError):
        write(tmp_path / "g.parquet", events(), PmeEncryption(keys["foot"], {"card": keys["pci"]},
                                                              cache_lifetime_seconds=1e-6))  # fmt: skip


def test_plaintext_footer_without_keys(keys: dict[str, str], tmp_path: Path) -> None:
    write(tmp_path / "f.parquet", events(), encryption(keys, plaintext_footer=True))
    plain = read(tmp_path / "f.parquet", None, ["id", "amount", "when"])
    assert plain.column("id").to_pylist() == list(range(1000))
    with pytest.raises(ConfigurationError, match="no keys were given"):
        read(tmp_path / "f.parquet", None, ["ssn"])
    with pytest.raises(ConfigurationError, match="no keys were given"):
        read(tmp_path / "f.parquet", None)


def test_encrypted_footer_without_keys(keys: dict[str, str], tmp_path: Path) -> None:
    write(tmp_path / "f.parquet", events(), encryption(keys))
    with pytest.raises(ConfigurationError, match="encrypted parts"):
        open_parquet(str(tmp_path / "f.parquet"), "f.parquet")


def test_truncated_and_foreign_files(keys: dict[str, str], tmp_path: Path) -> None:
    write(tmp_path / "f.parquet", events(), encryption(keys))
    data = (tmp_path / "f.parquet").read_bytes()
    for name, content in [("half", data[: len(data) // 2]), ("tail", data[:-1]), ("empty", b""),
                          ("text", b"id,ssn\n1,123\n" * 20)]:  # fmt: skip
        (tmp_path / name).write_bytes(content)
        with pytest.raises(FormatError, match="not a Parquet file"):
            open_parquet(str(tmp_path / name), name, reader(keys))


def test_tampered_column_data_fails_authentication(keys: dict[str, str], tmp_path: Path) -> None:
    table = events().select(["ssn", "card"])  # every column encrypted: any data byte counts
    write(tmp_path / "f.parquet", table, PmeEncryption(keys["foot"], {"ssn": keys["pii"], "card": keys["pci"]}))
    data = (tmp_path / "f.parquet").read_bytes()
    for where in (len(data) // 5, len(data) // 3, len(data) // 2):
        tampered = bytearray(data)
        tampered[where] ^= 0x40
        (tmp_path / "t.parquet").write_bytes(bytes(tampered))
        with pytest.raises(AuthenticationError):
            read(tmp_path / "t.parquet", reader(keys))


def test_external_key_material_and_rotation(keys: dict[str, str], tmp_path: Path, kms_home: Path) -> None:
    path = tmp_path / "f.parquet"
    write(path, events(), encryption(keys, external_key_material=True))
    material = key_material_path(path)
    assert material.is_file() and "wrappedKEK" in material.read_text()
    data, old = path.read_bytes(), material.read_text()
    version = inspect_parquet(path).footer_key.key_version  # type: ignore[union-attr]
    new_version = shared_engine(kms_home).create_key_version("alias/foot").key_version_id
    rotate_key_material(str(path), reader(keys))
    assert path.read_bytes() == data and material.read_text() != old
    rotated = inspect_parquet(path).footer_key
    assert rotated is not None and rotated.key_version == new_version != version
    assert read(path, reader(keys)).equals(events())
    with pytest.raises(ConfigurationError, match="external key material"):
        write(tmp_path / "g.parquet", events(), encryption(keys))
        rotate_key_material(str(tmp_path / "g.parquet"), reader(keys))


def test_configuration_mistakes(keys: dict[str, str]) -> None:
    schema = events().schema
    with pytest.raises(ConfigurationError, match="unknown column 'nope'"):
        PmeEncryption(keys["foot"], {"nope": keys["pii"]}).column_map(schema)
    with pytest.raises(ConfigurationError, match="given two keys"):
        PmeEncryption(keys["foot"], {"contact": keys["pii"], "contact.zip": keys["pci"]}).column_map(schema)
    with pytest.raises(ConfigurationError):
        PmeEncryption("not a uri", {"ssn": keys["pii"]})
    with pytest.raises(ConfigurationError):
        PmeEncryption(keys["foot"], algorithm="AES_CBC")
    with pytest.raises(ConfigurationError):
        PmeDecryption([])
    assert PmeEncryption(keys["foot"], {"contact": keys["pii"]}).column_map(schema) == {
        master_key_id(keys["pii"]): ["contact.email", "contact.zip"]}


def test_settings_pickle_and_hold_no_secrets(keys: dict[str, str]) -> None:
    import pickle

    enc = encryption(keys, context={"dataset": "events"})
    assert pickle.loads(pickle.dumps(enc)) == enc
    dec = reader(keys)
    assert pickle.loads(pickle.dumps(dec)) == dec


def test_no_process_abort_on_encrypted_column_metadata(keys: dict[str, str], tmp_path: Path, kms_home: Path) -> None:
    """The FIELD-NOTES crash, pinned: pyarrow aborts on encrypted column metadata it cannot
    decrypt, even with an encrypted footer and keys when a column key fails to unwrap. Our
    readers never ask for it; this child process shows the hazard is real."""
    path = tmp_path / "f.parquet"
    write(path, events(), encryption(keys, plaintext_footer=True))
    code = ("import pyarrow.parquet as pq, sys; md = pq.ParquetFile(sys.argv[1]).metadata; "
            "md.row_group(0).column(1)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, timeout=60)
    assert out.returncode < 0 or out.returncode == 134  # SIGABRT, not a Python exception
    report = json.dumps(inspect_parquet(path).to_dict())
    assert "PME, column key" in report


def _factory_is_new(inherited: object, queue: object) -> None:
    # the parent's factory is held, so a new factory cannot reuse its address
    queue.put(crypto_factory() is not inherited)  # type: ignore[attr-defined]


def test_one_crypto_factory_per_process() -> None:
    import multiprocessing

    assert crypto_factory() is crypto_factory()
    ctx = multiprocessing.get_context("fork")
    queue = ctx.Queue()
    child = ctx.Process(target=_factory_is_new, args=(crypto_factory(), queue))
    child.start()
    assert queue.get(timeout=30) is True  # a forked worker builds its own
    child.join(30)
