"""The oss:// Beam FileSystem: Beam's text, Parquet and file-matching IOs, and its operations."""

from __future__ import annotations

from typing import Any

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.io import fileio
from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

import kmsbeam.transforms  # noqa: F401  (registers oss://)
from kmsbeam.oss import LoopbackOssServer
from kmsbeam.pipelines.jobs import _fn_api_runner


def pipeline(**options: Any) -> beam.Pipeline:
    opts = PipelineOptions(flags=[], **options)
    return beam.Pipeline(runner=_fn_api_runner(opts), options=opts)


def test_write_and_read_text(oss_server: LoopbackOssServer, bucket: str) -> None:
    lines = [f"line {i}" for i in range(2000)]
    with pipeline() as p:
        _ = p | beam.Create(lines) | beam.io.WriteToText(f"oss://{bucket}/raw/x", file_name_suffix=".txt", num_shards=3)
    assert sorted(oss_server.objects(bucket)) == [f"raw/x-0000{i}-of-00003.txt" for i in range(3)]
    with pipeline() as p:
        back = p | beam.io.ReadFromText(f"oss://{bucket}/raw/x-*.txt")
        assert_that(back, equal_to(lines))


def test_gzip_text_and_parquet(oss_server: LoopbackOssServer, bucket: str) -> None:
    rows = [{"id": i, "name": f"n{i}"} for i in range(500)]
    schema = pa.schema([("id", pa.int64()), ("name", pa.string())])
    with pipeline() as p:
        src = p | beam.Create(rows)
        _ = src | beam.io.WriteToParquet(f"oss://{bucket}/pq/part", schema, file_name_suffix=".parquet")
        _ = src | beam.Map(lambda r: r["name"]) | beam.io.WriteToText(f"oss://{bucket}/gz/t", file_name_suffix=".gz")
    with pipeline() as p:
        assert_that(p | beam.io.ReadFromParquet(f"oss://{bucket}/pq/*.parquet"), equal_to(rows), label="pq")
        names = p | "gz" >> beam.io.ReadFromText(f"oss://{bucket}/gz/*")
        assert_that(names, equal_to([r["name"] for r in rows]), label="gz")


def test_match_files_and_read_matches(bucket: str) -> None:
    fs = FileSystems
    for name in ("a/1.txt", "a/2.txt", "a/b/3.txt", "c.csv"):
        with fs.create(f"oss://{bucket}/{name}") as f:
            f.write(name.encode())
    with pipeline() as p:
        found = (p | fileio.MatchFiles(f"oss://{bucket}/a/*.txt") | fileio.ReadMatches()
                 | beam.Map(lambda f: (f.metadata.path, f.read_utf8())))  # fmt: skip
        assert_that(found, equal_to([(f"oss://{bucket}/a/1.txt", "a/1.txt"), (f"oss://{bucket}/a/2.txt", "a/2.txt")]))
    deep = [m.path for m in fs.match([f"oss://{bucket}/a/**"])[0].metadata_list]
    assert sorted(deep) == [f"oss://{bucket}/a/{n}" for n in ("1.txt", "2.txt", "b/3.txt")]


def test_filesystem_operations(oss_server: LoopbackOssServer, bucket: str) -> None:
    fs, base = FileSystems, f"oss://{bucket}"
    with fs.create(f"{base}/d/one") as f:
        f.write(b"12345")
    assert fs.exists(f"{base}/d/one") and not fs.exists(f"{base}/d/two")
    meta = fs.match([f"{base}/d/one"])[0].metadata_list[0]
    assert meta.size_in_bytes == 5 and meta.last_updated_in_seconds > 0
    assert fs.checksum(f"{base}/d/one")
    fs.copy([f"{base}/d/one"], [f"{base}/e/copy"])
    fs.rename([f"{base}/e/copy"], [f"{base}/e/moved"])
    assert sorted(oss_server.objects(bucket)) == ["d/one", "e/moved"]
    assert fs.join(f"{base}/d", "x", "/y") == f"{base}/d/x/y"
    assert fs.split(f"{base}/d/one") == (f"{base}/d", "one")
    fs.delete([f"{base}/d"])  # a "directory": everything under d/
    assert sorted(oss_server.objects(bucket)) == ["e/moved"]
    with fs.open(f"{base}/e/moved") as f:
        f.seek(2)
        assert f.read() == b"345"
    oss_fs = fs.get_filesystem(base)
    assert oss_fs.size(f"{base}/e/moved") == 5
    with pytest.raises(BeamIOError):
        oss_fs.size(f"{base}/missing")


def test_pipeline_options_override_the_environment(bucket: str) -> None:
    from kmsbeam.transforms.ossfs import config_from_options

    opts = PipelineOptions(["--oss_part_size", "204800", "--oss_auth_version", "v4"])
    config = config_from_options(opts)
    assert config.part_size == 204800 and config.auth_version == "v4" and config.endpoint


def test_multi_processing_workers_find_oss(oss_server: LoopbackOssServer, bucket: str) -> None:
    """Workers in other processes import the plugin named by --beam_plugins."""
    with pipeline(direct_running_mode="multi_processing", direct_num_workers=2,
                  beam_plugins=["kmsbeam.transforms"]) as p:  # fmt: skip
        _ = (p | beam.Create([str(i) for i in range(100)]) | beam.Reshuffle()
             | beam.io.WriteToText(f"oss://{bucket}/mp/out"))  # fmt: skip
    data = b"".join(oss_server.objects(bucket).values())
    assert sorted(data.decode().split()) == sorted(str(i) for i in range(100))
