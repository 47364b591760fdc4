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
from collections.abc import Sequence
from typing import Any

from benchmarks._children import OssServer
from benchmarks._measure import interleaved, load_text
from benchmarks._table import Row, format_table, rows_as_json

__all__ = ["NullSink", "main", "measure_crypto", "measure_export"]

MIB = 1 << 20


class NullSink:
    """A sink that discards (what is measured is the encryption, not a copy)."""

    def __init__(self) -> None:
        self.n = 0

    def write(self, data: Any) -> int:
        n = len(data)
        self.n += n
        return n

    def close(self) -> None:
        pass


def measure_crypto(mib: int, repeat: int) -> list[Row]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from kmsbeam import open_key_source
    from kmsbeam.formats.objects import ObjectReader, ObjectWriter

    source = open_key_source("local:alias/bench-objects", create=True)
    block = os.urandom(MIB)
    gb = mib * MIB / 1e9

    aead, aad, out = AESGCM(os.urandom(32)), os.urandom(42), bytearray(MIB + 16)
    sealed, back = aead.encrypt(b"\0" * 12, block, aad), bytearray(MIB)

    def raw(decrypt: bool) -> None:
        for i in range(mib):
            nonce = i.to_bytes(12, "big")
            if decrypt:
                aead.decrypt_into(b"\0" * 12, sealed, aad, back)
            else:
                aead.encrypt_into(nonce, block, aad, out)

    def encrypt() -> None:
        with ObjectWriter(NullSink(), source) as w:
            for _ in range(mib):
                w.write(block)

    sink = NullSink()
    blob = bytearray()
    sink.write = lambda d: (blob.extend(d), len(d))[1]  # type: ignore[method-assign]
    with ObjectWriter(sink, source) as w:
        for _ in range(min(mib, 1024)):
            w.write(block)
    blob_bytes, in_memory = bytes(blob), min(mib, 1024)
    del blob

    buf = bytearray(MIB)

    def decrypt() -> None:
        import io

        for _ in range(mib // in_memory):
            with ObjectReader(io.BytesIO(blob_bytes), source) as r:
                while r.readinto(buf):
                    pass

    t = interleaved(repeat, {"raw_e": lambda: raw(False), "e": encrypt, "raw_d": lambda: raw(True), "d": decrypt})
    t_raw_e, t_raw_d, t_e, t_d = t["raw_e"].best, t["raw_d"].best, t["e"].best, t["d"].best
    note = f"{mib:,} MiB, 1 MiB chunks, one core, best of {repeat}"
    each = f"share of the raw rate; {repeat} runs each, interleaved"
    return [
        Row("raw AESGCM.encrypt_into, 1 MiB", gb / t_raw_e, "GB/s", note, t["raw_e"].load.text()),
        Row("ObjectWriter stream encrypt", gb / t_e, "GB/s", note + ", target >= 1.5", t["e"].load.text()),
        Row("ObjectWriter / raw encrypt", t_raw_e / t_e, "x", each, load_text(t["raw_e"], t["e"])),
        Row("raw AESGCM.decrypt_into, 1 MiB", gb / t_raw_d, "GB/s", note, t["raw_d"].load.text()),
        Row("ObjectReader stream decrypt", gb * (mib // in_memory * in_memory) / mib / t_d, "GB/s",
            f"{in_memory} MiB object in memory, read {mib // in_memory}x, best of {repeat}", t["d"].load.text()),  # fmt: skip
        Row("ObjectReader / raw decrypt", t_raw_d / (t_d * mib / (mib // in_memory * in_memory)), "x",
            each, load_text(t["raw_d"], t["d"])),  # fmt: skip
    ]


def measure_export(mib: int, repeat: int) -> list[Row]:
    from kmsbeam import open_key_source
    from kmsbeam.formats.objects import ObjectWriter
    from kmsbeam.oss import OssConfig, clear_clients, oss_client
    from kmsbeam.pipelines.cli import main as cli

    key = "local:alias/bench-export"
    open_key_source(key, create=True)
    rows: list[Row] = []
    # The server runs in its own process, as a real endpoint would: no GIL shared with the client.
    with OssServer() as server, tempfile.TemporaryDirectory() as tmp:
        os.environ.update(server.environ())
        clear_clients()
        path = os.path.join(tmp, "data.bin")
        block = os.urandom(MIB)
        with open(path, "wb") as f:
            for _ in range(mib):
                f.write(block)
        config = OssConfig.from_env()
        mb = mib * MIB / 1e6

        def plain() -> None:
            with open(path, "rb") as src, oss_client(config).open_write("oss://bench/plain.bin") as w:
                while chunk := src.read(MIB):
                    w.write(chunk)

        def encrypted() -> None:
            raw = oss_client(config).open_write("oss://bench/enc.bin.kmsb", content_type="application/octet-stream")
            with ObjectWriter(raw, key) as w, open(path, "rb") as src:
                raw.set_metadata(w.header.metadata())
                while chunk := src.read(MIB):
                    w.write(chunk)

        def job() -> None:
            code = cli(["export", path, "oss://bench/job/", "--key", key, "--overwrite", "-q"])
            if code:
                raise RuntimeError("the export job failed")

        note = f"{mib:,} MiB file, {config.part_size >> 20} MiB parts x {config.upload_threads} threads, best of {repeat}"
        t = interleaved(repeat, {"plain": plain, "enc": encrypted, "job": job})
        rows += [
            Row("OSS upload, plaintext", mb / t["plain"].best, "MB/s", note + ", loopback server", t["plain"].load.text()),
            Row("OSS upload, encrypted (ObjectWriter)", mb / t["enc"].best, "MB/s", note, t["enc"].load.text()),
            Row("kmsbeam export job", mb / t["job"].best, "MB/s", "CLI end to end: Beam FnApiRunner, manifest",
                t["job"].load.text()),
        ]  # fmt: skip
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.objects", description=__doc__.split("\n")[0])
    parser.add_argument("--mib", type=int, default=2048, help="MiB streamed per crypto row (default 2048)")
    parser.add_argument("--export-mib", type=int, default=512, help="MiB per export row (default 512)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every row (interleaved); the best kept")
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
    print(f"cpus: {os.cpu_count()}, load: per row, sampled during it (min/mean/max); repeat {args.repeat}, interleaved")
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows_as_json(rows), f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
