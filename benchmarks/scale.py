"""``python -m benchmarks.scale``: how an EncryptFields job grows with records and workers.

Usage: ``python -m benchmarks.scale [--max-records N] [--quick] [--json PATH]``

The job is the foundation's JSONL one (read JSON lines, ``EncryptFields`` of ``ssn``, ``email``,
``phone`` with ``local:alias/bench``, dump, write JSON lines), at 10^4, 10^5 and 10^6 records
(up to ``--max-records``), on the FnApiRunner ``in_memory`` (1 worker, the driver process) and
``multi_processing`` with 2 worker processes. One table: records, workers, seconds,
us/record, peak RSS, KMS calls, data keys; then one line per worker count checking that time
grows linearly in records, memory stays flat and KMS calls stay flat-ish.

Each run is its own child process (``--one``), so its peak memory is its own: ``VmHWM`` is a
per-process high-water mark that never goes down, and ``ru_maxrss`` of children is the largest
peak of any child ever waited for (and a forked child starts with its parent's), so neither can
separate runs inside one process. The child samples ``VmHWM`` of itself and every descendant
(the SDK worker processes of multi_processing) from ``/proc`` every 0.1 s; the peak reported is
the largest among the processes that run the DoFns (in_memory: the driver itself;
multi_processing: the worker processes; the driver's own peak is in the JSON).

The keystore is a throwaway ``KMSBEAM_HOME``; inputs and outputs live under a temp dir
``/tmp/kmsbeam-scale-*`` that is removed at the end. Linux only (``/proc``).
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from benchmarks import _children as children
from benchmarks._env import throwaway
from benchmarks._measure import Load

__all__ = ["SIZES", "Run", "check_lines", "format_table", "main", "run_one"]

SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (1_000, 3_000)
MODES = {1: "in_memory", 2: "multi_processing"}
COUNTERS = ("kms_calls_generate_data_key", "data_keys_generated", "records", "values_encrypted")


@dataclass
class Run:
    """One pipeline run, measured in its own process."""

    records: int
    workers: int
    seconds: float
    worker_peak_rss: int  # bytes: the largest VmHWM among the processes running the DoFns
    driver_peak_rss: int  # bytes: the driver's own VmHWM
    kms_calls: int
    data_keys: int
    records_out: int
    load: str = "-"  # min/mean/max 1-minute load average during the run (set by the parent)

    @property
    def us_per_record(self) -> float:
        return self.seconds / self.records * 1e6


# -- the child: one run ---------------------------------------------------------------------
def _vmhwm(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


def _descendants(root: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="ascii") as f:
                    stat = f.read()
                parents[int(entry)] = int(stat[stat.rindex(")") + 2 :].split()[1])
            except (OSError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        frontier = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += frontier
    return found


class _PeakSampler(threading.Thread):
    """Samples the VmHWM of this process's descendants until stopped (pid -> peak bytes)."""

    def __init__(self, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.every = every
        self.peaks: dict[int, int] = {}
        self._halt = threading.Event()  # not _stop: Thread has its own _stop()

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.every)

    def sample(self) -> None:
        for pid in _descendants(os.getpid()):
            peak = _vmhwm(pid)
            if peak is not None:
                self.peaks[pid] = max(peak, self.peaks.get(pid, 0))

    def stop(self) -> dict[int, int]:
        self._halt.set()
        self.join()
        self.sample()
        return self.peaks


def run_one(source: str, records: int, workers: int, out_dir: str) -> Run:
    """Run the EncryptFields JSONL job once in this process; measure it."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions

    from benchmarks.foundation import FIELDS, KEY
    from kmsbeam.pipelines.jobs import _fn_api_runner, counters_of
    from kmsbeam.transforms import EncryptFields

    options = PipelineOptions(flags=[], direct_running_mode=MODES[workers], direct_num_workers=workers,
                              default_sdk_harness_log_level="ERROR")  # fmt: skip
    p = beam.Pipeline(runner=_fn_api_runner(options), options=options)
    _ = (
        p
        | "Read" >> beam.io.ReadFromText(source)
        | "Parse" >> beam.Map(json.loads)
        | "Encrypt" >> EncryptFields(KEY, list(FIELDS), encoding="text")
        | "Dump" >> beam.Map(json.dumps)
        | "Write" >> beam.io.WriteToText(os.path.join(out_dir, "part"), file_name_suffix=".jsonl")
    )
    sampler = _PeakSampler()
    sampler.start()
    t0 = time.perf_counter()
    result = p.run()
    result.wait_until_finish()
    seconds = time.perf_counter() - t0
    peaks = sampler.stop()
    driver = _vmhwm(os.getpid()) or 0
    workers_peak = max(peaks.values(), default=0) if workers > 1 else driver
    counters = {k.split("/", 1)[1]: v for k, v in counters_of(result).items() if k.startswith("kmsbeam/")}
    out = 0
    for shard in Path(out_dir).glob("part*.jsonl"):
        with open(shard, "rb") as f:
            out += sum(1 for _ in f)
    return Run(records, workers, seconds, workers_peak, driver, counters.get("kms_calls_generate_data_key", 0),
               counters.get("data_keys_generated", 0), out)  # fmt: skip


# -- the parent: all runs, one table --------------------------------------------------------
def _measure(source: str, records: int, workers: int, scratch: Path) -> Run:
    """``run_one`` in a fresh child process (its own VmHWM)."""
    out_dir = tempfile.mkdtemp(prefix="out-", dir=scratch)
    cmd = [sys.executable, "-m", "benchmarks.scale", "--one", source, str(records), str(workers), out_dir]
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    with Load() as load:
        done = children.run(cmd, env=env, cwd=root)
    shutil.rmtree(out_dir, ignore_errors=True)
    if done.returncode != 0:
        raise RuntimeError(f"run of {records:,} records on {workers} worker(s) failed:\n{done.stderr[-3000:]}")
    run = Run(**json.loads(done.stdout.strip().splitlines()[-1]))
    run.load = load.text()
    if run.records_out != records:
        raise RuntimeError(f"{records:,} records in, {run.records_out:,} out ({workers} worker(s))")
    return run


def format_table(runs: Sequence[Run]) -> str:
    head = ("records", "workers", "seconds", "us/record", "peak RSS MiB", "KMS calls", "data keys", "load during")
    rows = [head] + [
        (f"{r.records:,}", str(r.workers), f"{r.seconds:.2f}", f"{r.us_per_record:.1f}",
         f"{r.worker_peak_rss / 2**20:.0f}", f"{r.kms_calls:,}", f"{r.data_keys:,}", r.load)
        for r in runs
    ]  # fmt: skip
    w = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.rjust(w[i]) for i, c in enumerate(row)) for row in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def check_lines(runs: Sequence[Run]) -> list[str]:
    """Per worker count: linear time (marginal cost per record), flat memory, flat-ish KMS calls.

    Time is fixed start-up cost plus a per-record cost, so linearity is judged on the marginal
    cost between consecutive sizes, (t2 - t1) / (n2 - n1), which should not grow with n.
    """
    lines = []
    for workers in sorted({r.workers for r in runs}):
        rs = sorted((r for r in runs if r.workers == workers), key=lambda r: r.records)
        if len(rs) < 2:
            continue
        marginal = [(b.seconds - a.seconds) / (b.records - a.records) * 1e6 for a, b in zip(rs, rs[1:])]
        linear = marginal[-1] <= 1.35 * max(marginal[0], 1e-9) if len(marginal) > 1 else True
        mem = rs[-1].worker_peak_rss / max(rs[0].worker_peak_rss, 1)
        calls = [r.kms_calls for r in rs]
        flat_calls = calls[-1] <= max(2 * calls[0], calls[0] + 2 * workers)
        growth = rs[-1].records / rs[0].records
        lines.append(
            f"{workers} worker(s), {rs[0].records:,} -> {rs[-1].records:,} records (x{growth:,.0f}): "
            f"time {'linear' if linear else 'NOT linear'} (marginal "
            + " -> ".join(f"{m:.1f}" for m in marginal) + " us/record); "
            f"memory {'flat' if mem <= 1.5 else 'NOT flat'} (peak RSS x{mem:.2f}); "
            f"KMS calls {'flat' if flat_calls else 'NOT flat'} ({' -> '.join(map(str, calls))})"
        )  # fmt: skip
    return lines


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.scale",
                                     description="EncryptFields JSONL job: records x workers, one table.")  # fmt: skip
    parser.add_argument("--max-records", type=int, default=SIZES[-1], metavar="N",
                        help="largest size to run (sizes 10^4, 10^5, 10^6 up to N; default 10^6)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: sizes {', '.join(f'{n:,}' for n in QUICK_SIZES)}")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the runs as JSON")
    parser.add_argument("--one", nargs=4, metavar=("SRC", "N", "WORKERS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.max_records < SIZES[0] and not args.quick and not args.one:
        parser.error(f"--max-records must be at least {SIZES[0]:,}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _args(argv)
    from benchmarks.__main__ import _quiet_logging, machine_facts

    _quiet_logging()
    if args.one:  # the child: one run, its result as the last stdout line
        src, n, workers, out = args.one
        print(json.dumps(asdict(run_one(src, int(n), int(workers), out))))
        return 0
    from benchmarks import foundation
    from kmsbeam import open_key_source

    sizes = QUICK_SIZES if args.quick else tuple(n for n in SIZES if n <= args.max_records)
    facts = machine_facts(argv)
    facts["command"] = facts["command"].replace("-m benchmarks", "-m benchmarks.scale", 1)
    runs: list[Run] = []
    t0 = time.perf_counter()
    with throwaway("kmsbeam-scale-") as scratch:
        open_key_source(foundation.KEY, create=True)  # once, before the children share it
        for n in sizes:
            source = foundation.write_jsonl(n, str(scratch))
            for workers in MODES:
                run = _measure(source, n, workers, scratch)
                runs.append(run)
                print(f"  {n:,} records, {workers} worker(s): {run.seconds:.2f} s, "
                      f"{run.worker_peak_rss / 2**20:.0f} MiB", file=sys.stderr, flush=True)  # fmt: skip
            os.unlink(source)
    for name, value in facts.items():
        print(f"{name + ':':<34} {value}")
    print(f"{'total elapsed:':<34} {time.perf_counter() - t0:.1f} s")
    print()
    print(format_table(runs))
    print()
    for line in check_lines(runs):
        print(line)
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": facts, "runs": [asdict(r) for r in runs]}, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
