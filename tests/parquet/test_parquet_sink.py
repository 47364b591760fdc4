"""``kmsbeam.transforms.parquet_sink``: Beam's shard names, per-file writer options, and
companion files that follow their Parquet file to its final name (Beam's public sink API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.portability.fn_api_runner import FnApiRunner
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam.transforms.parquet_sink import ParquetSink, WriteParquetFiles

SCHEMA = pa.schema([("id", pa.int64()), ("blob", pa.binary()), ("tags", pa.list_(pa.string()))])


def rows(n: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"id": i, "blob": b"header" + str(i).encode(), "tags": [f"t{i}"]} for i in range(start, start + n)]


class CompanionSink(ParquetSink):
    """Writes ``<file>.side`` next to each temp file when it opens the file."""

    def file_options(self, temp_path: str) -> dict[str, Any]:
        with FileSystems.create(self.companions(temp_path)[0]) as f:
            f.write(b"side of one file")
        return {"write_statistics": False}

    def companions(self, path: str) -> list[str]:
        return [path + ".side"]


def read_back(paths: list[Path]) -> list[dict[str, Any]]:
    return sorted((r for p in paths for r in pq.read_table(p).to_pylist()), key=lambda r: r["id"])


def test_shards_names_and_writer_options(tmp_path: Path) -> None:
    sink = ParquetSink(str(tmp_path / "out" / "part"), SCHEMA, num_shards=3, writer_options={
        "use_dictionary": ["id"], "column_encoding": {"blob": "DELTA_BYTE_ARRAY"}})  # fmt: skip
    p = beam.Pipeline(runner=FnApiRunner())
    records = p | "Rows" >> beam.Create(rows(300))
    tables = p | "Tables" >> beam.Create([pa.Table.from_pylist(rows(200, 300), schema=SCHEMA)])
    names = (records, tables) | beam.Flatten() | WriteParquetFiles(sink, record_batch_size=50)
    expected = [str(tmp_path / "out" / f"part-0000{i}-of-00003.parquet") for i in range(3)]
    assert_that(names, equal_to(expected))
    p.run().wait_until_finish()
    assert sorted(f.name for f in (tmp_path / "out").iterdir()) == [Path(e).name for e in expected]
    assert read_back([Path(e) for e in expected]) == rows(500)
    for path in expected:
        meta = pq.ParquetFile(path).metadata
        for g in range(meta.num_row_groups):
            blob = meta.row_group(g).column(1)
            assert "DELTA_BYTE_ARRAY" in blob.encodings and not blob.has_dictionary_page
            assert meta.row_group(g).column(0).has_dictionary_page
        assert meta.schema.column(2).path == "tags.list.element"  # compliant nested types (default)


def test_companions_follow_their_file_to_its_final_name(tmp_path: Path) -> None:
    sink = CompanionSink(str(tmp_path / "out" / "all"), SCHEMA, shard_name_template="",
                         writer_options={"use_compliant_nested_type": False})  # fmt: skip
    p = beam.Pipeline(runner=FnApiRunner())
    _ = p | beam.Create(rows(100)) | WriteParquetFiles(sink)
    p.run().wait_until_finish()
    out = tmp_path / "out"
    assert sorted(f.name for f in out.iterdir()) == ["all.parquet", "all.parquet.side"]
    assert (out / "all.parquet.side").read_bytes() == b"side of one file"
    assert pq.read_table(out / "all.parquet").num_rows == 100
    assert pq.ParquetFile(out / "all.parquet").metadata.row_group(0).column(0).statistics is None
    assert pq.ParquetFile(out / "all.parquet").schema.column(2).path == "tags.list.item"


def test_a_retried_finalize_finds_everything_moved(tmp_path: Path) -> None:
    sink = CompanionSink(str(tmp_path / "part"), SCHEMA, num_shards=2)
    init = sink.initialize_write()
    temps = []
    for uid, start in (("a", 0), ("b", 10)):
        writer = sink.open_writer(init, uid)
        writer.write(pa.Table.from_pylist(rows(10, start), schema=SCHEMA))
        temps.append(writer.close())
    final = [str(tmp_path / f"part-0000{i}-of-00002.parquet") for i in range(2)]
    assert list(sink.finalize_write(init, temps, None)) == final
    list(sink.finalize_write(init, temps, None))  # a retry after the renames: nothing left to move
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(
        [Path(f).name for f in final] + [Path(f).name + ".side" for f in final])
    assert read_back([Path(f) for f in final]) == rows(20)
