"""The core's glue against the bare AES-GCM call: ns per value and ObjectWriter throughput.

Rows (one run, side by side, CPU time by ``time.process_time``, best of ``--repeat`` with the
sides interleaved so both see the same load):

- ``FieldEncryptor.encrypt_batch`` / ``FieldDecryptor.decrypt_batch``, text and bytes, ns per
  value, against ``list(map(AESGCM.encrypt/decrypt, nonces, plaintexts, aads))`` over the same
  number of values: 17-byte plaintexts (a 16-character string and the codec's tag) and an AAD
  as long as kmsbeam's for that field (label, u16, name, K). Nonces, plaintexts and AADs of the
  bare side are built before timing: it is the floor of one Python call per value.
- ``ObjectWriter`` MB/s writing 1 MiB blocks against ``AESGCM.encrypt_into`` over the same
  1 MiB chunks into one preallocated buffer.

Run: ``PYTHONPATH=. python benchmarks/core.py [--records N] [--mib M] [--repeat R]``. The key
lives in a throwaway ``KMSBEAM_HOME``. To measure another kmsbeam, run the script from another
directory with that kmsbeam first on ``PYTHONPATH`` (the line "kmsbeam from" says which ran).
The load (1-minute average, min/mean/max) is sampled during each part and printed with it.
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import argparse
import gc
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from itertools import repeat
from pathlib import Path
from typing import Any

sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: its kmsbeam wins
from benchmarks._measure import Load  # noqa: E402
from benchmarks.objects import NullSink  # noqa: E402

FIELDS = ("ssn", "email", "phone")
BATCH = 512  # records per call, as the transforms batch
MIB = 1 << 20
LABEL = b"kmsbeam.field.v1"


def make_record(i: int) -> dict[str, Any]:
    """Record ``i``: ssn, email and phone are 16 ASCII characters each."""
    x = (i * 2654435761 + 12345) % 10**12
    return {
        "id": i,
        "ssn": f"SSN-{x:012d}",
        "email": f"u{x % 10**10:010d}@e.co",
        "phone": f"+1-555-{x % 10**9:09d}",
    }


def _cpu(fn: Callable[[], Any]) -> float:
    gc.collect()
    gc.disable()
    try:
        t0 = time.process_time()
        fn()
        return time.process_time() - t0
    finally:
        gc.enable()


def interleaved(cases: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    """Best CPU seconds of each case over ``rounds`` rounds, the cases run in turn each round."""
    best = dict.fromkeys(cases, float("inf"))
    for _ in range(rounds):
        for name, fn in cases.items():
            best[name] = min(best[name], _cpu(fn))
    return best


def field_rows(n_records: int, rounds: int) -> list[tuple[str, float, float]]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from kmsbeam import DataKeyCache, FieldDecryptor, FieldEncryptor, open_key_source

    source = open_key_source("local:alias/bench-core", create=True)
    records = [make_record(i) for i in range(n_records)]
    batches = [records[i : i + BATCH] for i in range(0, n_records, BATCH)]
    values = n_records * len(FIELDS)

    def encrypt(encoding: str, keep: bool = False) -> list[list[Any]]:
        # outputs are dropped batch by batch, as downstream steps do (and as the bare side)
        enc = FieldEncryptor(list(FIELDS), source, encoding=encoding)
        if keep:
            return [enc.encrypt_batch(b) for b in batches]
        for b in batches:
            enc.encrypt_batch(b)
        return []

    encrypted = {e: encrypt(e, keep=True) for e in ("text", "bytes")}
    for out in encrypted.values():
        if any(isinstance(r, Exception) for b in out for r in b):
            raise RuntimeError("encrypt_batch failed a record")
    cache = DataKeyCache()

    def decrypt(encoding: str) -> None:
        dec = FieldDecryptor(list(FIELDS), source, cache=cache)
        for b in encrypted[encoding]:
            dec.decrypt_batch(b)
        if dec.values != values:
            raise RuntimeError(f"decrypted {dec.values} values, not {values}")

    decrypt("text")  # the data keys are in the cache: the rows time the glue, not the key source
    aead = AESGCM(AESGCM.generate_key(256))
    # per batch and field: the same values, nonces and AADs kmsbeam seals (17-byte plaintexts)
    bare = []
    for b in batches:
        for f in FIELDS:
            plains = [b"\x05" + r[f].encode() for r in b]
            aad = LABEL + len(f).to_bytes(2, "big") + f.encode() + bytes(16)
            nonces = [i.to_bytes(12, "big") for i in range(len(plains))]
            bare.append((nonces, plains, aad))
    sealed = [(n, list(map(aead.encrypt, n, p, repeat(a))), a) for n, p, a in bare]

    def bare_encrypt() -> None:
        enc = aead.encrypt
        for nonces, plains, aad in bare:
            list(map(enc, nonces, plains, repeat(aad)))

    def bare_decrypt() -> None:
        dec = aead.decrypt
        for nonces, cts, aad in sealed:
            list(map(dec, nonces, cts, repeat(aad)))

    cases: dict[str, Callable[[], Any]] = {
        "bare encrypt": bare_encrypt,
        "encrypt_batch text": lambda: encrypt("text"),
        "encrypt_batch bytes": lambda: encrypt("bytes"),
        "bare decrypt": bare_decrypt,
        "decrypt_batch text": lambda: decrypt("text"),
        "decrypt_batch bytes": lambda: decrypt("bytes"),
    }
    best = interleaved(cases, rounds)
    ns = {k: v / values * 1e9 for k, v in best.items()}
    rows = [("bare AESGCM.encrypt via map", ns["bare encrypt"], 1.0)]
    for e in ("text", "bytes"):
        rows.append((f"encrypt_batch {e}", ns[f"encrypt_batch {e}"],
                     ns[f"encrypt_batch {e}"] / ns["bare encrypt"]))  # fmt: skip
    rows.append(("bare AESGCM.decrypt via map", ns["bare decrypt"], 1.0))
    for e in ("text", "bytes"):
        rows.append((f"decrypt_batch {e}", ns[f"decrypt_batch {e}"],
                     ns[f"decrypt_batch {e}"] / ns["bare decrypt"]))  # fmt: skip
    return rows


def object_rows(mib: int, rounds: int) -> list[tuple[str, float, float]]:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from kmsbeam import open_key_source
    from kmsbeam.formats.objects import ObjectWriter

    source = open_key_source("local:alias/bench-core", create=True)
    block = os.urandom(MIB)
    aead, aad, out = AESGCM(os.urandom(32)), os.urandom(42), bytearray(MIB + 16)

    def raw() -> None:
        for i in range(mib):
            aead.encrypt_into(i.to_bytes(12, "big"), block, aad, out)

    def writer() -> None:
        with ObjectWriter(NullSink(), source) as w:
            for _ in range(mib):
                w.write(block)

    best = interleaved({"raw": raw, "writer": writer}, rounds)
    mb = mib * MIB / 1e6
    return [
        ("raw AESGCM.encrypt_into, 1 MiB chunks", mb / best["raw"], 1.0),
        ("ObjectWriter, 1 MiB writes", mb / best["writer"], best["raw"] / best["writer"]),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20480, help="records (3 values each)")
    parser.add_argument("--mib", type=int, default=64, help="MiB through ObjectWriter")
    parser.add_argument("--repeat", type=int, default=7, help="rounds (best of)")
    args = parser.parse_args(argv)
    home = tempfile.mkdtemp(prefix="kmsbeam-bench-core-")
    os.environ["KMSBEAM_HOME"] = home
    try:
        import kmsbeam

        with Load() as field_load:
            fields = field_rows(args.records, args.repeat)
        with Load() as object_load:
            objects = object_rows(args.mib, args.repeat)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(f"kmsbeam from {os.path.dirname(kmsbeam.__file__)}; CPU time (process_time), best of "
          f"{args.repeat}, the sides interleaved")  # fmt: skip
    print(f"{args.records:,} records x {len(FIELDS)} 16-character fields, {BATCH} records per "
          f"call; {args.mib} MiB through ObjectWriter")  # fmt: skip
    print(f"{'measurement':40} {'value':>8} {'unit':9} {'x bare':>6}  load min/mean/max")
    for name, ns, ratio in fields:
        print(f"{name:40} {ns:8,.0f} {'ns/value':9} {ratio:6.2f}  {field_load.text()}")
    for name, rate, ratio in objects:
        print(f"{name:40} {rate:8,.0f} {'MB/s':9} {ratio:6.2f}  {object_load.text()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
