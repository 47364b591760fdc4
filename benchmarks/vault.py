"""Issue 18's figures: a key vault (values v2) next to self-contained values (v1), side by side in
one run: output bytes, encrypt and decrypt, and ``vault rotate`` against today's dataset rotation
and ``rotate --reencrypt``; on local disk or (``--oss``) the loopback OSS server.

Usage: ``python -m benchmarks.vault [--records N] [--keys K] [--repeat R] [--oss] [--emulator] [--json PATH]``

N JSON-lines records (``benchmarks.foundation.make_record``: three 16-byte PII strings ``ssn``,
``email``, ``phone``), encrypted with ``--max-records-per-key N/K`` so the dataset has K data
keys (default 1,000; the table prints the counts found). Keys: a throwaway ``local:`` keystore
(``local:alias/bench-vault-a`` and ``-b``), or with ``--emulator`` two keys on ``kmsbeam emulator
serve`` in a child process, whose audit log counts the KMS calls (the trusted count; without it
the count is the job's own summary). Every job is a child process (``benchmarks._children``),
the CLI's default runner; in each round, in this order (``_vault_rows.JOBS``):

start-up (``import apache_beam, kmsbeam.pipelines.jobs``, the fixed cost of every job),
``encrypt`` v1, ``encrypt --key-vault`` v2, ``decrypt`` of each, ``rotate ENC1 --to-key b``
(the dataset rotation), ``rotate --reencrypt``, ``vault rotate VAULT --to-key b``, and ``rotate
ENC1 --key-vault`` (moving the v1 dataset into a vault). Each round's ``encrypt v2`` writes a
fresh vault (``vault-enc-rN``) and that round's ``vault rotate`` rewraps it from a to b, so every
repeat rewraps every entry of a vault holding exactly the dataset's keys (alternating targets on
one vault would also work, but its generations would pile up from round to round).

R rounds, the jobs interleaved; the table shows each job's run with the least CPU (user + system
from ``RUSAGE_CHILDREN``), its wall seconds and its own ``elapsed`` summary row (``own s``: the
job without the interpreter's start and imports). The ratios are on each: ``CPU x net`` takes the
start-up row's CPU off both sides, and is ``n/a`` when a side costs less than it (a local ``vault
rotate`` loads no Beam, so it starts faster than the start-up row's ``import apache_beam``). Bytes are
measured, not taken from summaries: before each job every file under the work root is listed
(local: atimes set before mtimes, so a file read shows a new atime), after it again: bytes of
new or rewritten files (data, and key-vault entries apart) and, locally, of files read. On OSS
the server's own counters give the bytes over HTTP (``MB in/out``, vault entries included).
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import _children as children
from benchmarks._env import environ, throwaway
from benchmarks._measure import Load, Timing, load_text, timed
from benchmarks._vault_rows import JOBS, Storage, audit_counts, changes, commands, emulator_keys, summary_calls
from benchmarks._vault_rows import summary_elapsed, summary_row

__all__ = ["RATIOS", "main", "run"]

ALIASES = ("bench-vault-a", "bench-vault-b")
OSS_AK = ("loopback-ak", "loopback-secret")  # the loopback OSS server's; the emulator's too
# (ratio, numerator, denominator, goal): time ratios on CPU, wall, CPU net of start-up, own elapsed.
RATIOS = (
    ("encrypt v2 / v1", "encrypt v2", "encrypt v1", None),
    ("decrypt v2 / v1", "decrypt v2", "decrypt v1", None),
    ("dataset rotate / vault rotate", "dataset rotate", "vault rotate", 100.0),
    ("rotate --reencrypt / vault rotate", "rotate --reencrypt", "vault rotate", None),
    ("rotate --key-vault / dataset rotate", "rotate --key-vault", "dataset rotate", None),
)


def _job(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    done = children.run(cmd, env=env, cwd=str(cwd))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:5])} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout + done.stderr


def run(n: int, keys_wanted: int, repeat: int, oss: bool = False, emulator: bool = False,
        say: Any = lambda _m: None) -> dict[str, Any]:  # fmt: skip
    """Every job ``repeat`` times, interleaved: timings, per-run facts and the sizes."""
    from benchmarks.jobs import write_input

    per_key = max(1, -(-n // keys_wanted))
    with throwaway("kmsbeam-bench-vault-") as work, ExitStack() as stack:
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        keys, audit = (f"local:alias/{ALIASES[0]}", f"local:alias/{ALIASES[1]}"), None
        if oss:
            server = stack.enter_context(children.OssServer())
            env.update(server.environ())
            stack.enter_context(environ(server.environ()))
            from kmsbeam.oss import clear_clients

            clear_clients()
        if emulator:
            _proc, endpoint = stack.enter_context(children.emulator(work / "kms", dict([OSS_AK])))
            keys, audit = emulator_keys(endpoint, OSS_AK, ALIASES), work / "kms" / "audit.jsonl"
            env.update(ALIBABA_CLOUD_ACCESS_KEY_ID=OSS_AK[0], ALIBABA_CLOUD_ACCESS_KEY_SECRET=OSS_AK[1],
                       KMSBEAM_KEY_SOURCES=",".join(keys))  # fmt: skip
        else:
            from kmsbeam import open_key_source

            for key in keys:
                open_key_source(key, create=True)
        st = Storage("oss://bench/" if oss else str(work / "data"), oss)
        (work / "data").mkdir()
        local_src = work / ("in.jsonl" if oss else "data/in.jsonl")
        write_input(local_src, n)
        src = st.put(local_src, "in.jsonl")
        plain = local_src.stat().st_size
        say(f"{n:,} records, {plain / 1e6:,.1f} MB of JSON lines; {per_key:,} records per data key; {st.root}")
        (work / "cwd").mkdir()  # not the repo root: ``python -m`` puts the working directory first
        timings = {name: Timing() for name in JOBS}
        facts: dict[str, list[dict[str, Any]]] = {name: [] for name in JOBS}
        for rnd in range(repeat):
            for name, cmd in commands(st, src, keys, rnd, per_key).items():
                before, calls0 = st.arm(), audit_counts(audit) if audit else None
                http0 = server.counters() if oss else None
                timed(partial(_job, cmd, env, work / "cwd"), timings[name])
                http1 = server.counters() if oss else None
                out = str(timings[name].result)
                fact: dict[str, Any] = {**changes(st.root, before, st.files(), oss),
                                        "summary calls": summary_calls(out), "elapsed": summary_elapsed(out)}
                if audit is not None and calls0 is not None:
                    fact["audit calls"] = {k: v for k, v in (audit_counts(audit) - calls0).items() if v}
                if http0 and http1:
                    fact["http in"], fact["http out"] = http1["in"] - http0["in"], http1["out"] - http0["out"]
                for row in ("records out", "records", "data keys generated", "rewrapped", "data bytes read / written"):
                    if summary_row(out, row) is not None:
                        fact[row] = summary_row(out, row)
                if name == "vault rotate":
                    fact["vault entries"] = st.vault_entries(f"vault-enc-r{rnd}")
                facts[name].append(fact)
                t = timings[name]
                say(f"{name}: run {t.runs}/{repeat}, {t.wall[-1]:.2f} s wall, {t.cpu_children[-1]:.2f} s CPU, "
                    f"load {t.load.samples[-1]:.2f}")  # fmt: skip
        final = st.files()
        size = {what: sum(s for p, (s, _) in final.items() if p.startswith(st.path(what).rstrip("/") + "/"))
                for what in ("enc-v1", "enc-v2", f"vault-enc-r{repeat - 1}")}  # fmt: skip
        _check(facts, n)
        return {"timings": timings, "facts": facts, "plain": plain, "sizes": size, "keys": keys,
                "per_key": per_key, "counted": "audit log" if audit else "job summaries"}  # fmt: skip


def _check(facts: dict[str, list[dict[str, Any]]], n: int) -> None:
    """Every job saw all N records; every vault rotate rewrapped its whole vault."""
    for name, runs in facts.items():
        for f in runs:
            got = f.get("records out", f.get("records"))
            if got is not None and int(got.replace(",", "")) != n:
                raise RuntimeError(f"{name}: {got} records, not {n:,}")
    for f in facts["vault rotate"]:
        if int(f["rewrapped"].replace(",", "")) != f["vault entries"]:
            raise RuntimeError(f"vault rotate rewrapped {f['rewrapped']} of {f['vault entries']} entries")


def _best(t: Timing) -> int:
    return min(range(t.runs), key=lambda i: t.cpu_children[i])


def _calls(f: dict[str, Any]) -> dict[str, int]:
    return dict(f.get("audit calls", f["summary calls"]))


def format_table(res: dict[str, Any], oss: bool) -> str:
    timings, facts = res["timings"], res["facts"]
    head = ["job", "runs", "wall s", "CPU s", "own s", "KMS calls", "by API", "data MB read", "data MB written",
            "vault KB read/written"] + (["HTTP MB in/out"] if oss else []) + ["load during"]  # fmt: skip
    cells = [head]
    for name, t in timings.items():
        i = _best(t)
        f, calls = facts[name][i], _calls(facts[name][i])
        read = "-" if oss else _mb(f["data read"])
        vault = ("-" if oss else _mb(f["vault read"], 1e3)) + "/" + _mb(f["vault written"], 1e3)
        row = [name, str(t.runs), f"{t.wall[i]:.2f}", f"{t.cpu_children[i]:.2f}",
               "-" if f["elapsed"] is None else f"{f['elapsed']:.2f}", f"{sum(calls.values()):,}",
               " ".join(f"{k} {v:,}" for k, v in sorted(calls.items())) or "-", read,
               _mb(f["data written"]), vault]  # fmt: skip
        if oss:
            row.append(f"{f['http in'] / 1e6:,.3f}/{f['http out'] / 1e6:,.3f}")
        cells.append(row + [t.load.text()])
    lines = _align(cells, left=(0, 6))
    plain, size = res["plain"], res["sizes"]
    v1, v2 = size["enc-v1"], size["enc-v2"]
    vault = size[next(k for k in size if k.startswith("vault-"))]
    lines += ["", f"output bytes: plaintext {plain / 1e6:,.1f} MB, v1 {v1 / 1e6:,.1f} MB, v2 {v2 / 1e6:,.1f} MB "
              f"+ vault {vault / 1e3:,.1f} KB; v1/plain {v1 / plain:.2f}x, v2/plain {v2 / plain:.2f}x, "
              f"v2/v1 {v2 / v1:.3f}x, (v2 + vault)/v1 {(v2 + vault) / v1:.3f}x", ""]  # fmt: skip
    start = min(timings["start-up"].cpu_children)
    ratios = [["ratio", "CPU x", "CPU x net", "wall x", "own x", "goal", "load during"]]
    for label, num, den, goal in RATIOS:
        a, b = timings[num], timings[den]
        ca, cb = a.cpu_children[_best(a)], b.cpu_children[_best(b)]
        ea, eb = facts[num][_best(a)]["elapsed"], facts[den][_best(b)]["elapsed"]
        net = (ca - start) / (cb - start) if cb > start and ca > start else None
        own = ea / eb if ea and eb else None
        verdict = "-"
        if goal is not None:  # judged on each measure: CPU, wall, the jobs' own elapsed
            judged = {"CPU": ca / cb, "wall": a.wall[_best(a)] / b.wall[_best(b)], "own": own}
            verdict = f">= {goal:g}: " + ", ".join(f"{k} {'-' if v is None else 'met' if v >= goal else 'not met'}"
                                                   for k, v in judged.items())  # fmt: skip
        ratios.append([label, f"{ca / cb:,.2f}", "n/a" if net is None else f"{net:,.2f}",
                       f"{a.wall[_best(a)] / b.wall[_best(b)]:,.2f}", "-" if own is None else f"{own:,.1f}",
                       verdict, load_text(a, b)])  # fmt: skip
    return "\n".join(lines + _align(ratios, left=(0, 5)))


def _mb(n: int, unit: float = 1e6) -> str:
    """``0`` for nothing (exactly), else n / unit with 2 decimals."""
    return "0" if n == 0 else f"{n / unit:,.2f}"


def _align(cells: list[list[str]], left: tuple[int, ...]) -> list[str]:
    w = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    out = ["  ".join(c.ljust(w[i]) if i in left else c.rjust(w[i]) for i, c in enumerate(r)).rstrip() for r in cells]
    return out[:1] + ["-" * len(out[0])] + out[1:]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.vault", description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=1_000_000, metavar="N", help="records (default 1,000,000)")
    parser.add_argument("--keys", type=int, default=1000, metavar="K", help="data keys wanted (default 1,000): "
                        "--max-records-per-key ceil(N/K)")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=2, metavar="R", help="rounds of every job (default 2)")
    parser.add_argument("--oss", action="store_true", help="the data and the vaults on the loopback OSS server")
    parser.add_argument("--emulator", action="store_true", help="kms-emulator:// keys; calls from its audit log")
    parser.add_argument("--json", metavar="PATH", help="also write every run as JSON")
    args = parser.parse_args(argv)
    if min(args.records, args.keys, args.repeat) < 1:
        parser.error("--records, --keys and --repeat must be at least 1")

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    with Load() as load:
        res = run(args.records, args.keys, args.repeat, args.oss, args.emulator, say)
    facts = res["facts"]
    data_keys = facts["encrypt v1"][-1].get("data keys generated", "?")
    rotated = facts["vault rotate"][-1]
    where = "loopback OSS server (child process)" if args.oss else "local disk"
    print(f"{args.records:,} JSONL records x 3 fields of 16 B; {res['per_key']:,} records per data key: data keys "
          f"generated by encrypt v1 {data_keys}, entries in a vault of encrypt v2 {rotated['vault entries']:,}; "
          f"storage {where}; keys {', '.join(res['keys'])}; KMS calls from the {res['counted']}; every job "
          f"{args.repeat} times, interleaved, the run with the least CPU shown; cpus {os.cpu_count()}; "
          f"load during the whole run {load.text()} (1-minute, min/mean/max)")  # fmt: skip
    print(f"vault rotate's own summary: rewrapped {rotated['rewrapped']}, data bytes read / written "
          f"{rotated['data bytes read / written']}")  # fmt: skip
    print(format_table(res, args.oss))
    if args.json:
        rows = {name: {"wall": t.wall, "cpu_children": t.cpu_children, "load": t.load.samples, "runs": facts[name]}
                for name, t in res["timings"].items()}  # fmt: skip
        Path(args.json).write_text(json.dumps({"records": args.records, "repeat": args.repeat, "oss": args.oss,
                                               "emulator": args.emulator, "plain": res["plain"],
                                               "sizes": res["sizes"], "jobs": rows}, indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
