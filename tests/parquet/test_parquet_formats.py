"""CellFormat and PmeFormat: the Parquet formats as one object each (encrypt, decrypt, rewrap in
place, inspect) over real local keys, with key versions rotated in the keystore."""

from __future__ import annotations

import pickle
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmsbeam import ConfigurationError, DataKeyCache, DataKeyPolicy, MalformedValueError, open_key_source
from kmsbeam.formats import ALREADY, REWRAPPED, Format, format_class
from kmsbeam.formats.envelope import FIELD_V1, parse
from kmsbeam.formats.parquet import crypto_factory, key_material_path, open_parquet
from kmsbeam.formats.parquet.formats import CellFormat, PmeFormat
from kmsbeam.keys.local import shared_engine
from kmsbeam.rotation.rewrap import Rewrapper
from tests.parquet.conftest import events


@pytest.fixture(autouse=True)
def fresh_pme_caches() -> None:
    crypto_factory().remove_cache_entries_for_all_tokens()


def test_cell_format_round_trip_rewrap_and_inspect(keys: dict[str, str], kms_home: Path) -> None:
    fmt = CellFormat("ssn,card", bind="id")
    assert isinstance(fmt, Format) and format_class("cells") is CellFormat
    assert pickle.loads(pickle.dumps(fmt)) == fmt
    source = open_key_source(keys["pii"])
    table = events(300)
    enc = fmt.encryptor(source, policy=DataKeyPolicy(max_records=100))
    sealed = enc.encrypt_table(table)
    uses = fmt.inspect(sealed)
    assert {u.where for u in uses} == {"ssn", "card"} and len({u.commitment for u in uses}) == 3
    assert sum(u.count for u in uses if u.where == "ssn") == 300
    assert sum(u.count for u in uses if u.where == "card") == table.column("card").drop_null().length()
    old_version = uses[0].version
    new_version = shared_engine(kms_home).create_key_version("alias/pii").key_version_id
    fresh = open_key_source(keys["pii"])
    rw = Rewrapper(fresh, cache=DataKeyCache())
    rotated = fmt.rewrap(sealed, rw)
    assert rw.calls == 3 and rw.counts[REWRAPPED] == sum(u.count for u in uses)
    after = fmt.inspect(rotated)
    assert [u.commitment for u in after] == [u.commitment for u in uses]
    assert {u.version for u in uses} == {old_version} and {u.version for u in after} == {new_version}
    for name in ("ssn", "card"):  # every cell body unchanged
        for a, b in zip(sealed.column(name).to_pylist(), rotated.column(name).to_pylist()):
            assert (a is None and b is None) or parse(a, FIELD_V1).body == parse(b, FIELD_V1).body
    out, failures = fmt.decryptor(fresh, cache=DataKeyCache()).decrypt_table(rotated)
    assert not failures and out.equals(table)
    again = Rewrapper(fresh, cache=DataKeyCache())
    assert fmt.rewrap(rotated, again).equals(rotated) and again.calls == 0 and again.counts[ALREADY] > 0


def test_cell_format_rewrap_fails_only_the_bad_cells(keys: dict[str, str]) -> None:
    fmt = CellFormat("ssn")
    source = open_key_source(keys["pii"])
    sealed = fmt.encryptor(source).encrypt_table(events(5))
    cells = sealed.column("ssn").to_pylist()
    cells[2] = b"\x01" + cells[2][1:5]  # not a value any more
    bad = sealed.set_column(sealed.schema.get_field_index("ssn"), "ssn", pa.array(cells, pa.binary()))
    rotated, failures = fmt.rewrap_table(bad, Rewrapper(source, cache=DataKeyCache()))
    assert [(row, exc.field) for row, exc in failures] == [(2, "ssn")]
    assert rotated.column("ssn").to_pylist()[2] == cells[2]
    with pytest.raises(MalformedValueError) as raised:
        fmt.rewrap(bad, Rewrapper(source, cache=DataKeyCache()))
    assert raised.value.field == "ssn"


def test_pme_format_round_trip_inspect_and_rewrap(keys: dict[str, str], tmp_path: Path, kms_home: Path) -> None:
    fmt = PmeFormat({"ssn": keys["pii"], "card": ""}, plaintext_footer=True, external_key_material=True)
    assert isinstance(fmt, Format) and format_class("pme") is PmeFormat
    assert pickle.loads(pickle.dumps(fmt)) == fmt
    foot = open_key_source(keys["foot"])
    path = tmp_path / "part-0.parquet"
    table = events(50)
    props = fmt.encryptor(foot, context={"d": "e"}).properties(table.schema, str(path))
    pq.write_table(table, path, encryption_properties=props)
    uses = fmt.inspect(str(path))
    assert {(u.where, u.key_uri) for u in uses} == {
        ("footer", keys["foot"]), ("ssn", keys["pii"]), ("card", keys["foot"])}  # fmt: skip
    assert all(u.commitment == "" and u.version and u.kind == foot.kind for u in uses)
    data = path.read_bytes()
    new_version = shared_engine(kms_home).create_key_version("alias/foot").key_version_id
    rw = Rewrapper(open_key_source(keys["foot"]), context={"d": "e"})
    assert fmt.rewrap(str(path), rw) == str(path) and rw.counts[REWRAPPED] == 1
    assert path.read_bytes() == data and key_material_path(path).is_file()
    assert {u.version for u in fmt.inspect(str(path)) if u.key_uri == keys["foot"]} == {new_version}
    crypto_factory().remove_cache_entries_for_all_tokens()
    dec = fmt.decryptor(foot, context={"d": "e"})
    assert open_parquet(str(path), path.name, dec, str(path)).read().equals(table)
    with pytest.raises(ConfigurationError, match="rotate the key behind"):
        fmt.rewrap(str(path), Rewrapper(open_key_source("local:alias/other", create=True)))
