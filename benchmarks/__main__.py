"""``python -m benchmarks``: run the foundation measurements and print one table.

Usage: ``python -m benchmarks [--records N] [--repeat R] [--quick] [--json PATH]``

Progress goes to stderr as each measurement finishes; the machine facts and the table go to
stdout at the end. The keystore is a throwaway temp dir (``KMSBEAM_HOME`` is set to it before
anything opens a key) and is deleted afterwards.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
import time
from collections.abc import Sequence
from importlib.metadata import version
from typing import Any

QUICK_RECORDS = 20_000


def _quiet_logging() -> None:
    """Keep Beam quiet: WARNING and up only, and drop its 'apitools not found' import notice.

    Beam logs that notice with ``logging.warning`` on the root logger at import time, which
    would also install a root handler; installing ours first (with a filter) prevents both.
    """
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(lambda rec: not str(rec.msg).startswith("apitools not found"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("apache_beam").setLevel(logging.WARNING)


def _args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="kmsbeam foundation measurements, one table."
    )
    parser.add_argument("--records", type=int, default=1_000_000, metavar="N",
                        help="records per measurement (default 1,000,000)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, metavar="R",
                        help="run each measurement R times (both sides of a ratio R times each, "
                             "interleaved) and keep the best (default 1)")  # fmt: skip
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: N = {QUICK_RECORDS:,} (overrides --records)")  # fmt: skip
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.records = QUICK_RECORDS
    if args.records < 1 or args.repeat < 1:
        parser.error("--records and --repeat must be at least 1")
    return args


def machine_facts(argv: Sequence[str]) -> dict[str, Any]:
    """CPU, load and versions: what a reader needs to compare two runs."""
    cpus = os.cpu_count()
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cpus
    return {
        "command": shlex.join([sys.executable, "-m", "benchmarks", *argv]),
        "cpus": f"{cpus} ({usable} usable)",
        "load": "1-minute load average sampled every second during each row (min/mean/max)",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "apache-beam": version("apache-beam"),
        "pyarrow": version("pyarrow"),
        "cryptography": version("cryptography"),
        "kmsbeam": version("kmsbeam"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _args(argv)
    _quiet_logging()
    from benchmarks import foundation  # imports Beam: after the logging setup
    from benchmarks._env import throwaway
    from benchmarks._measure import Load
    from benchmarks._table import format_table, rows_as_json

    facts = machine_facts(argv)

    def progress(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    t0 = time.perf_counter()
    with throwaway("kmsbeam-bench-") as work, Load() as load:
        facts["KMSBEAM_HOME (throwaway)"] = str(work / "home")
        progress(f"KMSBEAM_HOME={work / 'home'} (throwaway keystore, key {foundation.KEY})")
        progress(f"{args.records:,} records, repeat {args.repeat}")
        rows = foundation.run_all(args.records, args.repeat, progress)
    elapsed = time.perf_counter() - t0
    facts["load during the whole run"] = load.text()
    for name, value in facts.items():
        print(f"{name + ':':<28} {value}")
    print(f"{'records:':<28} {args.records:,} (repeat {args.repeat}, best kept)")
    print(f"{'total elapsed:':<28} {elapsed:.1f} s")
    print()
    print(format_table(rows))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump({"machine": facts, "records": args.records, "repeat": args.repeat,
                       "elapsed_seconds": elapsed, "rows": rows_as_json(rows)},
                      f, indent=2)  # fmt: skip
            f.write("\n")
        progress(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
