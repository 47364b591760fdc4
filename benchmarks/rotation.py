"""Rotation: rewrap data keys vs full re-encryption, time and KMS calls, on the emulator.

``python -m benchmarks.rotation [--records N] [--per-key K] [--json PATH]``

Setup (not timed): the kmsbeam emulator runs in-process on loopback (official SDK clients,
signatures checked, audit log on); ``alias/bench`` -> CMK-A; N records x 3 fields of 16
bytes are encrypted with ``FieldEncryptor`` (text, one data key per K records, default
1,000: N / K data keys, as a bundle-amortized job would make) into one JSON-lines file.
Then CMK-B is created and the alias moved to it.

Measured, each on the same input file, FnApiRunner in_memory with one worker:

- rewrap pipeline: ReadFromText -> json.loads -> ``RewrapDataKeys`` -> json.dumps -> WriteToText
- re-encrypt pipeline: the same with ``ReencryptFields`` (new data keys, data re-encrypted)
- core rewrap / core re-encrypt: the same work without Beam, 512 records per call

KMS calls are read from the emulator's audit log (what the KMS actually served). The rewrap
pipeline also writes its output, and its bytes after every header are checked against the
input's (not timed).

- OSS in place: ``kmsbeam export`` of ``--objects`` files (the encrypted JSON-lines file split
  evenly) to a loopback OSS server (``kmsbeam.oss.LoopbackOssServer``, real oss2 client), the
  alias moved again, then ``kmsbeam rotate oss://... --in-place``; the bytes that crossed the
  wire (request and response bodies, counted by the server) against the objects' size.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from benchmarks._measure import Load
from benchmarks._table import Row, format_table, rows_as_json

__all__ = ["main", "run"]

FIELDS = ("ssn", "email", "phone")
CONTEXT = {"table": "customers"}
BATCH = 512


def _records(n: int) -> Iterator[dict[str, Any]]:
    from benchmarks.foundation import make_record

    for i in range(n):
        yield make_record(i)


def _chunks(path: Path) -> Iterator[list[dict[str, Any]]]:
    with path.open(encoding="utf-8") as f:
        chunk: list[dict[str, Any]] = []
        for line in f:
            chunk.append(json.loads(line))
            if len(chunk) == BATCH:
                yield chunk
                chunk = []
        if chunk:
            yield chunk


def _audit(server: Any) -> Counter[str]:
    lines = server.audit.path.read_text().splitlines()
    return Counter(json.loads(line)["eventName"] for line in lines)


def _delta(before: Counter[str], after: Counter[str]) -> str:
    parts = [f"{a} {after[a] - before[a]:,}" for a in ("ReEncrypt", "Decrypt", "GenerateDataKey")
             if after[a] - before[a]]  # fmt: skip
    return ", ".join(parts) or "none"


def _pipeline(transform: Any, src: Path, out: Path) -> tuple[float, dict[str, int]]:
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from kmsbeam.pipelines.jobs import _fn_api_runner

    options = PipelineOptions(flags=[], direct_running_mode="in_memory", direct_num_workers=1)
    p = beam.Pipeline(runner=_fn_api_runner(options), options=options)
    (p | "Read" >> beam.io.ReadFromText(str(src)) | "Parse" >> beam.Map(json.loads)
     | "Rotate" >> transform | "Dump" >> beam.Map(json.dumps, sort_keys=False)
     | "Write" >> beam.io.WriteToText(str(out / "part"), file_name_suffix=".jsonl"))  # fmt: skip
    t0 = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - t0
    counters: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace == "kmsbeam":
            counters[c.key.metric.name] = counters.get(c.key.metric.name, 0) + int(c.committed or 0)
    return seconds, counters


def _bodies_unchanged(src: Path, out: Path) -> bool:
    from kmsbeam.formats.envelope import FIELD_V1, parse

    before = {r["id"]: r for chunk in _chunks(src) for r in chunk}
    n = 0
    for shard in sorted(out.glob("part-*")):
        for chunk in _chunks(shard):
            for r in chunk:
                for f in FIELDS:
                    old, new = parse(before[r["id"]][f], FIELD_V1), parse(r[f], FIELD_V1)
                    if old.body != new.body or old.header == new.header:
                        return False
                n += 1
    return n == len(before)


def _oss_in_place(server: Any, key: str, src: Path, work: Path, objects: int, log: Any) -> list[Row]:
    """Export ``src`` as ``objects`` objects to loopback OSS, move the alias, rotate in place."""
    import contextlib
    import io

    from kmsbeam.oss import LoopbackOssServer
    from kmsbeam.pipelines.cli import main as cli

    files = work / "export"
    files.mkdir()
    lines = src.read_text(encoding="utf-8").splitlines(keepends=True)
    step = -(-len(lines) // objects)
    for i in range(objects):
        (files / f"part-{i:03d}.jsonl").write_text("".join(lines[i * step : (i + 1) * step]), encoding="utf-8")
    size = sum(f.stat().st_size for f in files.iterdir())
    secret = os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]
    with LoopbackOssServer(buckets=("bench",), access_key_id=os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"],
                           access_key_secret=secret) as oss:  # fmt: skip
        os.environ.update(oss.environ())
        dest = "oss://bench/rotation/"
        quiet = contextlib.redirect_stdout(io.StringIO())
        with quiet:
            assert cli(["export", str(files) + "/", dest, "--key", key]) == 0
        engine = server.engine
        engine.update_alias("alias/bench", engine.create_key("CMK-C").key_id)
        before_in, before_out, kms = oss.bytes_in.copy(), oss.bytes_out.copy(), _audit(server)
        t0 = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), Load() as load:
            assert cli(["rotate", dest, "--in-place"]) == 0
        seconds = time.perf_counter() - t0
        moved_in = sum((oss.bytes_in - before_in).values())
        moved_out = sum((oss.bytes_out - before_out).values())
        calls = _delta(kms, _audit(server))
    print(f"OSS in place: {objects} objects, {size:,} B; {moved_in + moved_out:,} B on the wire", file=log)
    return [Row("OSS in-place rotation", round(seconds, 2), "s",
                f"{objects} objects, {size:,} B of objects; KMS calls: {calls}", load.text()),
            Row("OSS in-place: bytes on the wire", float(moved_in + moved_out), "B",
                f"request {moved_in:,} + response {moved_out:,} (manifests, no object bytes); "
                f"{(moved_in + moved_out) / size:.5%} of the objects")]  # fmt: skip


def run(n: int, per_key: int, log: Any = sys.stderr, objects: int = 20) -> list[Row]:
    from kmsbeam import DataKeyCache, DataKeyPolicy, FieldDecryptor, FieldEncryptor, open_key_source
    from kmsbeam.emulator import EmulatorServer
    from kmsbeam.formats.base import outcomes
    from kmsbeam.formats.values import rewrap_paths
    from kmsbeam.rotation.rewrap import Rewrapper, record_paths
    from kmsbeam.transforms import ReencryptFields, RewrapDataKeys

    work = Path(tempfile.mkdtemp(prefix="kmsbeam-bench-rotation-"))
    os.environ["KMSBEAM_HOME"] = str(work / "home")
    os.environ["ALIBABA_CLOUD_ACCESS_KEY_ID"] = "bench"
    os.environ["ALIBABA_CLOUD_ACCESS_KEY_SECRET"] = "bench-secret-not-for-production"
    rows: list[Row] = []
    try:
        with EmulatorServer(work / "kms", {"bench": "bench-secret-not-for-production"}) as server:
            engine = server.engine
            engine.create_alias("alias/bench", engine.create_key("CMK-A").key_id)
            key = f"kms-emulator://{server.endpoint}/alias/bench"
            os.environ["KMSBEAM_KEY_SOURCES"] = key  # the caller's key source (data only names it)
            src = work / "encrypted.jsonl"
            t0 = time.perf_counter()
            enc = FieldEncryptor(list(FIELDS), open_key_source(key), context=CONTEXT,
                                 policy=DataKeyPolicy(max_records=per_key))  # fmt: skip
            with src.open("w", encoding="utf-8") as f:
                batch: list[dict[str, Any]] = []
                for record in _records(n):
                    batch.append(record)
                    if len(batch) == BATCH:
                        f.writelines(json.dumps(r) + "\n" for r in enc.encrypt_batch(batch))
                        batch = []
                f.writelines(json.dumps(r) + "\n" for r in enc.encrypt_batch(batch))
            deks = _audit(server)["GenerateDataKey"]
            print(f"setup: {n:,} records, {deks:,} data keys, {time.perf_counter() - t0:.1f} s", file=log)
            engine.update_alias("alias/bench", engine.create_key("CMK-B").key_id)

            def measure(name: str, fn: Any, values: int) -> None:
                before = _audit(server)
                with Load() as load:
                    seconds = fn()
                calls = _delta(before, _audit(server))
                rows.append(Row(name, round(seconds, 2), "s",
                                f"{values:,} values, {values / seconds:,.0f} values/s; KMS calls: {calls}",
                                load.text()))  # fmt: skip
                print(f"{name}: {seconds:.1f} s; KMS calls: {calls}", file=log)

            out = work / "rewrapped"
            measure("rewrap pipeline, JSONL in/out",
                    lambda: _pipeline(RewrapDataKeys(key, list(FIELDS), context=CONTEXT), src, out)[0],
                    3 * n)  # fmt: skip
            ok = _bodies_unchanged(src, out)
            rows.append(Row("rewrap: bytes after every header unchanged", float(ok), "bool",
                            "checked value by value against the input"))  # fmt: skip
            measure("re-encrypt pipeline, JSONL in/out",
                    lambda: _pipeline(ReencryptFields(key, key, list(FIELDS), context=CONTEXT),
                                      src, work / "reencrypted")[0], 3 * n)  # fmt: skip
            paths, fmt = record_paths("fields", FIELDS, "")

            def core_rewrap() -> float:
                rw = Rewrapper(open_key_source(key), context=CONTEXT, cache=DataKeyCache())
                t = time.perf_counter()
                for chunk in _chunks(src):
                    outcomes(lambda r: rewrap_paths(r, paths, fmt, rw), chunk)
                return time.perf_counter() - t

            def core_reencrypt() -> float:
                source = open_key_source(key)
                dec = FieldDecryptor(list(FIELDS), source, context=CONTEXT, cache=DataKeyCache())
                enc2 = FieldEncryptor(list(FIELDS), source, context=CONTEXT,
                                      policy=DataKeyPolicy(max_records=per_key))  # fmt: skip
                t = time.perf_counter()
                for chunk in _chunks(src):
                    enc2.encrypt_batch(dec.decrypt_batch(chunk))
                return time.perf_counter() - t

            measure("core rewrap (no Beam), incl. JSON parse", core_rewrap, 3 * n)
            measure("core re-encrypt (no Beam), incl. JSON parse", core_reencrypt, 3 * n)
            rows.append(Row("data keys in the dataset", float(deks), "keys",
                            f"one per {per_key:,} records"))  # fmt: skip
            rows.extend(_oss_in_place(server, key, src, work, objects, log))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.rotation")
    parser.add_argument("--records", type=int, default=1_000_000)
    parser.add_argument("--per-key", type=int, default=1_000, help="records per data key")
    parser.add_argument("--objects", type=int, default=20, help="objects in the OSS export")
    parser.add_argument("--json", metavar="PATH")
    args = parser.parse_args(argv)
    from benchmarks.__main__ import _quiet_logging

    _quiet_logging()
    rows = run(args.records, args.per_key, objects=args.objects)
    print(format_table(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows_as_json(rows), indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
