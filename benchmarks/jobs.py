"""Whole ``kmsbeam`` jobs timed as child processes: encrypt, decrypt, rotate, the identity job, and
an older kmsbeam side by side ("today vs after"), in one run.

Usage: ``python -m benchmarks.jobs [--records N] [--repeat R] [--baseline DIR] [--after DIR] [--json PATH]``

N JSON-lines records (``benchmarks.foundation.make_record``: three 16-byte PII strings ``ssn``,
``email``, ``phone`` per record) go to a temp dir; the keys live in a throwaway ``KMSBEAM_HOME``
(``local:alias/bench-jobs``, and ``local:alias/bench-jobs-b`` for rotate). Every job runs as a
child process (``benchmarks._children``) from a temp working directory, with the CLI's default
runner (FnApiRunner, in_memory):

- start-up: ``python -c "import apache_beam, kmsbeam.pipelines.jobs"`` (the fixed cost every
  job below pays; subtract it to compare per-record costs);
- identity: the encrypt job with encryption turned off (``run_plan(plan, crypto=Identity())``:
  the same read, parse, dump and write, the records passed through unchanged);
- identity (encrypted): the identity job over the encrypted lines (after encrypt): what any
  rotation that parses and writes every line costs at least;
- ``kmsbeam encrypt IN ENC --fields ssn,email,phone --key local:alias/bench-jobs``;
- ``kmsbeam decrypt ENC PLAIN``;
- ``kmsbeam rotate ENC ROT --to-key local:alias/bench-jobs-b`` (every data key rewrapped);
- with ``--baseline DIR``: the same three CLI jobs with ``PYTHONPATH=DIR``, where an older
  kmsbeam is installed (``pip install --no-deps --target DIR <a checkout>``); ``--after DIR``
  runs the "after" side from such a directory too (default: the installed kmsbeam).

The jobs run in turn, R times each (identity, encrypt, decrypt, rotate, then the baseline's, and
again): equal repeats for both sides of every ratio, and drifting load hits all. Wall seconds,
CPU seconds (user + system of the child, from ``RUSAGE_CHILDREN``) and the load average sampled
during each run; the table keeps the run with the least CPU of each job.
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import _children as children
from benchmarks._env import throwaway
from benchmarks._measure import Load, Timing, interleaved, load_text

__all__ = ["RATIOS", "main", "run"]

KEY, KEY_B = "local:alias/bench-jobs", "local:alias/bench-jobs-b"
FIELDS = ("ssn", "email", "phone")
ROOT = Path(__file__).resolve().parents[1]  # the repo root: where ``benchmarks`` imports from
# (name, numerator job, denominator job, goal): the figures issue 17 asks for.
RATIOS = (
    ("encrypt / identity", "encrypt", "identity", 1.1),
    ("decrypt / identity", "decrypt", "identity", None),
    ("rotate / encrypt", "rotate", "encrypt", 0.5),
    ("identity of the encrypted / encrypt", "identity (encrypted)", "encrypt", None),
    ("encrypt: after / before", "encrypt", "encrypt (before)", 0.5),
    ("decrypt: after / before", "decrypt", "decrypt (before)", 0.5),
    ("rotate: after / before", "rotate", "rotate (before)", None),
)


def write_input(path: Path, n: int) -> None:
    from benchmarks.foundation import make_record

    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps(make_record(i)) + "\n")


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kmsbeam.pipelines", *args]


def commands(src: Path, work: Path, baseline: str | None,
             after: str | None = None) -> dict[str, tuple[list[str], str | None]]:  # fmt: skip
    """Each job: (command, PYTHONPATH), in the order they run in each round."""
    field_list = ",".join(FIELDS)
    jobs: dict[str, tuple[list[str], str | None]] = {
        "start-up": ([sys.executable, "-c", "import apache_beam, kmsbeam.pipelines.jobs"], after),
        "identity": ([sys.executable, "-m", "benchmarks.jobs", "--identity", str(src), str(work / "ident")],
                     os.pathsep.join(filter(None, [after, str(ROOT)]))),  # fmt: skip
    }
    sides = [("", after)] + ([(" (before)", baseline)] if baseline else [])
    for suffix, path in sides:
        tag = "-before" if suffix else ""
        enc, plain, rot = work / f"enc{tag}", work / f"plain{tag}", work / f"rot{tag}"
        jobs[f"encrypt{suffix}"] = (_cli("encrypt", str(src), str(enc), "--fields", field_list, "--key", KEY,
                                         "--overwrite", "-q"), path)  # fmt: skip
        jobs[f"decrypt{suffix}"] = (_cli("decrypt", str(enc), str(plain), "--overwrite", "-q"), path)
        jobs[f"rotate{suffix}"] = (_cli("rotate", str(enc), str(rot), "--to-key", KEY_B, "--overwrite", "-q"), path)
    # The floor of a rotation that parses its lines: the identity job over the encrypted lines.
    jobs["identity (encrypted)"] = (jobs["identity"][0][:-2] + [str(work / "enc" / "part-*"), str(work / "ident-enc")],
                                    jobs["identity"][1])  # fmt: skip
    order = ["start-up", "identity", "encrypt", "encrypt (before)", "identity (encrypted)", "decrypt",
             "decrypt (before)", "rotate", "rotate (before)"]  # fmt: skip
    return {name: jobs[name] for name in order if name in jobs}


def _job(cmd: list[str], pythonpath: str | None, cwd: Path) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = children.run(cmd, env=env, cwd=str(cwd))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:4])} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout.strip()


def _count_lines(directory: Path) -> int:
    lines = 0
    for part in directory.glob("part-*"):
        with part.open("rb") as f:
            lines += sum(1 for _ in f)
    return lines


def run(n: int, repeat: int, baseline: str | None = None, say: Any = lambda _m: None,
        after: str | None = None) -> dict[str, Timing]:  # fmt: skip
    """Every job ``repeat`` times, interleaved; ``KMSBEAM_HOME`` is set to a throwaway keystore."""
    with throwaway("kmsbeam-bench-jobs-") as work:
        from kmsbeam import open_key_source

        for key in (KEY, KEY_B):
            open_key_source(key, create=True)
        src = work / "in.jsonl"
        write_input(src, n)
        say(f"{n:,} records, {src.stat().st_size / 1e6:,.1f} MB of JSON lines in {work}")
        cwd = work / "cwd"  # not the repo root: ``python -m`` puts the working directory first
        cwd.mkdir()
        runs = {name: (lambda c=cmd, p=path: _job(c, p, cwd))
                for name, (cmd, path) in commands(src, work, baseline, after).items()}  # fmt: skip

        def progress(name: str, t: Timing) -> None:
            say(f"{name}: run {t.runs}/{repeat}, {t.wall[-1]:.2f} s wall, "
                f"{t.cpu_children[-1]:.2f} s CPU, load {t.load.samples[-1]:.2f}")  # fmt: skip

        timings = interleaved(repeat, runs, progress)
        for out in ("ident", "ident-enc", "enc", "plain", "rot", "enc-before", "plain-before", "rot-before"):  # every record out
            if (work / out).is_dir() and _count_lines(work / out) != n:
                raise RuntimeError(f"{out}: {_count_lines(work / out):,} records, not {n:,}")
        return timings


def _cpu(t: Timing) -> float:
    """The least CPU seconds of one run of the child job (user + system)."""
    return min(t.cpu_children)


def format_jobs(timings: dict[str, Timing], n: int) -> str:
    """The jobs table, then the ratios (on CPU, and on wall) with their goals."""
    head = ("job", "runs", "wall s", "CPU s", "records/s", "load during")
    cells = [head]
    for name, t in timings.items():
        best = min(range(t.runs), key=lambda i: t.cpu_children[i])  # the run with the least CPU
        rate = "-" if name == "start-up" else f"{n / t.wall[best]:,.0f}"
        cells.append((name, str(t.runs), f"{t.wall[best]:.2f}", f"{t.cpu_children[best]:.2f}", rate, t.load.text()))
    w = [max(len(c[i]) for c in cells) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w[i]) if i == 0 else c.rjust(w[i]) for i, c in enumerate(row)) for row in cells]
    lines.insert(1, "-" * len(lines[0]))
    # "net": both sides less the start-up's CPU, the per-record cost a large N converges to.
    ratios = [("ratio", "CPU x", "CPU x net", "wall x", "goal (on CPU net)", "load during")]
    start = _cpu(timings["start-up"]) if "start-up" in timings else 0.0
    for name, num, den, goal in RATIOS:
        if num not in timings or den not in timings:
            continue
        a, b = timings[num], timings[den]
        cpu, wall = _cpu(a) / _cpu(b), min(a.wall) / min(b.wall)
        net = (_cpu(a) - start) / (_cpu(b) - start) if _cpu(b) > start else float("nan")
        verdict = "-" if goal is None else f"<= {goal} ({'met' if net <= goal else 'not met'})"
        ratios.append((name, f"{cpu:.2f}", f"{net:.2f}", f"{wall:.2f}", verdict, load_text(a, b)))
    w = [max(len(c[i]) for c in ratios) for i in range(6)]
    lines += [""] + ["  ".join(c.ljust(w[i]) if i in (0, 4) else c.rjust(w[i]) for i, c in enumerate(row))
                     for row in ratios]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


# -- the identity job (a child of the harness) ----------------------------------------------
def identity_job(src: str, out: str) -> int:
    """The encrypt job of ``src`` into ``out`` with encryption turned off: the same plan and
    pipeline (``kmsbeam.pipelines.run_plan``), with the records passed through unchanged."""
    import apache_beam as beam

    from kmsbeam.pipelines import JobSpec, plan_encrypt, run_plan

    class Identity(beam.PTransform):  # type: ignore[misc, type-arg, unused-ignore]
        """Lists of records in, (the same lists, an empty dead-letter output) out."""

        def expand(self, lists: Any) -> Any:
            out = lists | "Same" >> beam.Map(lambda batch: batch).with_outputs("dead", main="records")
            return out.records, out.dead

    if "crypto" in inspect.signature(run_plan).parameters:
        spec = JobSpec("encrypt", src, out, fields=list(FIELDS), key=KEY, overwrite=True)
        result = run_plan(plan_encrypt(spec, notice=lambda _line: None), crypto=Identity())
        print("the encrypt job with crypto=Identity() (run_plan's hook)")
        return 0 if result.records_out else 1
    # A kmsbeam without the hook: the job's read -> identity -> write as a plain Beam pipeline.
    from kmsbeam.pipelines import formats, paths
    from kmsbeam.pipelines.jobs import pipeline_options

    options, runner = pipeline_options([])
    p = beam.Pipeline(runner=runner, options=options)
    records, _dead = formats.read_records(p, "jsonl", src)
    _ = formats.write_records(records | "Identity" >> beam.Map(lambda r: r), "jsonl", paths.join(out, "part"))
    p.run().wait_until_finish()
    print("a plain Beam pipeline of the job's read -> identity -> write (no crypto= hook in run_plan)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.jobs", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, metavar="N", help="records (default 1,000,000)")
    parser.add_argument("--repeat", type=int, default=2, metavar="R", help="runs of every job, interleaved (default 2)")
    parser.add_argument("--baseline", metavar="DIR", help="an older kmsbeam installed with pip --target DIR")
    parser.add_argument("--after", metavar="DIR", help="run this kmsbeam (pip --target DIR) as 'after' "
                        "instead of the installed one")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write every run as JSON")
    parser.add_argument("--identity", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.identity:
        return identity_job(*args.identity)
    if args.records < 1 or args.repeat < 1:
        parser.error("--records and --repeat must be at least 1")
    for option, where in (("--baseline", args.baseline), ("--after", args.after)):
        if where and not (Path(where) / "kmsbeam").is_dir():
            parser.error(f"{option} {where}: no kmsbeam package there (pip install --no-deps --target DIR ...)")

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    with Load() as load:
        timings = run(args.records, args.repeat, args.baseline, say, args.after)
    print(f"{args.records:,} JSONL records x 3 fields of 16 B; every job {args.repeat} times, interleaved; "
          f"the run with the least CPU shown; cpus {os.cpu_count()}; load during the whole run "
          f"{load.text()} (1-minute load, min/mean/max)")  # fmt: skip
    print(f"after = the kmsbeam in {args.after or 'the Python environment (installed)'}"
          + (f"; before = the kmsbeam in {args.baseline}" if args.baseline else ""))
    print(f"identity = {timings['identity'].result}")
    print(format_jobs(timings, args.records))
    if args.json:
        rows = {name: {"wall": t.wall, "cpu_children": t.cpu_children, "load": t.load.samples}
                for name, t in timings.items()}  # fmt: skip
        Path(args.json).write_text(json.dumps({"records": args.records, "repeat": args.repeat,
                                               "baseline": args.baseline, "jobs": rows}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
