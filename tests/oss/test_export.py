"""EncryptObjects / DecryptObjects and ``kmsbeam export | decrypt | cat`` against loopback OSS."""

from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam import open_key_source
from kmsbeam.formats.objects import ObjectReader, read_header
from kmsbeam.oss import LoopbackOssServer, oss_client
from kmsbeam.pipelines.cli import main
from kmsbeam.pipelines.jobs import _fn_api_runner
from kmsbeam.transforms import DecryptObjects, EncryptObjects

KEY = "local:alias/export"


@pytest.fixture()
def files(tmp_path: Path) -> Path:
    src = tmp_path / "enc"
    (src / "sub").mkdir(parents=True)
    (src / "part-00000.jsonl").write_bytes(b"".join(b'{"id": %d}\n' % i for i in range(30000)))
    (src / "part-00001.jsonl").write_bytes(b"")
    (src / "sub" / "x.bin").write_bytes(os.urandom(250_000))
    (src / "_kmsbeam.json").write_text('{"kmsbeam_dataset": 1}\n')
    (src / "_dead_letters").mkdir()
    (src / "_dead_letters" / "part-0.jsonl").write_text("cleartext dead letters stay home\n")
    return src


def pipeline() -> beam.Pipeline:
    opts = PipelineOptions(flags=[])
    return beam.Pipeline(runner=_fn_api_runner(opts), options=opts)


def test_transforms_round_trip_with_metadata(oss_server: LoopbackOssServer, bucket: str, files: Path, tmp_path: Path) -> None:
    open_key_source(KEY, create=True)
    sources = sorted(str(p) for p in files.rglob("*.jsonl") if "_dead" not in str(p))
    dest = f"oss://{bucket}/exp/"
    with pipeline() as p:
        done = p | beam.Create(sources) | EncryptObjects(KEY, dest, base=str(files) + "/", context={"ds": "c"})
        assert_that(done | beam.Map(lambda r: r["destination"]),
                    equal_to([dest + "part-00000.jsonl.kmsb", dest + "part-00001.jsonl.kmsb"]))  # fmt: skip
    meta = oss_server.metadata(bucket, "exp/part-00000.jsonl.kmsb")
    header, _ = read_header(io.BytesIO(oss_server.objects(bucket)["exp/part-00000.jsonl.kmsb"]))
    assert meta == header.metadata() and header.context == {"ds": "c"}
    out = tmp_path / "restored"
    with pipeline() as p:
        _ = (p | beam.Create([dest + "part-00000.jsonl.kmsb", dest + "part-00001.jsonl.kmsb"])
             | DecryptObjects(None, str(out) + "/", base=dest))  # fmt: skip
    for name in ("part-00000.jsonl", "part-00001.jsonl"):
        assert (out / name).read_bytes() == (files / name).read_bytes()


def test_tampered_object_is_a_dead_letter_and_leaves_no_output(oss_server: LoopbackOssServer, bucket: str, tmp_path: Path) -> None:
    open_key_source(KEY, create=True)
    (tmp_path / "a.txt").write_bytes(os.urandom(3 << 20))
    with pipeline() as p:
        _ = p | beam.Create([str(tmp_path / "a.txt")]) | EncryptObjects(KEY, f"oss://{bucket}/t/")
    obj = bytearray(oss_server.objects(bucket)["t/a.txt.kmsb"])
    obj[-100] ^= 1  # the last chunk
    oss_client().put(f"oss://{bucket}/t/a.txt.kmsb", bytes(obj), oss_server.metadata(bucket, "t/a.txt.kmsb"))
    out = tmp_path / "out"
    with pipeline() as p:
        good, dead = (p | beam.Create([f"oss://{bucket}/t/a.txt.kmsb"])
                      | DecryptObjects(None, str(out) + "/").with_dead_letters())  # fmt: skip
        assert_that(dead | beam.Map(lambda d: d["reason"].split(":")[0]), equal_to(["authentication failed"]))
        assert_that(good, equal_to([]), label="none")
    assert not (out / "a.txt").exists()


def cli(*args: str) -> int:
    return main(list(args))


def test_export_decrypt_and_cat(oss_server: LoopbackOssServer, bucket: str, files: Path, tmp_path: Path,
                                capfdbinary: Any) -> None:  # fmt: skip
    dest = f"oss://{bucket}/exports/2026-11-23/"
    assert cli("export", str(files) + "/", dest, "--key", KEY, "--context", "ds=customers") == 0
    table = capfdbinary.readouterr().out.decode()
    assert "objects                     4" in table and "KMS calls: GenerateDataKey  4" in table
    names = sorted(oss_server.objects(bucket))
    assert names == sorted(["exports/2026-11-23/" + n for n in ("_kmsbeam.json", "_kmsbeam.json.kmsb",
        "part-00000.jsonl.kmsb", "part-00001.jsonl.kmsb", "sub/x.bin.kmsb")])  # fmt: skip
    manifest = json.loads(oss_server.objects(bucket)["exports/2026-11-23/_kmsbeam.json"])
    assert manifest["kmsbeam_export"] == 1 and manifest["key"] == KEY and manifest["context"] == {"ds": "customers"}
    restored = tmp_path / "restored"
    assert cli("decrypt", dest, str(restored)) == 0
    for p in files.rglob("*"):
        if p.is_file() and "_dead_letters" not in p.parts:
            assert (restored / p.relative_to(files)).read_bytes() == p.read_bytes()
    assert not (restored / "_dead_letters").exists()
    capfdbinary.readouterr()
    assert cli("cat", dest + "part-00000.jsonl.kmsb") == 0
    assert capfdbinary.readouterr().out == (files / "part-00000.jsonl").read_bytes()
    assert cli("export", str(files) + "/", dest, "--key", KEY) == 2  # already there
    assert b"--overwrite" in capfdbinary.readouterr().err


def test_cli_errors_are_one_line(oss_server: LoopbackOssServer, bucket: str, files: Path, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    dest = f"oss://{bucket}/e/"
    assert cli("export", str(files / "part-00000.jsonl"), dest, "--key", KEY, "-q") == 0
    capsys.readouterr()
    assert cli("cat", dest + "missing.kmsb") == 2
    assert "no such OSS object" in capsys.readouterr().err
    # Metadata removed (a copy with REPLACE and nothing): a clear error naming the object.
    oss_client().copy(dest + "part-00000.jsonl.kmsb", dest + "bare.kmsb", metadata={})
    assert cli("cat", dest + "bare.kmsb") == 2
    err = capsys.readouterr().err
    assert "bare.kmsb has no kmsbeam object metadata" in err and len(err.strip().splitlines()) == 1
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "wrong")
    from kmsbeam.oss import clear_clients

    clear_clients()
    assert cli("cat", dest + "part-00000.jsonl.kmsb") == 1
    err = capsys.readouterr().err
    assert "rejected the credentials" in err and "wrong" not in err


def test_interrupted_export_leaves_no_partial_object(oss_server: LoopbackOssServer, bucket: str, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:  # fmt: skip
    (tmp_path / "big.bin").write_bytes(os.urandom(6 * 100 * 1024))
    oss_server.inject("upload_part", "status", times=1000, status=500)
    assert cli("export", str(tmp_path / "big.bin"), f"oss://{bucket}/x/", "--key", KEY, "--chunk-size", "65536") == 1
    err = capsys.readouterr().err
    assert "EncryptObjects failed on" in err and "big.bin" in err
    assert oss_server.objects(bucket) == {} and oss_server.uploads() == []


def test_rewrap_by_metadata_only_keeps_the_object_bytes(oss_server: LoopbackOssServer, bucket: str, files: Path) -> None:
    """What the rotation issue will do: rewrap the DEK, replace only x-oss-meta-kmsbeam-*."""
    url = f"oss://{bucket}/r/part-00000.jsonl.kmsb"
    assert cli("export", str(files / "part-00000.jsonl"), f"oss://{bucket}/r/", "--key", KEY, "-q") == 0
    before = oss_server.objects(bucket)["r/part-00000.jsonl.kmsb"]
    header, _ = read_header(io.BytesIO(before))
    new_key = open_key_source("local:alias/export-2026", create=True)
    rotated = header.with_wrapped(new_key.rewrap(header.wrapped), new_key.uri)
    oss_client().copy(url, url, metadata=rotated.metadata())
    assert oss_server.objects(bucket)["r/part-00000.jsonl.kmsb"] == before
    assert oss_server.metadata(bucket, "r/part-00000.jsonl.kmsb")["kmsbeam-key"] == new_key.uri
    client = oss_client()
    info = client.head(url)
    with ObjectReader(client.open_read(url), new_key, metadata=info.metadata) as r:
        assert r.read() == (files / "part-00000.jsonl").read_bytes()
