"""KMS calls against records for three data-key policies: measured pipelines plus the model.

Usage: ``python -m benchmarks.plot_kms_calls [--out docs/kms-calls.png] [--max-measured N]
[--bundle-size B] [--workers W] [--json PATH]``

Measured (points): real ``EncryptFields`` pipelines on the FnApiRunner (in_memory) at 10^3,
10^4, 10^5 records (up to ``--max-measured``), the GenerateDataKey calls read from kmsbeam's
Beam metric ``kms_calls_generate_data_key``:

- per record: ``DataKeyPolicy(max_records=1)``, one worker;
- per bundle: the default policy; the records are reshuffled and the runner is asked for
  ``ceil(N / B)`` workers (``direct_num_workers``), which makes it cut the stage's input into
  that many bundles; a DoFn in the same stage counts the non-empty bundles (metric
  ``bundles``), so the plot checks calls = bundles.

Model (lines, 10^3 .. 10^7 records): per record = N; per bundle = ceil(N / B) with B = 1,000
records a bundle (the Flink runner's default ``maxBundleSize``; other runners differ); per
worker = W workers (default 8). kmsbeam has no per-worker data-key policy for encryption (its
decrypt-side cache and PME's KEK cache are per worker), so that line is model only.

The keystore is a throwaway ``KMSBEAM_HOME`` under ``/tmp/peers-*``, deleted at the end.
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ["main", "measure"]

KEY = "local:alias/plot"
FIELDS = ["ssn", "email", "phone"]
NS = "benchmarks"


def _bundle_counter() -> Any:
    import apache_beam as beam

    class CountBundles(beam.DoFn):  # type: ignore[misc, unused-ignore]
        """Passes elements through; counts the bundles that had any."""

        def start_bundle(self) -> None:
            self._n = 0

        def process(self, element: Any) -> Iterator[Any]:
            self._n += 1
            yield element

        def finish_bundle(self) -> None:
            if self._n:
                beam.metrics.Metrics.counter(NS, "bundles").inc()
            beam.metrics.Metrics.counter(NS, "records").inc(self._n)

    return CountBundles()


def run_pipeline(n: int, per_record: bool, bundles: int) -> dict[str, int]:
    """One EncryptFields pipeline over ``n`` generated records; kmsbeam + bundle counters."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions
    from apache_beam.runners.portability.fn_api_runner import FnApiRunner

    from benchmarks.foundation import SHARDS, make_records
    from kmsbeam import DataKeyPolicy
    from kmsbeam.transforms import EncryptFields

    options = PipelineOptions(flags=[], direct_running_mode="in_memory", direct_num_workers=bundles)
    p = beam.Pipeline(runner=FnApiRunner(), options=options)
    policy = DataKeyPolicy(max_records=1) if per_record else DataKeyPolicy()
    _ = (p | beam.Create(range(SHARDS)) | beam.FlatMap(make_records, n, SHARDS) | beam.Reshuffle()
         | beam.ParDo(_bundle_counter()) | EncryptFields(KEY, FIELDS, encoding="bytes", policy=policy))  # fmt: skip
    result = p.run()
    result.wait_until_finish()
    counts: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        if c.key.metric.namespace in ("kmsbeam", NS):
            name = c.key.metric.name if c.key.metric.namespace == "kmsbeam" else f"{NS}.{c.key.metric.name}"
            counts[name] = counts.get(name, 0) + int(c.committed or 0)
    if counts.get(f"{NS}.records") != n or counts.get("values_encrypted") != n * len(FIELDS):
        raise RuntimeError(f"the pipeline saw {counts.get(NS + '.records')} records, not {n}")
    return counts


def measure(sizes: Sequence[int], bundle_size: int, say: Any = lambda _m: None) -> list[dict[str, Any]]:
    """The measured points: one per-record and one per-bundle run per size."""
    from kmsbeam import open_key_source

    open_key_source(KEY, create=True)
    points: list[dict[str, Any]] = []
    for n in sizes:
        for policy in ("per record", "per bundle"):
            bundles = 1 if policy == "per record" else math.ceil(n / bundle_size)
            c = run_pipeline(n, policy == "per record", bundles)
            point = {"policy": policy, "records": n, "kms_calls": c.get("kms_calls_generate_data_key", 0),
                     "bundles": c.get(f"{NS}.bundles", 0), "data_keys": c.get("data_keys_generated", 0)}  # fmt: skip
            say(f"{policy}, {n:,} records: {point['kms_calls']:,} GenerateDataKey calls, {point['bundles']} bundles")
            points.append(point)
    return points


def plot(points: Sequence[dict[str, Any]], out: Path, bundle_size: int, workers: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [10 ** (3 + i / 64) for i in range(257)]  # 10^3 .. 10^7
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    styles = {"per record": ("tab:red", "o"), "per bundle": ("tab:blue", "s"), "per worker": ("tab:green", "^")}
    models: dict[str, list[float]] = {
        "per record": list(xs),
        "per bundle": [math.ceil(x / bundle_size) for x in xs],
        "per worker": [workers for _ in xs],
    }
    labels = {
        "per record": "per record: N (model)",
        "per bundle": f"per bundle: ceil(N / {bundle_size:,}) (model)",
        "per worker": f"per worker: {workers} workers (model only: no kmsbeam policy)",
    }
    for policy, ys in models.items():
        color, _ = styles[policy]
        ax.plot(xs, ys, color=color, linestyle="--", linewidth=1.2, label=labels[policy])
    for policy in ("per record", "per bundle"):
        mine = [p for p in points if p["policy"] == policy]
        if mine:
            color, marker = styles[policy]
            ax.scatter([p["records"] for p in mine], [p["kms_calls"] for p in mine], color=color,
                       marker=marker, s=42, zorder=3, label=f"{policy}: measured (EncryptFields, Beam metric)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(8e2, 1.25e7)
    ax.set_ylim(0.5, 2e7)
    ax.set_xlabel("records encrypted (3 fields each)")
    ax.set_ylabel("KMS GenerateDataKey calls")
    ax.set_title("kmsbeam: KMS calls by data-key policy", fontsize=11)
    ax.grid(True, which="major", linewidth=0.4, alpha=0.6)
    ax.legend(fontsize=7, loc="upper left", framealpha=0.9)
    ax.text(0.99, 0.02, "measured: FnApiRunner in_memory, local keystore\n"
            f"bundles forced to ceil(N / {bundle_size:,}) for the per-bundle runs",
            transform=ax.transAxes, fontsize=6.5, ha="right", va="bottom", color="0.3")  # fmt: skip
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.plot_kms_calls", description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="docs/kms-calls.png", help="the PNG to write (default docs/kms-calls.png)")
    parser.add_argument("--max-measured", type=int, default=100_000, metavar="N",
                        help="measure pipelines at 10^3, 10^4, ... up to N records (default 100,000; 0: model only)")
    parser.add_argument("--bundle-size", type=int, default=1_000, metavar="B", help="records a bundle (default 1,000)")
    parser.add_argument("--workers", type=int, default=8, metavar="W", help="workers of the per-worker model (default 8)")
    parser.add_argument("--json", metavar="PATH", help="also write the measured points as JSON")
    args = parser.parse_args(argv)
    if args.max_measured < 0 or args.bundle_size < 1 or args.workers < 1:
        parser.error("--max-measured must be >= 0, --bundle-size and --workers >= 1")
    from benchmarks.__main__ import _quiet_logging

    _quiet_logging()
    # Asking in_memory for N workers is how the bundles are cut; Beam warns about it each run.
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").setLevel(logging.ERROR)
    sizes = [10**k for k in range(3, 8) if 10**k <= args.max_measured]
    from benchmarks._env import throwaway

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    with throwaway("peers-plot-"):
        points = measure(sizes, args.bundle_size, say) if sizes else []
    plot(points, Path(args.out), args.bundle_size, args.workers)
    for p in points:
        print(f"{p['policy']:<11} {p['records']:>9,} records  {p['kms_calls']:>7,} GenerateDataKey  "
              f"{p['bundles']:>4} bundles")  # fmt: skip
    print(f"wrote {args.out} ({Path(args.out).stat().st_size:,} bytes)")
    if args.json:
        Path(args.json).write_text(json.dumps(points, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
