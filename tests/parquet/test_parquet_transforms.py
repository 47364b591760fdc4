"""The Beam transforms: PME write and read (sharded, multi-worker, portable) with exact KMS
call counts, cell columns on Arrow tables, and dead letters for bad files and rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam import shared_cache
from kmsbeam.keys.local import shared_engine
from kmsbeam.formats.parquet import crypto_factory, inspect_parquet, take_pending_calls
from kmsbeam.pipelines.jobs import _fn_api_runner as fn_api_runner
from kmsbeam.transforms import (
    DecryptCells,
    EncryptCells,
    ReadEncryptedParquet,
    WriteEncryptedParquet,
    cells_schema,
)
from tests.parquet.conftest import events

SCHEMA = pa.schema([("id", pa.int64()), ("ssn", pa.string()), ("card", pa.string()),
                    ("contact", pa.struct([("email", pa.string())]))])  # fmt: skip


def rows(n: int) -> list[dict[str, Any]]:
    return [{"id": i, "ssn": f"{i:09d}", "card": f"4111-{i:012d}", "contact": {"email": f"u{i}@x.io"}}
            for i in range(n)]  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_pme_caches() -> None:
    crypto_factory().remove_cache_entries_for_all_tokens()
    take_pending_calls()


def pipeline(mode: str = "in_memory", workers: int = 1) -> beam.Pipeline:
    options = PipelineOptions(flags=[], direct_running_mode=mode, direct_num_workers=workers)
    return beam.Pipeline(runner=fn_api_runner(options) if mode != "in_memory" else FnApiRunner(), options=options)


def counters(result: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == "kmsbeam":
            out[c.key.metric.name] = out.get(c.key.metric.name, 0) + (c.committed or 0)
    return out


def write(p: beam.Pipeline, data: Any, prefix: Path, keys: dict[str, str], **options: Any) -> Any:
    return data | WriteEncryptedParquet(
        keys["foot"], str(prefix), SCHEMA,
        column_keys={"ssn": keys["pii"], "card": keys["pci"], "contact": keys["pii"]}, **options)  # fmt: skip


def test_sharded_write_makes_one_wrap_per_master_key(keys: dict[str, str], tmp_path: Path) -> None:
    data = rows(6000)
    p = pipeline()
    write(p, p | beam.Create(data) | beam.Reshuffle(), tmp_path / "out" / "part", keys, num_shards=4)
    result = p.run()
    result.wait_until_finish()
    files = sorted((tmp_path / "out").glob("part-*-of-00004.parquet"))
    assert len(files) == 4
    c = counters(result)
    assert c["kms_calls_generate_data_key"] == 3 == c["data_keys_generated"]  # foot, pii, pci
    assert c["records"] == 6000 and c["values_encrypted"] == 6000 * 3
    p = pipeline()
    got = p | ReadEncryptedParquet(list(keys.values()), str(tmp_path / "out" / "part-*"))
    assert_that(got, equal_to(data))
    result = p.run()
    result.wait_until_finish()
    assert counters(result)["kms_calls_decrypt"] == 3


def test_a_second_job_in_the_same_worker_reuses_the_cached_keks(keys: dict[str, str], tmp_path: Path) -> None:
    totals = []
    for job in range(2):
        p = pipeline()
        write(p, p | beam.Create(rows(1000)), tmp_path / f"job{job}" / "part", keys, num_shards=2)
        result = p.run()
        result.wait_until_finish()
        totals.append(counters(result).get("kms_calls_generate_data_key", 0))
    assert totals == [3, 0]  # at most one wrap per master key per worker per cache lifetime


def test_two_worker_processes_wrap_at_most_once_per_key_each(keys: dict[str, str], tmp_path: Path) -> None:
    data = rows(4000)
    p = pipeline("multi_processing", 2)
    write(p, p | beam.Create(data) | beam.Reshuffle(), tmp_path / "out" / "part", keys, num_shards=4,
          plaintext_footer=True)  # fmt: skip
    result = p.run()
    result.wait_until_finish()
    calls = counters(result)["kms_calls_generate_data_key"]
    assert 3 <= calls <= 2 * 3
    versions = set()
    for f in (tmp_path / "out").glob("part-*"):
        report = inspect_parquet(f)
        assert report.columns is not None and report.rows is not None
        versions |= {c.key.key_uri for c in report.columns if c.key is not None}
    assert versions == {keys["pii"], keys["pci"]}
    assert sum(pq.ParquetFile(f).metadata.num_rows for f in (tmp_path / "out").glob("part-*")) == 4000


def test_external_key_material_lands_next_to_the_final_files(keys: dict[str, str], tmp_path: Path) -> None:
    p = pipeline()
    write(p, p | beam.Create(rows(500)), tmp_path / "out" / "part", keys, num_shards=2, external_key_material=True)
    p.run().wait_until_finish()
    names = sorted(f.name for f in (tmp_path / "out").iterdir())
    assert names == ["_KEY_MATERIAL_FOR_part-00000-of-00002.parquet.json",
                     "_KEY_MATERIAL_FOR_part-00001-of-00002.parquet.json",
                     "part-00000-of-00002.parquet", "part-00001-of-00002.parquet"]  # fmt: skip
    p = pipeline()
    assert_that(p | ReadEncryptedParquet(list(keys.values()), str(tmp_path / "out" / "part-*")),
                equal_to(rows(500)))  # fmt: skip
    p.run().wait_until_finish()


def test_bad_files_become_dead_letters(keys: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "out"
    p = pipeline()
    write(p, p | beam.Create(rows(300)), out / "good", keys, num_shards=1)
    p.run().wait_until_finish()
    data = next(out.glob("good-*")).read_bytes()
    (out / "half.parquet").write_bytes(data[: len(data) // 2])
    (out / "text.parquet").write_bytes(b"id,ssn\n1,2\n")
    p = pipeline()
    got, dead = p | ReadEncryptedParquet(list(keys.values()), str(out / "*.parquet")).with_dead_letters()
    assert_that(got, equal_to(rows(300)), label="good")
    reasons = dead | beam.Map(lambda d: (Path(d["record"]["file"]).name, d["reason"]))
    assert_that(reasons, equal_to([
        ("half.parquet", f"unreadable file: {out / 'half.parquet'} is not a Parquet file, or it is truncated"),
        ("text.parquet", f"unreadable file: {out / 'text.parquet'} is not a Parquet file, or it is truncated"),
    ]), label="dead")  # fmt: skip
    result = p.run()
    result.wait_until_finish()
    assert counters(result)["dead_letters"] == 2


def test_disabled_key_and_missing_keys(keys: dict[str, str], tmp_path: Path, kms_home: Path) -> None:
    out = tmp_path / "out"
    p = pipeline()
    write(p, p | beam.Create(rows(300)), out / "part", keys, plaintext_footer=True)
    p.run().wait_until_finish()
    shared_engine(kms_home).disable_key("alias/pci")
    crypto_factory().remove_cache_entries_for_all_tokens()
    shared_cache().clear()
    p = pipeline()
    plain = p | "Plain" >> ReadEncryptedParquet((), str(out / "part-*"), columns=["id"])
    assert_that(plain, equal_to([{"id": i} for i in range(300)]), label="plain")
    _, dead = p | "NoKeys" >> ReadEncryptedParquet((), str(out / "part-*")).with_dead_letters()
    assert_that(dead | "R1" >> beam.Map(lambda d: d["reason"].split(":")[0]), equal_to(["configuration error"]),
                label="nokeys")  # fmt: skip
    p.run().wait_until_finish()
    p = pipeline()
    with pytest.raises(Exception, match="key disabled"):
        p | ReadEncryptedParquet(list(keys.values()), str(out / "part-*"), columns=["card"])
        p.run().wait_until_finish()


def test_cells_on_arrow_tables(keys: dict[str, str], tmp_path: Path) -> None:
    table = events(3000)
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=1000)
    out_schema = cells_schema(table.schema, ["ssn", "contact.email"], keys["pii"], bind=["id"])
    p = pipeline()
    tables = p | beam.io.ReadFromParquetBatched(str(tmp_path / "in.parquet"))
    enc = tables | EncryptCells(keys["pii"], ["ssn", "contact.email"], bind=["id"])
    enc | beam.io.WriteToParquetBatched(str(tmp_path / "enc" / "part"), out_schema, file_name_suffix=".parquet")
    result = p.run()
    result.wait_until_finish()
    c = counters(result)
    assert c["records"] == 3000 and c["kms_calls_generate_data_key"] == 1
    assert c["values_encrypted"] == 3000 + sum(1 for i in range(3000) if i % 7)
    p = pipeline()
    back = (p | beam.io.ReadFromParquetBatched(str(tmp_path / "enc" / "part-*"))
            | DecryptCells(keys["pii"], bind=["id"]) | beam.FlatMap(lambda t: t.to_pylist()))  # fmt: skip
    assert_that(back, equal_to(table.to_pylist()))
    p.run().wait_until_finish()


def test_cells_dead_letters(keys: dict[str, str], tmp_path: Path) -> None:
    from kmsbeam import open_key_source
    from kmsbeam.formats.parquet import CellEncryptor

    enc = CellEncryptor(["ssn"], open_key_source(keys["pii"])).encrypt_table(events(10))
    ssn = enc.column("ssn").to_pylist()
    card = CellEncryptor(["card"], open_key_source(keys["pii"])).encrypt_table(events(10)).column("card")
    ssn[4] = card[1].as_py()  # a cell of another column: its AAD names "card"
    bad = enc.set_column(1, "ssn", pa.array(ssn, pa.binary()))
    p = pipeline()
    good, dead = p | beam.Create([bad]) | DecryptCells(keys["pii"]).with_dead_letters()
    assert_that(good | beam.Map(lambda t: t.num_rows), equal_to([9]), label="good")
    assert_that(dead | beam.Map(lambda d: (d["record"]["id"], d["reason"].split(" (")[0])),
                equal_to([(4, "authentication failed")]), label="dead")  # fmt: skip
    result = p.run()
    result.wait_until_finish()
    assert counters(result)["dead_letters"] == 1


def test_configuration_mistakes_fail_at_construction(keys: dict[str, str]) -> None:
    from kmsbeam import ConfigurationError

    with pytest.raises(ConfigurationError, match="unknown column"):
        WriteEncryptedParquet(keys["foot"], "/x/part", SCHEMA, column_keys={"nope": keys["pii"]})
    with pytest.raises(ConfigurationError):
        WriteEncryptedParquet(keys["foot"], "/x/part", SCHEMA, column_keys={"ssn": "bad uri"})
    with pytest.raises(ConfigurationError):
        EncryptCells(keys["pii"], ["ssn"], bind=["ssn"])
    with pytest.raises(TypeError):
        DecryptCells(None)  # type: ignore[arg-type]
    w = WriteEncryptedParquet(keys["foot"], "/x/part", SCHEMA, column_keys={"ssn": keys["pii"]},
                              context={"tenant": "context-value-7f3a"})  # fmt: skip
    shown = w.display_data()
    assert shown["context_keys"] == "tenant" and "context-value-7f3a" not in str(shown)


def test_portable_runner_round_trip(keys: dict[str, str], tmp_path: Path) -> None:
    options = PipelineOptions(flags=[], runner="PortableRunner", job_endpoint="embed", environment_type="LOOPBACK")
    with beam.Pipeline(options=options) as p:
        write(p, p | beam.Create(rows(500)), tmp_path / "out" / "part", keys, num_shards=2)
    with beam.Pipeline(options=options) as p:
        got = p | ReadEncryptedParquet(list(keys.values()), str(tmp_path / "out" / "part-*"))
        assert_that(got, equal_to(rows(500)))
