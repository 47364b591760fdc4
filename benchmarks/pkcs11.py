"""The PKCS#11 key source on SoftHSM2: wraps/s, unwraps/s, rewraps/s and the HSM calls of an
N-record EncryptFields + DecryptFields pipeline.

``python -m benchmarks.pkcs11 [--records N] [--ops K] [--threads T] [--mode M] [--json PATH]``

A throwaway SoftHSM2 (``SOFTHSM2_CONF`` pointing at a temp token directory, set before the
first ``pkcs11.lib()``) holds one token and two KEKs made by ``kmsbeam.pkcs11.create_kek``.

- wraps/s: ``generate_data_key`` (C_GenerateKey, 2x C_Sign, C_WrapKey, C_DestroyObject);
  unwraps/s: ``decrypt_data_key`` (C_UnwrapKey, 2x C_Sign, C_DestroyObject); rewraps/s:
  ``rewrap`` to the second KEK inside the HSM. One thread, then T threads (one lock per
  module serialises them: python-pkcs11 is not thread-safe with SoftHSM).
- cold start: C_Finalize + C_Initialize, C_Login, C_FindObjects for a fresh source.
- pipeline: N records generated in the pipeline, ``EncryptFields`` of 3 fields, then
  ``DecryptFields``, on the FnApiRunner (``--mode in_memory`` or ``multi_processing``; never
  "DirectRunner", which tries to download Prism). Beam's ``kms_calls_*`` counters give the
  key-source calls (one per bundle on encrypt, one per distinct DEK per worker on decrypt);
  in_memory also counts every PKCS#11 operation, the workers being this process.

Until ``kmsbeam.open_key_source`` dispatches ``pkcs11:`` URIs the pipeline uses a DoFn over the
same core ``FieldEncryptor``/``FieldDecryptor`` as the public transforms.
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from importlib.metadata import version
from typing import Any


def _quiet_logging() -> None:
    """WARNING and up, without Beam's import-time "apitools not found" notice (before Beam)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(lambda rec: not str(rec.msg).startswith("apitools not found"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)


if __name__ == "__main__":
    _quiet_logging()

import apache_beam as beam  # noqa: E402

from benchmarks import _children as children  # noqa: E402
from benchmarks._measure import Load  # noqa: E402
from benchmarks._table import Row, format_table, rows_as_json  # noqa: E402

__all__ = ["main", "measure"]

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN_ENV = "KMSBEAM_BENCH_PKCS11_PIN"
FIELDS = ("ssn", "email", "phone")
CONTEXT = {"table": "customers"}
SHARDS = 8
PIPELINE_CALLS: list[str] = []  # the pipeline's PKCS#11 operations by function (in_memory)


def throwaway_hsm() -> tuple[str, str, str]:
    """A temp SoftHSM2 token "bench" with two KEKs; (directory, KEK URI, second KEK URI)."""
    root = tempfile.mkdtemp(prefix="kmsbeam-bench-hsm-")
    os.mkdir(os.path.join(root, "tokens"))
    conf = os.path.join(root, "softhsm2.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(f"directories.tokendir = {root}/tokens\nobjectstore.backend = file\nlog.level = ERROR\n")
    os.environ["SOFTHSM2_CONF"] = conf  # before the first pkcs11.lib() of this process
    os.environ[PIN_ENV] = "bench-pin-not-secret"
    done = children.run(["softhsm2-util", "--init-token", "--free", "--label", "bench", "--so-pin",
                         "bench-so-pin", "--pin", os.environ[PIN_ENV]], timeout=120)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"softhsm2-util --init-token failed: {done.stderr.strip()[:300]}")
    from kmsbeam.pkcs11 import create_kek

    uris = [f"pkcs11:token=bench;object={name}?module-path={MODULE}&pin-source=env:{PIN_ENV}"
            for name in ("kek-a", "kek-b")]  # fmt: skip
    for uri in uris:
        create_kek(uri)
    return root, uris[0], uris[1]


def _rate(k: int, threads: int, fn: Callable[[int], None]) -> float:
    """Operations per second of ``fn(i)`` for i in range(k), over ``threads`` threads."""
    def run(part: range) -> None:
        for i in part:
            fn(i)

    parts = [range(t, k, threads) for t in range(threads)]
    workers = [threading.Thread(target=run, args=(p,)) for p in parts]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return k / (time.perf_counter() - t0)


def key_rows(uri: str, uri_b: str, k: int, threads: int) -> list[Row]:
    from kmsbeam.pkcs11 import Pkcs11KeySource, hsm_call_counts
    from kmsbeam.pkcs11._library import reinitialize

    src, dst = Pkcs11KeySource(uri), Pkcs11KeySource(uri_b)
    wrapped = [src.generate_data_key(CONTEXT).wrapped for _ in range(k)]
    ops: dict[str, Callable[[int], object]] = {
        "wraps/s (generate_data_key)": lambda i: src.generate_data_key(CONTEXT),
        "unwraps/s (decrypt_data_key)": lambda i: src.decrypt_data_key(wrapped[i], CONTEXT),
        "rewraps/s (rewrap inside the HSM)": lambda i: dst.rewrap(wrapped[i], CONTEXT),
    }
    rows: list[Row] = []
    per_op: dict[str, float] = {}
    for t in sorted({1, threads}):
        for name, fn in ops.items():
            before = sum(hsm_call_counts().values())
            with Load() as load:
                rate = _rate(k, t, fn)
            per_op[name] = (sum(hsm_call_counts().values()) - before) / k
            rows.append(Row(f"{name}, {t} thread{'s' if t > 1 else ''}", rate, "ops/s",
                            "one lock per module" if t > 1 else "", load.text()))  # fmt: skip
    for name, calls in per_op.items():
        rows.append(Row(f"PKCS#11 operations per {name.split('/')[0][:-1]}", calls, "calls",
                        name.split("(")[1].rstrip(")")))  # fmt: skip
    t0, n = time.perf_counter(), 20
    with Load() as load:
        for _ in range(n):
            reinitialize(MODULE)
            Pkcs11KeySource(uri).generate_data_key()
    rows.append(Row("cold start + first wrap", (time.perf_counter() - t0) / n * 1e3, "ms",
                    "C_Finalize, C_Initialize, login, find KEK, one wrap", load.text()))  # fmt: skip
    return rows


class _Fields(beam.DoFn):  # type: ignore[misc, unused-ignore]
    """EncryptFields/DecryptFields' core on a pkcs11: source (until open_key_source has it)."""

    def __init__(self, encrypt: bool, uri: str) -> None:
        self._encrypt, self._uri = encrypt, uri

    def setup(self) -> None:
        from kmsbeam import FieldDecryptor, FieldEncryptor, parse_key_uri
        from kmsbeam.pkcs11 import open_pkcs11_source

        source = open_pkcs11_source(parse_key_uri(self._uri))
        if self._encrypt:
            calls = beam.metrics.Metrics.counter("kmsbeam", "kms_calls_generate_data_key")
            self._engine: Any = FieldEncryptor(FIELDS, source, context=CONTEXT, on_generate=calls.inc)
        else:
            calls = beam.metrics.Metrics.counter("kmsbeam", "kms_calls_decrypt")
            self._engine = FieldDecryptor(FIELDS, source, context=CONTEXT, on_call=calls.inc)

    def start_bundle(self) -> None:
        if self._encrypt:
            self._engine.reset()

    def process(self, record: dict[str, Any]) -> Any:
        yield self._engine.encrypt(record) if self._encrypt else self._engine.decrypt(record)


def transforms(uri: str) -> tuple[Any, Any, str]:
    """(encrypt, decrypt, which): the public transforms if open_key_source has pkcs11:."""
    from kmsbeam import ConfigurationError, open_key_source

    try:
        open_key_source(uri)
    except ConfigurationError as exc:
        if "not available yet" not in str(exc):
            raise
        return beam.ParDo(_Fields(True, uri)), beam.ParDo(_Fields(False, uri)), "core DoFns"
    from kmsbeam.transforms import DecryptFields, EncryptFields  # type: ignore[import-not-found, unused-ignore]

    return (EncryptFields(uri, list(FIELDS), context=CONTEXT),
            DecryptFields(uri, list(FIELDS), context=CONTEXT), "EncryptFields/DecryptFields")  # fmt: skip


def pipeline_rows(uri: str, n: int, mode: str) -> list[Row]:
    from apache_beam.options.pipeline_options import PipelineOptions

    from benchmarks import pkcs11 as this  # not __main__: workers import DoFns by module name
    from benchmarks.foundation import make_records
    from kmsbeam.pipelines.jobs import _fn_api_runner  # type: ignore[import-not-found, unused-ignore]
    from kmsbeam.pkcs11 import hsm_call_counts

    workers = 1 if mode == "in_memory" else 2
    options = PipelineOptions(flags=[], direct_running_mode=mode, direct_num_workers=workers)
    p = beam.Pipeline(runner=_fn_api_runner(options), options=options)
    encrypt, decrypt, how = this.transforms(uri)
    records = p | beam.Create(range(SHARDS)) | beam.FlatMap(make_records, n, SHARDS)
    decrypted = records | "Encrypt" >> encrypt | beam.Reshuffle() | "Decrypt" >> decrypt
    _ = decrypted | beam.combiners.Count.Globally()
    before = hsm_call_counts()
    t0 = time.perf_counter()
    with Load() as load:
        result = p.run()
        result.wait_until_finish()
    seconds = time.perf_counter() - t0
    c: dict[str, int] = {}
    for counter in result.metrics().query()["counters"]:
        if counter.key.metric.namespace == "kmsbeam":
            c[counter.key.metric.name] = c.get(counter.key.metric.name, 0) + int(counter.committed or 0)
    rows = [
        Row(f"pipeline, {n:,} records, {mode}", seconds, "s",
            f"encrypt 3 fields, reshuffle, decrypt ({how})", load.text()),
        Row("kms_calls_generate_data_key", c.get("kms_calls_generate_data_key", 0), "calls",
            "one per bundle"),
        Row("kms_calls_decrypt", c.get("kms_calls_decrypt", 0), "calls", "one per distinct DEK per worker"),
    ]
    if mode == "in_memory":  # the workers are this process: every PKCS#11 operation is counted
        calls = {k: v - before.get(k, 0) for k, v in hsm_call_counts().items()
                 if k.startswith("C_") and v != before.get(k, 0)}  # fmt: skip
        breakdown = ", ".join(f"{k} {v}" for k, v in sorted(calls.items()))
        total = sum(calls.values())
        rows.append(Row("PKCS#11 operations in the pipeline", total, "calls", "by function below"))
        PIPELINE_CALLS[:] = [breakdown]
    return rows


def measure(n: int, k: int, threads: int, mode: str, progress: Callable[[str], None]) -> list[Row]:
    root, uri, uri_b = throwaway_hsm()
    try:
        progress(f"SOFTHSM2_CONF={os.environ['SOFTHSM2_CONF']} (throwaway token)")
        rows = key_rows(uri, uri_b, k, threads)
        progress(f"key operations done ({k:,} each)")
        rows += pipeline_rows(uri, n, mode)
        progress("pipeline done")
        return rows
    finally:
        shutil.rmtree(root, ignore_errors=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.pkcs11", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, metavar="N",
                        help="pipeline records (default 100,000; the 1M figure: --records 1000000)")  # fmt: skip
    parser.add_argument("--ops", type=int, default=5_000, metavar="K", help="key operations per row")
    parser.add_argument("--threads", type=int, default=4, metavar="T", help="threads for the threaded rows")
    parser.add_argument("--mode", choices=("in_memory", "multi_processing"), default="in_memory")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = parser.parse_args(argv)
    if min(args.records, args.ops, args.threads) < 1:
        parser.error("--records, --ops and --threads must be at least 1")
    _quiet_logging()

    def progress(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    rows = measure(args.records, args.ops, args.threads, args.mode, progress)
    softhsm = children.run(["softhsm2-util", "--version"], timeout=60).stdout.strip()
    facts = {
        "command": " ".join([sys.executable, "-m", "benchmarks.pkcs11", *(argv or sys.argv[1:])]),
        "cpus / load": f"{os.cpu_count()} / per row, sampled during it (min/mean/max)",
        "python": platform.python_version(),
        "softhsm2 / python-pkcs11": f"{softhsm} / {version('python-pkcs11')}",
        "apache-beam": version("apache-beam"),
        "elapsed": f"{time.perf_counter() - t0:.1f} s",
    }
    for name, value in facts.items():
        print(f"{name + ':':<27} {value}")
    print()
    print(format_table(rows))
    if PIPELINE_CALLS:
        print(f"\nPKCS#11 operations in the pipeline: {PIPELINE_CALLS[0]}")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": facts, "rows": rows_as_json(rows)}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
