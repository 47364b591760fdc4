"""Object stream v1 and OSS exports: streaming encrypt/decrypt GB/s against raw AES-GCM, and
export throughput to the loopback OSS server.

``python -m benchmarks.objects [--mib N] [--export-mib M] [--repeat R] [--quick] [--json PATH]``

Crypto rows stream N MiB (default 2048) through ``ObjectWriter`` into a sink that discards,
and back through ``ObjectReader`` from memory, in 1 MiB writes/reads, 1 MiB chunks, one core;
the raw rows run ``AESGCM.encrypt_into``/``decrypt_into`` over the same 1 MiB chunks with the
same AAD. Export rows write an M MiB file (default 512) to the loopback OSS server
(``kmsbeam.oss.LoopbackOssServer`` in a child process, signatures checked, CRC-64 on): a plain
multipart upload, the same through ``ObjectWriter``, and the
``kmsbeam export`` CLI job (Beam, FnApiRunner) end to end. The loopback server shares the
machine's 2 cores with the client, so export rows are a lower bound for a real endpoint.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks._table import Row, format_table, rows_as_json

__all__ = ["main", "measure_crypto", "measure_export"]

MIB = 1 << 20


class _Null:
    """A sink that discards (what is measured is the encryption, not a copy)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: Any) -> int:
        n = len(data)
        self.n += n
        return n

    def close(self) -> None:
        pass


def _best(fn: Callable[[], float], repeat: int) -> float:
    return min(fn() for _ in range(repeat))


def measure_crypto(mib: int, repeat: int) -> list[Row]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from kmsbeam import open_key_source
    from kmsbeam.formats.objects import ObjectReader, ObjectWriter

    source = open_key_source("local:alias/bench-objects", create=True)
    block = os.urandom(MIB)
    gb = mib * MIB / 1e9

    def raw(decrypt: bool) -> float:
        aead, aad, out = AESGCM(os.urandom(32)), os.urandom(42), bytearray(MIB + 16)
        sealed = aead.encrypt(b"\0" * 12, block, aad)
        back = bytearray(MIB)
        start = time.perf_counter()
        for i in range(mib):
            nonce = i.to_bytes(12, "big")
            if decrypt:
                aead.decrypt_into(b"\0" * 12, sealed, aad, back)
            else:
                aead.encrypt_into(nonce, block, aad, out)
        return time.perf_counter() - start

    def encrypt() -> float:
        start = time.perf_counter()
        with ObjectWriter(_Null(), source) as w:
            for _ in range(mib):
                w.write(block)
        return time.perf_counter() - start

    sink = _Null()
    blob = bytearray()
    sink.write = lambda d: (blob.extend(d), len(d))[1]  # type: ignore[method-assign]
    with ObjectWriter(sink, source) as w:
        for _ in range(min(mib, 1024)):
            w.write(block)
    blob_bytes, in_memory = bytes(blob), min(mib, 1024)
    del blob

    def decrypt() -> float:
        import io

        buf = bytearray(MIB)
        start = time.perf_counter()
        for _ in range(mib // in_memory):
            with ObjectReader(io.BytesIO(blob_bytes), source) as r:
                while r.readinto(buf):
                    pass
        return time.perf_counter() - start

    t_raw_e, t_raw_d = _best(lambda: raw(False), repeat), _best(lambda: raw(True), repeat)
    t_e, t_d = _best(encrypt, repeat), _best(decrypt, repeat)
    note = f"{mib:,} MiB, 1 MiB chunks, one core, best of {repeat}"
    return [
        Row("raw AESGCM.encrypt_into, 1 MiB", gb / t_raw_e, "GB/s", note),
        Row("ObjectWriter stream encrypt", gb / t_e, "GB/s", note + ", target >= 1.5"),
        Row("ObjectWriter / raw encrypt", t_raw_e / t_e, "x", "share of the raw rate"),
        Row("raw AESGCM.decrypt_into, 1 MiB", gb / t_raw_d, "GB/s", note),
        Row("ObjectReader stream decrypt", gb * (mib // in_memory * in_memory) / mib / t_d, "GB/s",
            f"{in_memory} MiB object in memory, read {mib // in_memory}x"),  # fmt: skip
        Row("ObjectReader / raw decrypt", t_raw_d / (t_d * mib / (mib // in_memory * in_memory)), "x",
            "share of the raw rate"),  # fmt: skip
    ]


_SERVER = """
import sys
from kmsbeam.oss import LoopbackOssServer
server = LoopbackOssServer(buckets=["bench"]).start()
print(server.endpoint, flush=True)
sys.stdin.read()
server.stop()
"""


def measure_export(mib: int, repeat: int) -> list[Row]:
    import subprocess

    from kmsbeam import open_key_source
    from kmsbeam.formats.objects import ObjectWriter
    from kmsbeam.oss import OssConfig, clear_clients, oss_client
    from kmsbeam.pipelines.cli import main as cli

    key = "local:alias/bench-export"
    open_key_source(key, create=True)
    rows: list[Row] = []
    # The server runs in its own process, as a real endpoint would: no GIL shared with the client.
    server = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert server.stdout is not None and server.stdin is not None
    endpoint = server.stdout.readline().strip()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ.update({"KMSBEAM_OSS_ENDPOINT": endpoint, "KMSBEAM_OSS_REGION": "cn-hangzhou",
                           "ALIBABA_CLOUD_ACCESS_KEY_ID": "loopback-ak",  # the server's defaults
                           "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "loopback-secret"})  # fmt: skip
        clear_clients()
        path = os.path.join(tmp, "data.bin")
        block = os.urandom(MIB)
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(block)
        config = OssConfig.from_env()
        mb = mib * MIB / 1e6

        def plain() -> float:
            start = time.perf_counter()
            with open(path, "rb") as src, oss_client(config).open_write("oss://bench/plain.bin") as w:
                while chunk := src.read(MIB):
                    w.write(chunk)
            return time.perf_counter() - start

        def encrypted() -> float:
            start = time.perf_counter()
            raw = oss_client(config).open_write("oss://bench/enc.bin.kmsb", content_type="application/octet-stream")
            with ObjectWriter(raw, key) as w, open(path, "rb") as src:
                raw.set_metadata(w.header.metadata())
                while chunk := src.read(MIB):
                    w.write(chunk)
            return time.perf_counter() - start

        def job() -> float:
            start = time.perf_counter()
            code = cli(["export", path, "oss://bench/job/", "--key", key, "--overwrite", "-q"])
            if code:
                raise RuntimeError("the export job failed")
            return time.perf_counter() - start

        note = f"{mib:,} MiB file, {config.part_size >> 20} MiB parts x {config.upload_threads} threads"
        t_plain, t_enc, t_job = _best(plain, repeat), _best(encrypted, repeat), _best(job, repeat)
        rows += [
            Row("OSS upload, plaintext", mb / t_plain, "MB/s", note + ", loopback server"),
            Row("OSS upload, encrypted (ObjectWriter)", mb / t_enc, "MB/s", note),
            Row("kmsbeam export job", mb / t_job, "MB/s", "CLI end to end: Beam FnApiRunner, manifest"),
        ]
    server.stdin.close()
    server.wait(timeout=30)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.objects", description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=2048, help="MiB streamed per crypto row (default 2048)")
    parser.add_argument("--export-mib", type=int, default=512, help="MiB per export row (default 512)")
    parser.add_argument("--repeat", type=int, default=1, help="keep the best of R runs")
    parser.add_argument("--quick", action="store_true", help="smoke run: 64 MiB and 16 MiB")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.mib, args.export_mib = 64, 16
    with tempfile.TemporaryDirectory() as home:
        os.environ["KMSBEAM_HOME"] = home
        import logging

        logging.basicConfig(level=logging.ERROR, force=True)
        rows = measure_crypto(args.mib, args.repeat)
        print(f"crypto rows done ({args.mib} MiB)", file=sys.stderr)
        rows += measure_export(args.export_mib, args.repeat)
    print(f"command: python -m benchmarks.objects {' '.join(argv if argv is not None else sys.argv[1:])}")
    print(f"cpus: {os.cpu_count()}, load: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows_as_json(rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
