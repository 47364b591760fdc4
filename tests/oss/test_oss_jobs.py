"""encrypt, decrypt and inspect with data on oss:// (the loopback OSS server, the real oss2
client, keys on local:): exact round trips for JSONL, CSV and Parquet, and the bad inputs."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmsbeam.oss import LoopbackOssServer, clear_clients
from kmsbeam.pipelines.cli import main

KEY = "local:alias/oss-jobs"
RECORDS = [{"id": i, "name": f"n{i}", "ssn": f"{i:03d}-45-6789", "email": f"u{i}@example.com"}
           for i in range(60)]  # fmt: skip
SSNS = {r["ssn"].encode() for r in RECORDS}


def run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.err


def put(server: LoopbackOssServer, bucket: str, key: str, data: bytes) -> None:
    from kmsbeam.pipelines import paths

    paths.write_bytes(f"oss://{bucket}/{key}", data)


def jsonl(records: list[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def csv_bytes(records: list[dict[str, Any]]) -> bytes:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(records[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(records)
    return out.getvalue().encode()


def parquet_bytes(records: list[dict[str, Any]]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), sink)
    return sink.getvalue()


def shards(server: LoopbackOssServer, bucket: str, prefix: str) -> dict[str, bytes]:
    return {k: v for k, v in server.objects(bucket).items() if k.startswith(prefix)}


def read_back(objects: dict[str, bytes], fmt: str) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for name, data in sorted(objects.items()):
        if not os.path.basename(name).startswith("part-"):
            continue
        if fmt == "jsonl":
            rows += [json.loads(line) for line in data.decode().splitlines()]
        elif fmt == "csv":
            rows += list(csv.DictReader(io.StringIO(data.decode())))
        else:
            rows += pq.read_table(pa.BufferReader(data)).to_pylist()
    return sorted(rows, key=lambda r: int(r["id"]))


def cleartext_anywhere(objects: dict[str, bytes]) -> bool:
    return any(s in data for data in objects.values() for s in SSNS)


@pytest.mark.parametrize("fmt", ["jsonl", "csv", "parquet"])
def test_fields_round_trip_oss_to_oss_and_local(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    fmt: str, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)  # a URL must never become a local directory here
    data = {"jsonl": jsonl, "csv": csv_bytes, "parquet": parquet_bytes}[fmt](RECORDS)
    put(oss_server, bucket, f"raw/a.{fmt}", data)
    put(oss_server, bucket, f"raw/other.txt", b"not input")
    code, err = run(capsys, "encrypt", f"oss://{bucket}/raw/*.{fmt}", f"oss://{bucket}/enc/",
                    "--fields", "ssn,email", "--key", KEY)  # fmt: skip
    assert code == 0, err
    enc = shards(oss_server, bucket, "enc/")
    assert "enc/_kmsbeam.json" in enc and any(k.startswith("enc/part-") for k in enc)
    assert not cleartext_anywhere(enc) and not any(k.startswith("enc/beam-temp") for k in enc)
    code, err = run(capsys, "decrypt", f"oss://{bucket}/enc/", f"oss://{bucket}/plain/")
    assert code == 0, err
    expected = RECORDS if fmt != "csv" else [{k: str(v) for k, v in r.items()} for r in RECORDS]
    assert read_back(shards(oss_server, bucket, "plain/"), fmt) == expected
    code, err = run(capsys, "decrypt", f"oss://{bucket}/enc", "local-plain")
    assert code == 0, err
    local = {str(p): p.read_bytes() for p in (tmp_path / "local-plain").iterdir()}
    assert read_back(local, fmt) == expected
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local-plain"]  # no ./oss:


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_record_mode_and_single_object_input(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    put(oss_server, bucket, f"raw/x.{fmt}", (jsonl if fmt == "jsonl" else parquet_bytes)(RECORDS))
    code, err = run(capsys, "encrypt", f"oss://{bucket}/raw/x.{fmt}", f"oss://{bucket}/enc",
                    "--mode", "record", "--keep", "id", "--key", KEY)  # fmt: skip
    assert code == 0, err
    assert not cleartext_anywhere(shards(oss_server, bucket, "enc/"))
    code, err = run(capsys, "decrypt", f"oss://{bucket}/enc", f"oss://{bucket}/plain")
    assert code == 0, err
    assert read_back(shards(oss_server, bucket, "plain/"), fmt) == RECORDS


@pytest.mark.parametrize("mode", ["pme", "cells"])
def test_parquet_modes_and_inspect_on_oss(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    put(oss_server, bucket, "raw/a.parquet", parquet_bytes(RECORDS))
    code, err = run(capsys, "encrypt", f"oss://{bucket}/raw/a.parquet", f"oss://{bucket}/enc",
                    "--columns", "ssn", "--parquet-mode", mode, "--key", KEY)  # fmt: skip
    assert code == 0, err
    assert not cleartext_anywhere(shards(oss_server, bucket, "enc/"))
    capsys.readouterr()
    assert main(["inspect", f"oss://{bucket}/enc/", "--json"]) == 0
    reports = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert reports and all(r["path"].startswith(f"oss://{bucket}/enc/part-") for r in reports)
    if mode == "pme":  # an encrypted footer: only the footer key shows
        assert reports[0]["encryption"] == "PME, encrypted footer" and reports[0]["footer_key"]
    else:
        ssn = [c for c in reports[0]["columns"] if c["path"] == "ssn"][0]
        assert ssn["protection"] != "plaintext" and ssn["data_keys"] >= 1
    code, err = run(capsys, "decrypt", f"oss://{bucket}/enc/", f"oss://{bucket}/plain/")
    assert code == 0, err
    assert read_back(shards(oss_server, bucket, "plain/"), "parquet") == RECORDS


def test_unknown_scheme_is_refused_before_anything(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_bytes(jsonl(RECORDS))
    code, err = run(capsys, "encrypt", "in.jsonl", "nosuch://bucket/enc/", "--fields", "ssn", "--key", KEY)
    assert code == 2 and "no filesystem handles nosuch:// paths (the output)" in err
    code, err = run(capsys, "decrypt", "nosuch://bucket/enc/", "out")
    assert code == 2 and "no filesystem handles nosuch:// paths (the input)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]
    assert "created key" not in err  # refused before the key was opened


def test_missing_bucket(bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_bytes(jsonl(RECORDS))
    code, err = run(capsys, "encrypt", tmp_path / "in.jsonl", "oss://no-such-bucket/enc/",
                    "--fields", "ssn", "--key", KEY)  # fmt: skip
    assert code == 2 and "bucket of oss://no-such-bucket/enc" in err and "does not exist" in err
    code, err = run(capsys, "decrypt", "oss://no-such-bucket/enc/", tmp_path / "out")
    assert code == 2 and "does not exist" in err
    assert not (tmp_path / "out").exists()


def test_refused_credentials(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:  # fmt: skip
    put(oss_server, bucket, "raw/x.jsonl", jsonl(RECORDS))
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "not-the-secret")
    clear_clients()
    code, err = run(capsys, "encrypt", f"oss://{bucket}/raw/x.jsonl", tmp_path / "enc",
                    "--fields", "ssn", "--key", KEY)  # fmt: skip
    assert code == 1 and "OSS rejected the credentials" in err and "not-the-secret" not in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "enc").exists()


def test_no_input_matches(bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = run(capsys, "encrypt", f"oss://{bucket}/raw/*.jsonl", tmp_path / "enc", "--fields", "ssn", "--key", KEY)
    assert code == 2 and f"no input file matches oss://{bucket}/raw/*.jsonl" in err
    code, err = run(capsys, "decrypt", f"oss://{bucket}/enc/", tmp_path / "out")
    assert code == 2 and "no input file matches" in err


def test_output_prefix_with_foreign_objects(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str]
) -> None:
    put(oss_server, bucket, "raw/x.jsonl", jsonl(RECORDS))
    put(oss_server, bucket, "enc/report.pdf", b"someone else's")
    args = ["encrypt", f"oss://{bucket}/raw/x.jsonl", f"oss://{bucket}/enc/", "--fields", "ssn", "--key", KEY]
    code, err = run(capsys, *args)
    assert code == 2 and f"oss://{bucket}/enc" in err and "already contains files" in err
    assert sorted(shards(oss_server, bucket, "enc/")) == ["enc/report.pdf"]
    code, err = run(capsys, *args, "--overwrite")  # replaces kmsbeam's output, keeps the rest
    assert code == 0, err
    code, err = run(capsys, *args, "--overwrite")
    assert code == 0, err
    objects = shards(oss_server, bucket, "enc/")
    assert objects["enc/report.pdf"] == b"someone else's"
    assert len(read_back(objects, "jsonl")) == len(RECORDS)


def test_corrupt_manifest_on_oss(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    put(oss_server, bucket, "raw/x.jsonl", jsonl(RECORDS))
    assert run(capsys, "encrypt", f"oss://{bucket}/raw/x.jsonl", f"oss://{bucket}/enc/", "--fields", "ssn", "--key", KEY)[0] == 0
    put(oss_server, bucket, "enc/_kmsbeam.json", b'{"kmsbeam_dataset": 1, "mode": "fie')
    code, err = run(capsys, "decrypt", f"oss://{bucket}/enc/", tmp_path / "plain")
    assert code == 2 and f"oss://{bucket}/enc/_kmsbeam.json is not valid JSON" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "plain").exists()


def test_truncated_parquet_in_a_dataset(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    put(oss_server, bucket, "raw/a.parquet", parquet_bytes(RECORDS[:30]))
    put(oss_server, bucket, "raw/b.parquet", parquet_bytes(RECORDS[30:])[:-40])
    put(oss_server, bucket, "raw/c.parquet", parquet_bytes(RECORDS[:5]))
    code, err = run(capsys, "encrypt", f"oss://{bucket}/raw/*.parquet", f"oss://{bucket}/enc/",
                    "--fields", "ssn", "--key", KEY)  # fmt: skip
    assert code == 2 and f"oss://{bucket}/raw/b.parquet is not a readable Parquet file" in err
    assert "truncated" in err and len(err.strip().splitlines()) == 1
    assert shards(oss_server, bucket, "enc/") == {}


def damaged_parquet(records: list[dict[str, Any]]) -> bytes:
    """Parquet whose footer is sound but whose second row group's ``ssn`` pages are garbage."""
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(records), sink, row_group_size=20)
    data = bytearray(sink.getvalue())
    chunk = pq.ParquetFile(io.BytesIO(bytes(data))).metadata.row_group(1).column(2)
    start = chunk.dictionary_page_offset or chunk.data_page_offset
    for i in range(start, start + chunk.total_compressed_size):
        data[i] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("mode", ["fields", "cells"])
def test_damaged_parquet_in_the_middle_of_a_dataset(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str], mode: str
) -> None:
    put(oss_server, bucket, "raw/a.parquet", parquet_bytes(RECORDS * 3))  # a sound file first
    put(oss_server, bucket, "raw/b.parquet", damaged_parquet(RECORDS))
    put(oss_server, bucket, "raw/c.parquet", parquet_bytes(RECORDS[30:]))
    how = ["--fields", "ssn"] if mode == "fields" else ["--columns", "ssn", "--parquet-mode", "cells"]
    code, err = run(capsys, "encrypt", f"oss://{bucket}/raw/*.parquet", f"oss://{bucket}/enc/", *how, "--key", KEY)
    assert code == 1, err
    assert err.strip().splitlines()[-1] == (f"kmsbeam: error: the Parquet file oss://{bucket}/raw/b.parquet cannot be read: a "
                           "page or its metadata is damaged (OSError); replace it or leave it out of the input")
    assert shards(oss_server, bucket, "enc/") == {}  # no partial output, no manifest
    assert len(shards(oss_server, bucket, "raw/")) == 3  # nothing lost


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_worker_processes_read_and_write_oss(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str], fmt: str
) -> None:
    """Workers in other processes find oss:// (matching, reading, writing) by themselves."""
    put(oss_server, bucket, f"raw/x.{fmt}", (jsonl if fmt == "jsonl" else parquet_bytes)(RECORDS))
    beam_args = ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"]
    code, err = run(capsys, "encrypt", f"oss://{bucket}/raw/*.{fmt}", f"oss://{bucket}/enc/",
                    "--fields", "ssn", "--key", KEY, *beam_args)  # fmt: skip
    assert code == 0, err
    code, err = run(capsys, "decrypt", f"oss://{bucket}/enc/", f"oss://{bucket}/plain/", *beam_args)
    assert code == 0, err
    assert read_back(shards(oss_server, bucket, "plain/"), fmt) == RECORDS


def test_local_input_to_oss_output_writes_nothing_locally(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    (tmp_path / "in.jsonl").write_bytes(jsonl(RECORDS))
    code, err = run(capsys, "encrypt", "in.jsonl", f"oss://{bucket}/enc/", "--fields", "ssn", "--key", KEY)
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.jsonl"]  # no ./oss:/bucket/enc/
    assert "enc/_kmsbeam.json" in shards(oss_server, bucket, "enc/")
    code, err = run(capsys, "decrypt", f"oss://{bucket}/enc/", "plain", "--dead-letter", f"oss://{bucket}/dead/")
    assert code == 0, err
    assert read_back({str(p): p.read_bytes() for p in (tmp_path / "plain").iterdir()}, "jsonl") == RECORDS
    assert shards(oss_server, bucket, "dead/") == {}


def test_dead_letters_land_on_oss(
    oss_server: LoopbackOssServer, bucket: str, capsys: pytest.CaptureFixture[str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    monkeypatch.chdir(tmp_path)
    put(oss_server, bucket, "raw/x.jsonl", jsonl(RECORDS) + b"{not json\n")
    code, err = run(capsys, "encrypt", f"oss://{bucket}/raw/x.jsonl", f"oss://{bucket}/enc/",
                    "--fields", "ssn", "--key", KEY)  # fmt: skip
    assert code in (0, 3), err  # 3 once the dead-letter budget (default 0) is in force
    dead = shards(oss_server, bucket, "enc/_dead_letters/part-")
    assert sum(len(v.splitlines()) for v in dead.values()) == 1  # the bad line, on OSS
    assert len(read_back(shards(oss_server, bucket, "enc/part-"), "jsonl")) == len(RECORDS)  # nothing lost
    assert list(tmp_path.iterdir()) == []
