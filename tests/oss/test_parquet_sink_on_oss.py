"""``kmsbeam.transforms.parquet_sink`` on ``oss://``: shards, companions and no temp objects left."""

from __future__ import annotations

import io
from typing import Any

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
from apache_beam.io.filesystems import FileSystems
from apache_beam.runners.portability.fn_api_runner import FnApiRunner

from kmsbeam.oss import LoopbackOssServer
from kmsbeam.transforms.parquet_sink import ParquetSink, WriteParquetFiles

SCHEMA = pa.schema([("id", pa.int64()), ("blob", pa.binary())])


class SideSink(ParquetSink):
    def file_options(self, temp_path: str) -> dict[str, Any]:
        with FileSystems.create(self.companions(temp_path)[0]) as f:
            f.write(b"side")
        return {}

    def companions(self, path: str) -> list[str]:
        directory, name = FileSystems.split(path)
        return [FileSystems.join(directory, f"_SIDE_{name}")]


def test_shards_and_companions_on_oss(oss_server: LoopbackOssServer, bucket: str) -> None:
    rows = [{"id": i, "blob": b"v%d" % i} for i in range(400)]
    with beam.Pipeline(runner=FnApiRunner()) as p:
        _ = (p | beam.Create(rows) | beam.Reshuffle()
             | WriteParquetFiles(SideSink(f"oss://{bucket}/out/part", SCHEMA, num_shards=2)))  # fmt: skip
    objects = oss_server.objects(bucket)
    names = [f"part-0000{i}-of-00002.parquet" for i in range(2)]
    assert sorted(objects) == sorted([f"out/{n}" for n in names] + [f"out/_SIDE_{n}" for n in names])
    back = [r for n in names for r in pq.read_table(io.BytesIO(objects[f"out/{n}"])).to_pylist()]
    assert sorted(back, key=lambda r: r["id"]) == rows
