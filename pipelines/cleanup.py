"""Staged output: a job writes into a staging folder and the output appears only when it finished.

::

    OUTPUT/.kmsbeam-staging-<id>/part-*, _dead_letters/part-*, beam-temp-*   while running
    OUTPUT/part-*, _kmsbeam.json, _dead_letters/part-*                        after commit()

``begin`` points the plan's ``out_dir`` and ``dead_dir`` at the staging folder (a
``--dead-letter DIR`` elsewhere gets its own ``DIR/.kmsbeam-staging-<id>/``), so everything
the job writes (Beam's ``beam-temp-*`` folders, shards, Parquet key material, manifests) lands
there. ``commit`` then deletes the previous kmsbeam output (``--overwrite``: never before the
new output is complete) and moves the staged files into place. ``discard`` (a failed or
interrupted job) aborts the multipart uploads left under the staging folders on OSS, deletes
the staging folders, and the output and dead-letter directories when the job created them:
the output directory is left as it was before the job, plaintext or not.
SIGINT is ignored while either runs, so a second Ctrl-C cannot leave half of it done.

Every path goes through ``paths`` (Beam FileSystems): local directories and ``oss://`` prefixes
alike. Local files and directories are made 0600 and 0700.
"""

from __future__ import annotations

import contextlib
import gc
import fnmatch
import os
import signal
import threading
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

from kmsbeam.pipelines import paths

__all__ = ["STAGING", "Interrupts", "Staging", "existing", "private_files", "private_umask", "remove_created",
           "sigint_ignored"]

STAGING = ".kmsbeam-staging-"
#: what a previous kmsbeam job left in OUTPUT (replaced by ``--overwrite`` at commit)
_OURS = ("part-*", "_KEY_MATERIAL_FOR_part-*", "_kmsbeam.json", "_dead_letters/*",
         "_kmsbeam_dead_letters.json")  # fmt: skip


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """SIGINT ignored inside (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def private_files(*directories: str) -> None:
    """Local files 0600 and directories 0700 under each directory (remote ones: nothing)."""
    for directory in directories:
        if paths.is_remote(directory) or not os.path.isdir(directory):
            continue
        os.chmod(directory, 0o700)
        for root, dirs, files in os.walk(directory):
            for name in dirs:
                os.chmod(os.path.join(root, name), 0o700)
            for name in files:
                os.chmod(os.path.join(root, name), 0o600)


def _strip(path: str) -> str:
    return path.rstrip("/") or path


def _inside(path: str, directory: str) -> bool:
    return _strip(path).startswith(_strip(directory) + "/")


class Staging:
    """The staging folders of one job run (see the module docstring)."""

    def __init__(self, plan: Any, existed: tuple[bool, bool] = (True, True)) -> None:
        self.plan = plan
        self.out, self.dead = _strip(str(plan.out_dir)), _strip(str(plan.dead_dir))
        self.existed = existed  # (OUTPUT, dead-letter directory) existed before the job
        name = STAGING + uuid.uuid4().hex[:12]
        self.stage_out = paths.join(self.out, name)
        if _inside(self.dead, self.out):
            self.stage_dead = paths.join(self.stage_out, self.dead[len(self.out) + 1 :])
        else:
            self.stage_dead = paths.join(self.dead, name)

    @classmethod
    def begin(cls, plan: Any, existed: tuple[bool, bool] = (True, True)) -> Staging:
        """Point ``plan`` at new staging folders."""
        staging = cls(plan, existed)
        if not paths.is_remote(staging.stage_out):
            os.makedirs(staging.stage_out, mode=0o700, exist_ok=True)
        plan.out_dir, plan.dead_dir = staging.stage_out, staging.stage_dead
        return staging

    def _restore(self) -> None:
        self.plan.out_dir, self.plan.dead_dir = self.out, self.dead

    def _old_output(self) -> list[str]:
        old: list[str] = []
        for directory in dict.fromkeys((self.out, self.dead)):
            base = directory + "/"
            for f in paths.list_dir(directory):
                rel = f[len(base):]
                if rel.startswith(STAGING) or "/" + STAGING in "/" + rel:
                    continue
                patterns = _OURS if directory == self.out else ("part-*", "_kmsbeam_dead_letters.json")
                if any(fnmatch.fnmatchcase(rel, p) for p in patterns):
                    old.append(f)
        return old

    def _moves(self) -> list[tuple[str, str]]:
        moves: list[tuple[str, str]] = []
        for stage, final in ((self.stage_out, self.out), (self.stage_dead, self.dead)):
            if stage != self.stage_out and _inside(stage, self.stage_out):
                continue  # moved with the staged output
            base = stage + "/"
            for f in paths.list_dir(stage):
                rel = f[len(base):]
                if not rel.split("/")[0].startswith("beam-temp-"):
                    moves.append((f, paths.join(final, rel)))
        return moves

    def commit(self) -> None:
        """Replace the previous output with the staged one; the plan points at OUTPUT again."""
        from apache_beam.io.filesystems import FileSystems

        with sigint_ignored():
            moves = self._moves()
            paths.delete(self._old_output())
            if not paths.is_remote(self.out):
                for dst in {os.path.dirname(d) for _, d in moves}:
                    os.makedirs(dst, mode=0o700, exist_ok=True)
            if moves:
                FileSystems.rename([s for s, _ in moves], [d for _, d in moves])
            self._remove_staging()
            self._remove_stale()
            if not paths.is_remote(self.out):
                local_dead = self.dead if os.path.isdir(self.dead) else None
                if local_dead and not os.listdir(local_dead) and not self.existed[1]:
                    os.rmdir(local_dead)
                private_files(self.out, *([self.dead] if os.path.isdir(self.dead) else []))
            self._restore()

    def _remove_stale(self) -> None:
        """Staging folders of earlier runs that were killed (SIGKILL, a power cut): kmsbeam's own
        partial output, plaintext on decrypt. OUTPUT held them, so this run had ``--overwrite``."""
        for directory in dict.fromkeys((self.out, self.dead)):
            base = directory + "/"
            stale = {f[len(base):].split("/")[0] for f in paths.list_dir(directory) if f.startswith(base)}
            for name in sorted(n for n in stale if n.startswith(STAGING)):
                paths.remove_tree(paths.join(directory, name))

    def _remove_staging(self) -> None:
        paths.remove_tree(self.stage_out)
        if not _inside(self.stage_dead, self.stage_out):
            paths.remove_tree(self.stage_dead)

    def _abort_uploads(self) -> None:
        """Unfinished multipart uploads under the staging prefixes on OSS: aborted. The pipeline
        has stopped, but a writer interrupted while starting its upload never learned the upload's
        id, and writers in other processes (or machines) are out of reach: the store is asked."""
        remote = [s for s in dict.fromkeys((self.stage_out, self.stage_dead))
                  if paths.scheme(s) == "oss" and (s == self.stage_out or not _inside(s, self.stage_out))]  # fmt: skip
        if not remote:
            return
        from apache_beam.options.pipeline_options import PipelineOptions

        from kmsbeam.oss import oss_client
        from kmsbeam.transforms.ossfs import config_from_options

        client = oss_client(config_from_options(PipelineOptions(list(self.plan.spec.beam_args))))
        for stage in remote:
            client.abort_uploads(stage + "/")

    def discard(self) -> None:
        """Delete everything this run wrote; OUTPUT is left as it was before the job."""
        with sigint_ignored():
            with warnings.catch_warnings():  # writers Beam left open: close them before deleting
                warnings.simplefilter("ignore", ResourceWarning)
                gc.collect()
            self._remove_staging()
            for directory, existed in ((self.dead, self.existed[1]), (self.out, self.existed[0])):
                if not existed:
                    paths.remove_empty_dir(directory)
            self._restore()
            self._abort_uploads()  # last: a store that refuses the listing still lost the staged files


def existing(output: str, dead_letter: str | None) -> tuple[bool, bool]:
    """Whether OUTPUT and ``--dead-letter DIR`` exist now (before the job plans anything)."""
    out = paths.normalize(output, "the output")
    dead = paths.normalize(dead_letter, "--dead-letter") if dead_letter else paths.join(out, "_dead_letters")
    return paths.is_dir(out), paths.is_dir(dead)


@contextlib.contextmanager
def private_umask() -> Iterator[None]:
    """Files this process (and the worker processes it starts) creates inside: 0600,
    directories 0700 (the previous umask is restored after)."""
    previous = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(previous)


class Interrupts:
    """Remembers a SIGINT while a job runs (Beam turns the KeyboardInterrupt it raises into a
    RuntimeError of its own; ``happened`` tells the two apart). Main thread only."""

    def __init__(self) -> None:
        self.happened = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        self.happened = True
        signal.default_int_handler(signum, frame)

    def __enter__(self) -> Interrupts:
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def remove_created(output: str, dead_letter: str | None, existed: tuple[bool, bool]) -> None:
    """After a plan that failed: the empty output and dead-letter directories it created go."""
    out = paths.normalize(output, "the output").rstrip("/")
    dead = paths.normalize(dead_letter, "--dead-letter").rstrip("/") if dead_letter else None
    for directory, was in ((dead, existed[1]), (out, existed[0])):
        if directory and not was:
            paths.remove_empty_dir(directory)
