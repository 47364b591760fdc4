"""The JSONL job codec (``kmsbeam.pipelines._json``) against the standard library, side by side.

Per-line parse and per-record dump of the job before the codec (``json`` and the same checks)
and after, in CPU ns (``time.process_time``), on typical records: an
id, a name with non-ASCII letters and three 200-character base64 strings. Both sides run the
same records, alternating in equal repeats; the best repeat of each is printed, and next to
them the bare ``json.loads``/``json.dumps`` call without the job's checks.

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


def bare_parse(line: bytes) -> Any:
    return json.loads(line.decode("utf-8"))


def bare_dumps(record: Any) -> str:
    return json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json._json_default)


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
    sides = {"parse": (stdlib_parse, _json.parse_line, bare_parse, lines),
             "dump": (stdlib_dumps, _json.dumps, bare_dumps, recs)}  # fmt: skip
    print(f"{args.records} records, {sum(map(len, lines)) / len(lines):.0f} bytes a line, "
          f"best of {args.repeats}, CPU ns per record; load {os.getloadavg()[0]:.2f}")  # fmt: skip
    print(f"{'step':6} {'before (json)':>14} {'kmsbeam':>10} {'ratio':>7}   {'json call alone':>15}")
    for step, (old, new, bare, items) in sides.items():
        best = [float("inf")] * 3
        for _ in range(args.repeats):
            best = [min(b, _ns(fn, items)) for b, fn in zip(best, (old, new, bare))]
        print(f"{step:6} {best[0]:14.0f} {best[1]:10.0f} {best[1] / best[0]:7.2f}x   {best[2]:15.0f}")
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
