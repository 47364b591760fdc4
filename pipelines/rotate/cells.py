"""Rotation of ``--parquet-mode cells`` datasets: rewrap every cell's data key.

Each file is read with pyarrow, every non-null cell of the protected columns goes through one
``Rewrapper`` (header replaced, the bytes after it unchanged; one rewrap per distinct data
key), and the file is written again under the same name in OUTPUT with the same schema, the
``kmsbeam.cells`` metadata's ``key`` hint set to the target, and DELTA_BYTE_ARRAY for the
cell columns. This runs in the CLI process, file by file (a Parquet file is rewritten as a
whole; the data bytes inside each cell are what stays identical). Rewraps are journaled like
a records rotation's, so a run that died resumes.

A cell whose data key cannot be rewrapped is left as it was, counted and listed (file, row,
column, reason) in the rotation manifest, and the command exits with 1.
"""

from __future__ import annotations

import argparse
import io
import time
from typing import Any

import pyarrow.parquet as pq

import kmsbeam
from kmsbeam import failure_reason
from kmsbeam.formats.parquet import CellFormat, leaf_paths
from kmsbeam.keys.strict import KeyRequirement, RequiredRewrapSource
from kmsbeam.pipelines import paths
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest
from kmsbeam.pipelines.output_dir import DEAD_LETTER_DIR
from kmsbeam.pipelines.rotate.output import prepare_output
from kmsbeam.pipelines.rotate.rotator import Outcome, Verified, required_keys, trusted_sources
from kmsbeam.pipelines.rotate.state import JOURNAL_NAME, ROTATION_NAME, read_rotation, recorded_target
from kmsbeam.pipelines.rotate.verify import verify_dataset
from kmsbeam.rotation.journal import JournalWriter, read_journal
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.rotation.paths import rewrap_path
from kmsbeam.rotation.rewrap import ALREADY, FILTERED, RESUMED, REWRAPPED, Rewrapper
from kmsbeam.transforms.journal_fs import journal_store

__all__ = ["CellsRotator"]


class CellsRotator:
    """A cells dataset rotated into OUTPUT by rewrap (``kmsbeam.pipelines.rotate.rotator``)."""

    def __init__(self, args: argparse.Namespace, m: Manifest) -> None:
        self.args, self.m = args, m
        self.src, self.out = str(args.input), str(args.output)  # FileSystems paths (oss:// too)
        self._files = paths.list_files(self.src, "part-*.parquet")
        self.trusted = trusted_sources(args)
        self.to_key = args.to_key or self.trusted.resolve(m.key)  # the manifest's key is a hint only
        target = kmsbeam.open_key_source(self.to_key)
        recorded = recorded_target(read_rotation(self.src), self.to_key) if args.trust_manifest else None
        self.version = recorded or Rewrapper(target).check_target()
        journal = paths.join(self.out, JOURNAL_NAME)
        store = journal_store(journal)
        self.resuming = paths.is_dir(journal) and not paths.exists(paths.join(self.out, ROTATION_NAME))
        if not self.resuming and not args.dry_run:
            paths.delete_tree(journal)
        self.required = required_keys(args, self.to_key)
        requirement = KeyRequirement(self.required) if self.required else None
        if requirement is not None:
            target = RequiredRewrapSource(target, requirement)
        self.rw = Rewrapper(target, context=m.context, only_versions=args.only_version,
                            target_version=self.version, known=read_journal(journal, self.version, store),
                            on_moved=JournalWriter(journal, store).moved)  # fmt: skip
        self.rewrap: Any = self.rw if requirement is None else _Required(self.rw, requirement, self.version)
        self.cells = CellFormat(m.fields, bind=m.bind)

    def files(self) -> list[str]:
        return self._files

    def dry_run(self) -> Outcome:
        heads: dict[str, str] = {}  # the format's inspect: K and version of each data key
        for f in self._files:
            table = pq.read_table(io.BytesIO(paths.read_bytes(f)))
            heads.update((u.commitment, u.version) for u in self.cells.inspect(table))
        todo = sum(1 for v in heads.values() if v != self.version)
        return Outcome(f"kmsbeam rotate --dry-run: {self.src} -> key {self.to_key} (version {self.version})",
                       [("files", f"{len(self._files):,}"), ("data keys", f"{len(heads):,}"),
                        ("data keys to move", f"{todo:,}"), ("KMS calls: ReEncrypt", f"{todo:,}"),
                        ("KMS calls: Decrypt", f"{todo:,}")])  # fmt: skip

    def rotate(self) -> Outcome:
        m, out, rw = self.m, self.out, self.rw
        prepare_output(out, paths.join(out, DEAD_LETTER_DIR), self.args.overwrite or self.resuming, self._files)
        paths.delete_tree(paths.join(out, ROTATION_NAME))
        started = time.monotonic()
        failures: list[dict[str, Any]] = []
        records = 0
        for f in self._files:
            name = f.rsplit("/", 1)[-1]
            t, failed = self.cells.rewrap_table(pq.read_table(io.BytesIO(paths.read_bytes(f))), self.rewrap)
            failures += [{"file": name, "row": row, "column": exc.field, "reason": failure_reason(exc)}
                         for row, exc in failed]  # fmt: skip
            records += t.num_rows
            encodings = {c: "DELTA_BYTE_ARRAY" for c in m.fields}
            plain = [c for c in leaf_paths(t.schema) if c not in encodings]
            sink = io.BytesIO()
            pq.write_table(t, sink, compression="snappy", use_dictionary=plain, column_encoding=encodings)
            paths.write_bytes(paths.join(out, name), sink.getvalue())
        elapsed = time.monotonic() - started
        rotated = Manifest(**{**m.__dict__, "key": self.to_key, "kmsbeam_version": kmsbeam.__version__})
        paths.write_text(paths.join(out, MANIFEST_NAME), rotated.to_json())
        counts = {"records": records, "values_rewrapped": rw.counts[REWRAPPED],
                  "values_skipped": rw.counts[ALREADY], "values_filtered": rw.counts[FILTERED],
                  "values_resumed": rw.counts[RESUMED], "failed": len(failures),
                  "kms_calls_rewrap": rw.calls}  # fmt: skip
        path = rewrap_path(self.to_key)
        rotation: dict[str, Any] = {
            "kmsbeam_rotation": 1, "method": "rewrap-cells", "source_key": m.key,
            "rewrap_path": path.summary(), "target_key": self.to_key, "target_version": self.version, "resumed": self.resuming,
            "counts": counts, "required_keys": list(self.required),
            "failures": failures, "elapsed_seconds": round(elapsed, 3)}  # fmt: skip
        return Outcome(f"kmsbeam rotate: {self.src} -> {out} (cells, key {self.to_key}, version {self.version})",
                       [(k.replace("_", " "), f"{v:,}") for k, v in counts.items()]
                       + [("rewrap path", path.summary()), ("elapsed", f"{elapsed:.1f} s")],
                       rotation, failed=bool(failures))  # fmt: skip

    def verify(self, fraction: float | None) -> Verified:
        return verify_dataset(self.out, self.m, [], fraction, self.trusted.with_uris(self.to_key))

    def write_rotation(self, text: str) -> None:
        paths.write_text(paths.join(self.out, ROTATION_NAME), text)
        paths.delete_tree(paths.join(self.out, JOURNAL_NAME))


class _Required:
    """``--require-key`` as a ``KeyRewrap``: a data key under a master key it does not allow is
    refused (the cell is listed) before any call; keys already under the target are left."""

    def __init__(self, rw: Rewrapper, requirement: KeyRequirement, version: str) -> None:
        self.rw, self.requirement, self.version = rw, requirement, version

    @property
    def target_uri(self) -> str:
        return self.rw.target_uri

    @property
    def context(self) -> dict[str, str]:
        return self.rw.context

    def rewrap_key(self, wrapped: bytes, commitment: bytes) -> tuple[bytes, str]:
        if wrapped_key_version(wrapped) != self.version:
            self.requirement.check(wrapped)
        return self.rw.rewrap_key(wrapped, commitment)

    def count(self, status: str, n: int = 1) -> None:
        self.rw.count(status, n)
