"""Issue 20's figures: ``alibaba-kms-instance://`` (a KMS 3.0 instance gateway through the official
instance SDK) against the emulator, one table measured side by side in one run.

Usage: ``python -m benchmarks.instance_gateway [--calls N] [--records M] [--repeat R]
[--job-repeat J] [--no-shared] [--json PATH]``

The emulator (``kmsbeam emulator serve --port 0 --instance-port 0``) runs in a child process
(``benchmarks._children``: SIGTERM by PID, waited for), so no side shares an interpreter (or a
GIL) with the server, as a real gateway would be; its audit log counts every call (successful
calls by action, in a window around each row, read again until it stops moving). Two keys are
made through its 2016 API (``alias/bench-instance``, ``alias/bench-shared``) and a ClientKey for
all keys by ``kmsbeam emulator client-key``, into a temp directory removed at the end (with a
throwaway ``KMSBEAM_HOME``).

Calls (single thread, N calls a run, R runs interleaved: direct, kmsbeam, direct, kmsbeam; the
run with the least wall shown):

- ``AdvanceGenerateDataKey, SDK direct`` / ``AdvanceDecrypt, SDK direct``: the official SDK
  (``alibabacloud-dkms-gcs``) in the instance-SDK virtualenv's interpreter, a child process
  looping N calls and timing itself (wall and its own CPU); Decrypt unwraps the N blobs of its
  last GenerateDataKey run. AAD ``{}`` (what kmsbeam sends for no context), SDK retries off.
- ``..., kmsbeam key source``: ``kmsbeam.open_key_source(uri).generate_data_key()`` and
  ``.decrypt_data_key(wrapped)`` in this process: the same SDK in kmsbeam's helper process,
  plus the JSON pipe, base64, the retrier and the call budget. CPU = this process + the helper
  (``/proc``).
- Both sides make one GenerateDataKey and one Decrypt before their first run (client set-up,
  TLS, for kmsbeam the helper's start): ``first call ms`` in the notes. ``server CPU`` is the
  emulator process's CPU per call (``/proc``).

Jobs (each once, or J times interleaved with ``--job-repeat``; the run with the least CPU shown):
M JSONL records (``foundation.make_record``: ``id``, ``name``, ``ssn``, ``email``, ``phone``),
``kmsbeam encrypt IN ENC --fields ssn,email --key alibaba-kms-instance://...`` and ``kmsbeam
decrypt ENC PLAIN`` as child processes with the CLI's default runner, the key source trusted
through ``KMSBEAM_KEY_SOURCES``; the same two with ``--key kms-emulator://...`` (the emulator's
2016 API with an access key) unless ``--no-shared``. Wall, CPU (``RUSAGE_CHILDREN``),
records/s, KMS calls by action from the audit log and per record. Each decrypt's output is
checked against the input: record count and an order-free hash of the canonical JSON records.
"""
# mypy: allow-untyped-calls

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from functools import partial
from pathlib import Path
from typing import Any

from benchmarks import _children as children
from benchmarks._env import environ, throwaway
from benchmarks._instance_rows import DirectSdk, InstanceEmulator, audit_counts, dataset_digest, helper_pids
from benchmarks._instance_rows import proc_cpu, settled_counts
from benchmarks._measure import Load, Timing, timed
from benchmarks._vault_rows import emulator_keys

__all__ = ["CALL_ROWS", "JOB_ROWS", "main", "run"]

AK = ("bench-instance", "bench-instance-secret-5c5c")
ALIASES = ("bench-instance", "bench-shared")
PASSWORD = "bench-instance-client-key-8e21"
FIELDS = "ssn,email"
ACTIONS = ("AdvanceGenerateDataKey", "AdvanceDecrypt")
SIDES = ("SDK direct", "kmsbeam key source")
CALL_ROWS = tuple(f"{a}, {s}" for a in ACTIONS for s in SIDES)
JOB_ROWS = ("encrypt, alibaba-kms-instance://", "decrypt, alibaba-kms-instance://",
            "encrypt, kms-emulator://", "decrypt, kms-emulator://")  # fmt: skip


def _window(audit: Path, want: int, fn: Callable[[], Any]) -> tuple[Any, dict[str, int]]:
    before = audit_counts(audit)
    out = fn()
    return out, {k: v for k, v in settled_counts(audit, before, want).items() if v}


def call_rows(emu: InstanceEmulator, uri: str, client_key: Path, calls: int, repeat: int,
              say: Callable[[str], None]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The four call rows: each run's wall, client CPU, server CPU, audit counts and load."""
    from kmsbeam import open_key_source
    from kmsbeam.alikms import sdk_python

    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in CALL_ROWS}
    first: dict[str, float] = {}
    direct = DirectSdk(sdk_python(), emu.instance_endpoint, emu.ca_file, client_key, PASSWORD, f"alias/{ALIASES[0]}")
    try:
        first[SIDES[0]] = direct.first_ms
        source = open_key_source(uri)
        t0 = time.perf_counter()
        warm = source.generate_data_key()
        if source.decrypt_data_key(warm.wrapped) != warm.plaintext:
            raise RuntimeError("the key source's first data key did not round-trip")
        first[SIDES[1]] = (time.perf_counter() - t0) * 1000
        helpers = helper_pids()
        if len(helpers) != 1:
            raise RuntimeError(f"expected one instance-SDK helper process, found {len(helpers)}")
        helper = helpers[0]
        wrapped: list[Any] = []

        def kmsbeam_side(action: str) -> dict[str, Any]:
            nonlocal wrapped
            c0, h0, w0 = time.process_time(), proc_cpu(helper), time.perf_counter()
            if action == ACTIONS[0]:
                wrapped = [source.generate_data_key() for _ in range(calls)]
                good = len(wrapped)
            else:
                good = sum(source.decrypt_data_key(dk.wrapped) == dk.plaintext for dk in wrapped)
            w1 = time.perf_counter()
            cpu = time.process_time() - c0 + proc_cpu(helper) - h0
            return {"calls": calls, "good": good, "wall": w1 - w0, "cpu": cpu}

        for _ in range(repeat):
            for action in ACTIONS:
                for side in SIDES:
                    fn = (partial(direct.command, f"gdk {calls}" if action == ACTIONS[0] else "dec")
                          if side == SIDES[0] else partial(kmsbeam_side, action))  # fmt: skip
                    s0 = proc_cpu(emu.proc.pid)
                    with Load() as load:
                        res, audit = _window(emu.audit, calls, fn)
                    res.update(server_cpu=proc_cpu(emu.proc.pid) - s0, audit=audit, load=load.samples)
                    if res["good"] != calls:
                        raise RuntimeError(f"{action}, {side}: {res['good']} of {calls} calls answered right")
                    runs[f"{action}, {side}"].append(res)
                    say(f"{action}, {side}: {calls / res['wall']:,.1f} calls/s, audit {audit}")
    finally:
        direct.close()
    out = {}
    for name, rs in runs.items():
        best = min(rs, key=lambda r: r["wall"])
        load = Load()
        for r in rs:
            load.samples += r["load"]
        side = SIDES[0] if name.endswith(SIDES[0]) else SIDES[1]
        out[name] = {**best, "runs": len(rs), "load": load.text(), "first_ms": first[side], "all": rs}
    return out


def _job(cmd: list[str], env: dict[str, str], cwd: Path) -> str:
    done = children.run(cmd, env=env, cwd=str(cwd))
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[2:4])} exited {done.returncode}: {done.stderr.strip()[-2000:]}")
    return done.stdout + done.stderr


def job_rows(emu: InstanceEmulator, keys: dict[str, str], env: dict[str, str], work: Path, records: int,
             repeat: int, say: Callable[[str], None]) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The job rows: encrypt then decrypt per key, J rounds interleaved; the decrypts checked."""
    from benchmarks.jobs import write_input

    src = work / "in.jsonl"
    write_input(src, records)
    want = dataset_digest(src)
    say(f"{records:,} records, {src.stat().st_size / 1e6:,.1f} MB of JSON lines")
    (work / "cwd").mkdir()
    py = [sys.executable, "-m", "kmsbeam.pipelines"]
    timings = {name: Timing() for name in JOB_ROWS if keys.get(name.split(", ")[1])}
    facts: dict[str, list[dict[str, Any]]] = {name: [] for name in timings}
    for rnd in range(repeat):
        for name in timings:
            verb, scheme = name.split(", ")
            tag = "instance" if scheme.startswith("alibaba") else "shared"
            enc, plain = work / f"enc-{tag}", work / f"plain-{tag}"
            cmd = (py + ["encrypt", str(src), str(enc), "--fields", FIELDS, "--key", keys[scheme], "--overwrite"]
                   if verb == "encrypt" else py + ["decrypt", str(enc), str(plain), "--overwrite"])  # fmt: skip
            _, audit = _window(emu.audit, 1, partial(timed, partial(_job, cmd, env, work / "cwd"), timings[name]))
            fact: dict[str, Any] = {"audit": audit}
            if verb == "decrypt":
                fact["check"] = got = dataset_digest(plain)
                if got != want:
                    raise RuntimeError(f"{name}: the plaintext is {got[0]:,} records (hash {got[1]}), the input "
                                       f"{want[0]:,} (hash {want[1]})")  # fmt: skip
            facts[name].append(fact)
            t = timings[name]
            say(f"{name}: run {t.runs}/{repeat}, {t.wall[-1]:.1f} s wall, {t.cpu_children[-1]:.1f} s CPU, "
                f"audit {audit}")  # fmt: skip
    out = {}
    for name, t in timings.items():
        i = min(range(t.runs), key=lambda j: t.cpu_children[j])
        out[name] = {"records": records, "wall": t.wall[i], "cpu": t.cpu_children[i], "runs": t.runs,
                     "load": t.load.text(), **facts[name][i], "digest": want,
                     "all": [{"wall": w, "cpu": c, **f} for w, c, f in zip(t.wall, t.cpu_children, facts[name])]}
    return out


def run(calls: int, records: int, repeat: int, job_repeat: int, shared: bool,
        say: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:  # fmt: skip
    """Every row: the emulator in a child process, the direct SDK loop and the jobs in others."""
    from kmsbeam import process
    from kmsbeam.alikms import clear_clients
    from kmsbeam.keys.registry import clear_key_source_cache

    res: dict[str, Any] = {"calls": {}, "jobs": {}}
    with throwaway("kmsbeam-bench-instance-") as work, ExitStack() as stack:
        emu = stack.enter_context(InstanceEmulator(work / "kms", AK))
        shared_uri = emulator_keys(emu.endpoint, AK, ALIASES)[1]
        client_key = work / "clientKey.json"
        emu.issue_client_key(client_key, PASSWORD)
        uri = f"alibaba-kms-instance://{emu.instance_endpoint}/alias/{ALIASES[0]}?ca={emu.ca_file}"
        creds = {"KMSBEAM_KMS_CLIENT_KEY_FILE": str(client_key), "KMSBEAM_KMS_CLIENT_KEY_PASSWORD": PASSWORD,
                 "ALIBABA_CLOUD_ACCESS_KEY_ID": AK[0], "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK[1]}  # fmt: skip
        stack.enter_context(environ(creds))
        stack.callback(clear_key_source_cache)
        stack.callback(process.discard, "alikms.instance-gateway")
        stack.callback(clear_clients)
        clear_clients()
        clear_key_source_cache()
        res["uris"] = {"alibaba-kms-instance://": uri, "kms-emulator://": shared_uri if shared else ""}
        res["emulator pid"] = emu.proc.pid
        if calls:
            res["calls"] = call_rows(emu, uri, client_key, calls, repeat, say)
            clear_key_source_cache()
            process.discard("alikms.instance-gateway")  # stops this process's helper (and waits)
        if records:
            drop = ("PYTHONPATH", "KMSBEAM_KMS_CLIENT_KEY", "KMSBEAM_KMS_INSTANCE_CA")
            env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
            env.update(creds, KMSBEAM_KEY_SOURCES=",".join(u for u in res["uris"].values() if u))
            res["jobs"] = job_rows(emu, res["uris"], env, work, records, job_repeat, say)
        res["audit total"] = dict(audit_counts(emu.audit))
    res["helpers left"] = helper_pids()
    return res


def format_table(res: dict[str, Any], command: str) -> str:
    cells = [["measurement", "N", "runs", "wall s", "CPU s", "rate /s", "per item", "KMS calls (audit log)",
              "calls/record", "load during", "notes"]]  # fmt: skip
    for name, r in res["calls"].items():
        n = r["calls"]
        calls = " ".join(f"{k} {v:,}" for k, v in sorted(r["audit"].items()))
        cells.append([name, f"{n:,} calls", str(r["runs"]), f"{r['wall']:.2f}", f"{r['cpu']:.2f}",
                      f"{n / r['wall']:,.1f}", f"{r['wall'] / n * 1000:.2f} ms/call", calls, "-", r["load"],
                      f"client CPU {r['cpu'] / n * 1000:.1f} ms/call, server CPU {r['server_cpu'] / n * 1000:.1f} "
                      f"ms/call; set-up + first GenerateDataKey + Decrypt {r['first_ms']:,.0f} ms"])  # fmt: skip
    for name, r in res["jobs"].items():
        n = r["records"]
        calls = " ".join(f"{k} {v:,}" for k, v in sorted(r["audit"].items())) or "0"
        per = sum(v for k, v in r["audit"].items() if not k.startswith("error")) / n
        check = (f"checked: {r['check'][0]:,} records, hash equal" if "check" in r
                 else f"input {r['digest'][0]:,} records")  # fmt: skip
        cells.append([name, f"{n:,} records", str(r["runs"]), f"{r['wall']:.2f}", f"{r['cpu']:.2f}",
                      f"{n / r['wall']:,.0f}", f"{r['wall'] / n * 1e6:.1f} us/record", calls, f"{per:.2g}",
                      r["load"], check])  # fmt: skip
    w = [max(len(c[i]) for c in cells) for i in range(len(cells[0]))]
    left = (0, 7, 10)
    lines = ["  ".join(c.ljust(w[i]) if i in left else c.rjust(w[i]) for i, c in enumerate(row)).rstrip()
             for row in cells]  # fmt: skip
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join([*lines, "", f"command: {command}"])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.instance_gateway", description=" ".join(__doc__.split("\n\n")[0].split()))
    parser.add_argument("--calls", type=int, default=300, metavar="N", help="calls per call row and run (default "
                        "300); 0 skips the call rows")  # fmt: skip
    parser.add_argument("--records", type=int, default=1_000_000, metavar="M", help="records of the jobs (default "
                        "1,000,000); 0 skips the jobs")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=1, metavar="R", help="runs of every call row, interleaved "
                        "(default 1)")  # fmt: skip
    parser.add_argument("--job-repeat", type=int, default=1, metavar="J", help="runs of every job, interleaved "
                        "(default 1)")  # fmt: skip
    parser.add_argument("--no-shared", action="store_true", help="skip the kms-emulator:// jobs")
    parser.add_argument("--json", metavar="PATH", help="also write every run as JSON")
    args = parser.parse_args(argv)
    if min(args.calls, args.records) < 0 or min(args.repeat, args.job_repeat) < 1:
        parser.error("--calls and --records must be >= 0, --repeat and --job-repeat >= 1")

    def say(msg: str) -> None:
        print(f"  {msg}", file=sys.stderr, flush=True)

    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    with Load() as load:
        res = run(args.calls, args.records, args.repeat, args.job_repeat, not args.no_shared, say)
    command = ("python -m benchmarks.instance_gateway " + shlex.join(sys.argv[1:] if argv is None else list(argv)))
    print(f"started {started}; emulator with its instance gateway in a child process (127.0.0.1), calls counted "
          f"in its audit log; instance SDK alibabacloud-dkms-gcs in its own virtualenv; jobs: the CLI's default "
          f"runner, fields {FIELDS}; cpus {os.cpu_count()}; load during the whole run {load.text()} "
          f"(1-minute, min/mean/max)")  # fmt: skip
    print(format_table(res, command.rstrip()))
    if args.json:
        Path(args.json).write_text(json.dumps({"command": command, "started": started, **res}, indent=2,
                                              default=str) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
