"""``kmsbeam encrypt --watch INPUT OUTPUT``: encrypting files as they land in a directory or
prefix, in windows run one after another from the launcher.

::

    list INPUT/* every --watch-interval seconds (hidden, _private and *.tmp names left out)
      -> the files two listings in a row saw with one size (landed), not done yet
      -> one window per poll: ONE ordinary encrypt job over exactly those files
         (``JobSpec.files``; crypt_cmd.plan_job + run_planned: plan, staging, manifest, dead
         letters) into OUTPUT/window-<yyyymmddTHHMMSSZ>-<NNNNN>/, a complete dataset that
         ``kmsbeam decrypt`` reads as it is
      -> OUTPUT/_kmsbeam_watch.json: the windows and their files (rewritten after each window)
    stop: --watch-stop-after, --watch-max-windows, SIGTERM (after the window in flight), Ctrl-C
      -> one summary table for the whole watch; exit 0, 3 (dead letters), or the code of
         the window that failed (1; 2 for a file the plan's checks refuse)

Beam's ``fileio.MatchContinuously`` is no option here: the BundleBasedDirectRunner cannot run
its Watch transform (``... was not replaced as expected``), the FnApiRunner refuses streaming,
and in batch it returns at once with no output (Beam 2.77).

Data keys: the windows run one after another in this process, and a watch's encryption keeps
data keys across bundles (``DataKeyPolicy(across_bundles=True)``, ``kmsbeam.keys.shelf``): with
the default in-memory runner, one data key serves window after window until its max age
(``--data-key-max-age``, 300 s) or records cap, not one key per window.

Caveats:
    At least once, not exactly once: a crash (or kill -9) after a window's output is in place
    and before the state is written leaves that window without a record in the state; the next
    watch encrypts its files again into a new window. It names such windows when it starts.
    A file is taken by name and size: one that changes after a window took it is reported at
    once and fails the watch's exit status (1): what was written since is not encrypted (a
    writer pausing longer than the interval looks done: write elsewhere, then rename). Empty
    files are not taken. The options are checked before the first poll (``check_options``). Ctrl-C during a window removes that window (nothing partial stays; its
    files are taken again next time); SIGTERM lets it finish.
"""

from __future__ import annotations

import json
import math
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

from apache_beam.io.filesystem import BeamIOError
from apache_beam.io.filesystems import FileSystems

from kmsbeam import DEFAULT_KEY_URI, ConfigurationError
from kmsbeam.pipelines import paths

__all__ = ["DEFAULT_INTERVAL", "STATE_NAME", "Landing", "WatchState", "check_options", "listing", "run_watch"]

STATE_NAME = "_kmsbeam_watch.json"
_VERSION = 1
DEFAULT_INTERVAL = 10.0  # seconds between two listings


def _candidate(name: str) -> bool:
    return not name.startswith((".", "_")) and not name.endswith(".tmp")


def listing(prefix: str) -> dict[str, int]:
    """The files directly under ``prefix`` that may be data, with their sizes (one listing).
    ``**``, not ``*``: Beam's ``*`` stops at a backslash, so a name holding one would never be
    listed (nor taken); files below a subdirectory are left out here."""
    pattern = paths.join(prefix, "**")
    try:
        found = FileSystems.match([pattern])[0].metadata_list
    except BeamIOError:
        paths.match(pattern)  # raises the failure as kmsbeam's one sentence
        raise
    local = not paths.is_remote(prefix)
    base = prefix.rstrip("/") + "/"
    return {m.path: int(m.size_in_bytes) for m in found
            if m.path.startswith(base) and "/" not in m.path[len(base):]
            and _candidate(paths.basename(m.path)) and (not local or os.path.isfile(m.path))}  # fmt: skip


@dataclass
class Landing:
    """The landing rule: a file is taken once two listings in a row saw it with one size (a
    half-written file grows between them)."""

    seen: dict[str, int] = field(default_factory=dict)

    def landed(self, files: dict[str, int], done: set[str]) -> dict[str, int]:
        ready = {p: n for p, n in files.items() if p not in done and n > 0 and self.seen.get(p) == n}
        self.seen = dict(files)
        return ready


@dataclass
class WatchState:
    """``OUTPUT/_kmsbeam_watch.json``: the input watched and each window with its files."""

    input: str
    windows: list[dict[str, Any]] = field(default_factory=list)

    @property
    def done(self) -> set[str]:
        return {f for w in self.windows for f in w["files"]}

    def changed(self, listed: dict[str, int]) -> list[str]:
        """Files taken by a window whose size has changed since (``listed``: a listing): data
        written after a file was taken, which no window has encrypted."""
        return sorted(f for w in self.windows for f, n in w.get("sizes", {}).items()
                      if f in listed and listed[f] != n)  # fmt: skip

    @classmethod
    def open(cls, input: str, output: str) -> WatchState:
        """The state of an earlier watch into ``output``, or a new one (``output`` empty)."""
        where = paths.join(output, STATE_NAME)
        if not paths.exists(where):
            base = output.rstrip("/") + "/"
            ours = (f[len(base):] for f in paths.list_dir(output))  # windows a crash left unrecorded
            if any(not n.startswith("window-") and n != STATE_NAME + ".tmp" for n in ours):
                raise ConfigurationError(f"the output {output} holds files but no {STATE_NAME}: give "
                                         "an empty directory or prefix, or the output of an earlier "
                                         "watch")  # fmt: skip
            return cls(input)
        data = json.loads(paths.read_text(where))
        if data.get("version") != _VERSION or data.get("input") != input:
            raise ConfigurationError(f"{where} is the state of a watch of {data.get('input')}, not "
                                     f"of {input}; give another output")  # fmt: skip
        return cls(input, list(data["windows"]))

    def save(self, output: str) -> None:
        text = json.dumps({"version": _VERSION, "input": self.input, "windows": self.windows}, indent=1)
        where = paths.join(output, STATE_NAME)
        if paths.is_remote(where):
            paths.write_text(where, text)  # one PUT: the object appears whole
            return
        paths.write_text(where + ".tmp", text)
        os.chmod(where + ".tmp", 0o600)  # as the job's local outputs
        os.replace(where + ".tmp", where)  # a crash leaves the old state or the new one

    def unrecorded(self, output: str) -> list[str]:
        """Windows in ``output`` the state does not list (a crash before the state was written)."""
        manifests = paths.match(paths.join(output, "window-*", "_kmsbeam.json"))
        found = {paths.basename(paths.parent(m)) for m in manifests}
        return sorted(found - {w["name"] for w in self.windows})

    def size_of(self, path: str) -> int:
        """The size ``path`` had when a window took it."""
        return next(w["sizes"][path] for w in self.windows if path in w.get("sizes", {}))


class _Stop:
    """When to stop polling: a deadline, a number of windows, or SIGTERM."""

    def __init__(self, after: float | None, max_windows: int | None) -> None:
        self.deadline = time.monotonic() + after if after else None
        self.max_windows = max_windows
        self.signalled = threading.Event()

    def now(self, windows: int) -> bool:
        late = self.deadline is not None and time.monotonic() >= self.deadline
        enough = self.max_windows is not None and windows >= self.max_windows
        return late or enough or self.signalled.is_set()

    def wait(self, seconds: float) -> None:
        if self.deadline is not None:
            seconds = max(0.0, min(seconds, self.deadline - time.monotonic()))
        self.signalled.wait(seconds)

    @contextmanager
    def on_sigterm(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGTERM, lambda *_: self.signalled.set())
        try:
            yield
        finally:
            signal.signal(signal.SIGTERM, previous)


@dataclass
class _Totals:
    """The finished windows' results, added up."""

    results: list[Any] = field(default_factory=list)
    files: int = 0

    def add(self, result: Any) -> None:
        self.results.append(result)
        self.files += len(result.plan.files)

    def total(self, src: str, out: str, started: float) -> Any:
        from kmsbeam.pipelines.jobs import JobResult

        last = self.results[-1]
        counters: Counter[str] = Counter()
        reasons: Counter[str] = Counter()
        for r in self.results:
            counters.update(r.counters)
            reasons.update(r.reasons)
        dead = [r.plan.dead_dir for r in self.results if r.reasons or r.dead_letters]
        window = paths.basename(last.plan.out_dir)  # every window's dead letters: a glob
        where = dead[0] if len(dead) == 1 else last.plan.dead_dir.replace(window, "window-*")
        plan = replace(last.plan, spec=replace(last.plan.spec, input=src), out_dir=out, dead_dir=where,
                       files=[f for r in self.results for f in r.plan.files])  # fmt: skip
        return JobResult(plan, dict(counters), time.monotonic() - started,
                         sum(r.bytes_in for r in self.results), sum(r.bytes_out for r in self.results),
                         reasons, any(r.counted_from_output for r in self.results))  # fmt: skip


def _table(args: Any, src: str, out: str, totals: _Totals, total: Any) -> str:
    """One summary table for the whole watch (the rows of ``summary.summary_table``, counted over
    every window, with the windows and files)."""
    from kmsbeam.pipelines import summary
    from kmsbeam.pipelines.dead_letters import reason_rows

    key = args.key or DEFAULT_KEY_URI
    if total is None:
        return summary.table(f"kmsbeam encrypt --watch: {src} -> {out} (key {key})",
                             [("windows", "0"), ("files", "0"), ("records in", "0")])  # fmt: skip
    m, counters = total.plan.manifest, total.counters
    busy = sum(r.elapsed for r in totals.results)
    dead = sum(total.reasons.values()) or total.dead_letters
    rows = [
        ("windows", f"{len(totals.results):,}"),
        ("files", f"{totals.files:,}"),
        ("records in", f"{total.records_in:,}"),
        ("records out", f"{total.records_out:,}"),
        ("values encrypted", f"{total.count('values_encrypted'):,}"),
        ("data keys generated", f"{total.count('data_keys_generated'):,}"),
        *summary.kms_call_rows(counters),
        summary.kms_cost_row(counters, summary.job_key_uris(total.plan), total.plan.spec.kms_price_per_10k),
        *summary.kms_budget_rows(counters, total.plan.spec.kms_qps),
        ("dead letters", f"{dead:,}" + (f"  ({total.plan.dead_dir})" if dead else "")),
        *reason_rows(total.reasons),
        ("bytes in", f"{total.bytes_in:,} B"),
        ("bytes out", f"{total.bytes_out:,} B"),
        ("elapsed", f"{total.elapsed:.1f} s ({busy:.1f} s in windows)"),
        ("rate", f"{total.records_in / busy if busy > 0 else 0.0:,.0f} records/s in windows"),
    ]  # fmt: skip
    if total.counted_from_output:
        rows.insert(0, ("counted", "in the written output: the runner reported no metrics"))
    return summary.table(f"kmsbeam encrypt --watch: {src} -> {out} ({m.format}, {m.mode} mode, "
                         f"key {m.key})", rows)  # fmt: skip


def _checked_prefixes(args: Any, beam_args: list[str]) -> tuple[str, str]:
    """INPUT and OUTPUT as FileSystems paths; INPUT a directory or prefix, OUTPUT elsewhere."""
    if args.overwrite:
        raise ConfigurationError("--overwrite does not apply to --watch: every window is a new "
                                 "directory under OUTPUT")  # fmt: skip
    paths.use_options(beam_args)
    src = paths.normalize(args.input, "the input").rstrip("/") or "/"
    out = paths.normalize(args.output, "the output").rstrip("/") or "/"
    if any(c in src for c in "*?["):
        raise ConfigurationError(f"--watch takes a directory or prefix to watch, not a glob ({src})")
    if paths.exists(src):
        raise ConfigurationError(f"{src} is one file; --watch takes the directory or prefix files land in")
    if not paths.is_remote(src) and not os.path.isdir(src):
        raise ConfigurationError(f"there is no directory {src} to watch")
    if src == out:
        raise ConfigurationError("the output is the watched input; choose another output")
    return src, out


def check_options(args: Any, beam_args: list[str], src: str, out: str) -> None:
    """The windows' encrypt options, checked before any file lands (a mistake: exit 2 now, not
    at the first window): fields, columns, modes, key URI, context, and the key itself (opened
    as the windows open it; not ``--parquet-mode``'s keys)."""
    from kmsbeam.pipelines.crypt_cmd import job_spec
    from kmsbeam.pipelines.plan import check_encrypt_options
    from kmsbeam.pipelines.spec import created_notice, open_for_encrypt

    spec = job_spec(args, beam_args, src, paths.join(out, "window-check"), None, files=[])
    check_encrypt_options(spec)
    if spec.parquet is None:
        key = spec.key or DEFAULT_KEY_URI
        if open_for_encrypt(key).created:
            print(created_notice(key), file=sys.stderr)


def run_watch(args: Any, beam_args: list[str]) -> int:
    """Run ``kmsbeam encrypt --watch``; returns the exit code."""
    from kmsbeam.pipelines import jobs, summary
    from kmsbeam.pipelines.cleanup import existing
    from kmsbeam.pipelines.crypt_cmd import job_spec, plan_job, run_planned

    options, _ = jobs.pipeline_options(beam_args)
    src, out = _checked_prefixes(args, beam_args)
    dead_root = paths.normalize(args.dead_letter, "--dead-letter").rstrip("/") if args.dead_letter else None
    check_options(args, beam_args, src, out)
    state = WatchState.open(src, out)
    for name in state.unrecorded(out):
        print(f"kmsbeam: warning: {paths.join(out, name)} is not in {STATE_NAME} (a watch stopped "
              "before recording it): its files are encrypted again; delete it", file=sys.stderr)  # fmt: skip
    stop, landing, totals = _Stop(args.watch_stop_after, args.watch_max_windows), Landing(), _Totals()
    grown: list[str] = []  # files that changed after a window took them
    in_flight = False
    started, code = time.monotonic(), 0
    try:
        with stop.on_sigterm():
            while code == 0 and not stop.now(len(totals.results)):
                listed = listing(src)
                for path in state.changed(listed):
                    if path not in grown:
                        grown.append(path)
                        print(f"kmsbeam: error: {path} changed after it was encrypted (a window took it "
                              f"at {state.size_of(path):,} bytes; it has {listed[path]:,} now): what was "
                              "written since is not encrypted; write files elsewhere and move them into "
                              "the watched input when complete", file=sys.stderr)  # fmt: skip
                landed = landing.landed(listed, state.done)
                files = sorted(landed)
                if files and not stop.now(len(totals.results)):
                    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                    name = f"window-{stamp}-{len(state.windows) + 1:05d}"
                    dead = paths.join(dead_root, name) if dead_root else None
                    spec = job_spec(args, beam_args, src, paths.join(out, name), dead, files=files)
                    spec.across_bundles = True if args.across_bundles is None else args.across_bundles
                    existed = existing(spec.output, dead)
                    in_flight = True
                    result = run_planned(args, plan_job(spec, existed), options, existed)
                    in_flight = False
                    if result is None:  # one line printed; the window's output was removed
                        code = 1
                        break
                    totals.add(result)
                    state.windows.append({"name": name, "files": files, "sizes": {f: landed[f] for f in files},
                                          "records_in": result.records_in,
                                          "records_out": result.records_out,
                                          "dead_letters": sum(result.reasons.values())})  # fmt: skip
                    state.save(out)
                    if not args.quiet:
                        print(f"kmsbeam: {name}: {len(files):,} files, {result.records_in:,} records, "
                              f"{sum(result.reasons.values()):,} dead letters", file=sys.stderr)  # fmt: skip
                else:
                    stop.wait(args.watch_interval or DEFAULT_INTERVAL)
    except KeyboardInterrupt:
        code = 130
    finally:
        total = totals.total(src, out, started) if totals.results else None
        if not args.quiet:
            print(_table(args, src, out, totals, total))
    if code == 130:
        removed = ("the window in flight was removed (its files are taken again next time); "
                   if in_flight else "")  # fmt: skip
        print(f"kmsbeam: error: interrupted; {removed}{len(totals.results):,} windows are complete",
              file=sys.stderr)  # fmt: skip
    if code or total is None:
        return code or (1 if grown else 0)
    finished = summary.finish(total, args.max_dead_letters)
    if grown:
        print(f"kmsbeam: error: {len(grown):,} files changed after they were encrypted (listed "
              "above): data written to them since is not encrypted", file=sys.stderr)  # fmt: skip
        return finished or 1
    return finished
