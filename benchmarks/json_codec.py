"""The JSONL job codec (``kmsbeam.pipelines._json``) against the standard library, side by side.

Per-line parse and per-record dump of the job before the codec (``json`` and the same checks)
and after, in CPU ns (``time.process_time``), on typical records: an
id, a name with non-ASCII letters and three 200-character base64 strings. Both sides run the
same records, alternating in equal repeats; the best repeat of each is printed.

    python -m benchmarks.json_codec [--records 100000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import time
from collections.abc import Callable
from typing import Any

from kmsbeam.pipelines import _json


def records(count: int, seed: int = 17) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    names = ["Zoë Ångström", "José Núñez", "Łukasz Żółć", "Ἀθηνᾶ", "渡辺 健", "Ada Lovelace"]
    return [{"id": i, "name": rnd.choice(names),
             **{f"f{k}": base64.b64encode(rnd.randbytes(150)).decode("ascii") for k in range(3)}}
            for i in range(count)]  # fmt: skip


def stdlib_parse(line: bytes) -> Any:
    """The job's parse before the codec: ``json.loads`` and its checks (``_parse_exactly``)."""
    return _json._parse_exactly(line)


def stdlib_dumps(record: Any) -> str:
    """The job's dump before the codec: ``json.dumps`` with keywords, then the surrogate check."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json._json_default)
    if _json._SURROGATE.search(line):
        line = json.dumps(record, separators=(",", ":"), default=_json._json_default)
    return line


def _ns(fn: Callable[[Any], Any], items: list[Any]) -> float:
    start = time.process_time()
    for item in items:
        fn(item)
    return (time.process_time() - start) / len(items) * 1e9


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    recs = records(args.records)
    lines = [stdlib_dumps(r).encode("utf-8") for r in recs]
    assert [_json.dumps(r) for r in recs] == [line.decode("utf-8") for line in lines]
    assert [_json.parse_line(line) for line in lines] == recs
    sides = {"parse": (stdlib_parse, _json.parse_line, lines), "dump": (stdlib_dumps, _json.dumps, recs)}
    print(f"{args.records} records, {sum(map(len, lines)) / len(lines):.0f} bytes a line, "
          f"best of {args.repeats}, CPU ns per record; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'step':6} {'json (stdlib)':>14} {'kmsbeam':>10} {'ratio':>7}")
    for step, (old, new, items) in sides.items():
        best_old = best_new = float("inf")
        for _ in range(args.repeats):
            best_old = min(best_old, _ns(old, items))
            best_new = min(best_new, _ns(new, items))
        print(f"{step:6} {best_old:14.0f} {best_new:10.0f} {best_new / best_old:7.2f}x")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
