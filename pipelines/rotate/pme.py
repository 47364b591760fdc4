"""Rotation of PME (Parquet Modular Encryption) datasets, on local disk.

- ``kmsbeam rotate DIR --in-place`` (``PmeKeyMaterialRotator``), for datasets written with
  external key material: each file's key material is rewrapped under the current versions of
  its master keys (pyarrow's master-key rotation); data files stay as they are. Files whose key
  material already names the current versions are skipped (read from the key texts, no call);
  with ``--trust-manifest`` the versions come from the rotation manifest (no KMS call at all).
  Each file's key material is its own journal, so a run stopped half-way resumes.
- ``kmsbeam rotate DIR OUTPUT`` (``PmeRewriteRotator``): PME with *internal* key material keeps
  its wrapped keys in the footer, which pyarrow can neither rewrap in place nor write with given
  data keys, so each file is decrypted row group by row group and written again with fresh PME
  keys under the target master keys (rows, schema and row groups unchanged). Memory is one row
  group; nothing decrypted touches disk outside the encrypted output.

PME names master keys by a hash of their URI (``master_key_id``): the manifest's URIs are hints
resolved against the caller's key sources, and the ids in the files stay the written ones.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

import kmsbeam
from kmsbeam import ConfigurationError, KmsBeamError, failure_reason
from kmsbeam.formats.parquet import (
    PmeDecryption,
    PmeEncryption,
    key_material_path,
    master_key_id,
    parse_key_text,
    rotate_key_material,
)
from kmsbeam.pipelines.manifest import Manifest
from kmsbeam.pipelines.output_dir import prepare_output
from kmsbeam.pipelines.rotate.rotator import Outcome, Verified, trusted_sources
from kmsbeam.pipelines.rotate.state import ROTATION_NAME, read_rotation, sample_indices
from kmsbeam.rotation.rewrap import Rewrapper

__all__ = ["PmeKeyMaterialRotator", "PmeRewriteRotator"]


def _resolve(args: argparse.Namespace, m: Manifest) -> tuple[dict[str, str], dict[str, str]]:
    """{written URI: the caller's URI} and the PME key map for the URIs that changed."""
    resolved = trusted_sources(args).resolve_all([m.footer_key or m.key, *(m.column_keys or {}).values()])
    return resolved, {master_key_id(h): r for h, r in resolved.items() if h != r}


class _Pme:
    """What both PME rotations share: the files, their read-back and the rotation manifest."""

    where: Path
    _files: list[Path]
    decryption: PmeDecryption

    def files(self) -> list[str]:
        return [str(f) for f in self._files]

    def verify(self, fraction: float | None) -> Verified:
        """Read (decrypt) every file, or an evenly spread fraction of them, and count rows."""
        picked = [self._files[i] for i in sample_indices(len(self._files), fraction or 1.0)]
        out = {"files_sampled": len(picked), "files_read": 0, "rows_read": 0, "failed": 0}
        for f in picked:
            try:
                read = pq.read_table(f, decryption_properties=self.decryption.properties(str(f)))
            except (KmsBeamError, OSError, ValueError):
                out["failed"] += 1
                continue
            out["files_read"] += 1
            out["rows_read"] += read.num_rows
        row = f"{out['files_read']:,} of {out['files_sampled']:,} files, {out['failed']:,} failed"
        return Verified(out, [("verified (decrypted)", row)], out["failed"])

    def write_rotation(self, text: str) -> None:
        (self.where / ROTATION_NAME).write_text(text, encoding="utf-8")


class PmeKeyMaterialRotator(_Pme):
    """``--in-place``: external key material rewrapped, data files untouched."""

    def __init__(self, args: argparse.Namespace, m: Manifest) -> None:
        self.m, self.where = m, Path(args.input)
        if m.mode != "pme" or m.key_material != "external":
            raise ConfigurationError("--in-place rotates PME datasets written with "
                                     "--external-key-material; give an OUTPUT directory instead")  # fmt: skip
        written = list(dict.fromkeys([m.footer_key or m.key, *(m.column_keys or {}).values()]))
        if args.to_key and args.to_key not in written:
            raise ConfigurationError("PME names its master keys by their URIs: rotate the keys "
                                     "behind them (move the alias, or a new key version), then "
                                     "run --in-place without --to-key")  # fmt: skip
        if args.reencrypt or args.only_version:
            raise ConfigurationError("--reencrypt and --only-version/--only-key do not combine with --in-place")
        self.resolved, key_map = _resolve(args, m)
        self.uris = list(dict.fromkeys(self.resolved.values()))
        previous = read_rotation(self.where) if args.trust_manifest else None
        recorded = previous.get("target_versions") if previous else None
        self.versions: dict[str, str] = {}
        for hint, uri in self.resolved.items():
            if isinstance(recorded, dict) and isinstance(recorded.get(hint), str):
                self.versions[hint] = recorded[hint]
            else:
                self.versions[hint] = Rewrapper(kmsbeam.open_key_source(uri)).check_target()
            self.versions[uri] = self.versions[hint]  # key texts name the URI they were sealed with
        self._files = sorted(f for f in self.where.glob("part-*") if key_material_path(f).is_file())
        if not self._files:
            raise ConfigurationError(f"{self.where} has no part-* files with external key material")
        self.todo = [f for f in self._files if not self._current(f)]
        self.decryption = PmeDecryption(self.uris, m.context, key_map)

    def _current(self, path: Path) -> bool:
        """Whether a file's key material names only the target versions (unreadable: False)."""
        try:
            stored = json.loads(key_material_path(path).read_text(encoding="utf-8"))
            found: dict[str, str] = {}
            for raw in stored.values():
                meta = json.loads(raw)
                text = parse_key_text(meta["wrappedKEK" if meta.get("doubleWrapping") else "wrappedDEK"])
                if text.uri is None:
                    return False
                found[text.uri] = str(text.key_version)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, KmsBeamError):
            return False
        return bool(found) and all(self.versions.get(uri) == v for uri, v in found.items())

    def dry_run(self) -> Outcome:
        return Outcome(f"kmsbeam rotate --in-place --dry-run: {self.where}",
                       [("files", f"{len(self._files):,}"), ("files to rotate", f"{len(self.todo):,}"),
                        ("master keys", f"{len(self.uris):,}")])  # fmt: skip

    def rotate(self) -> Outcome:
        started = time.monotonic()
        for f in self.todo:
            rotate_key_material(str(f), self.decryption)
        elapsed = time.monotonic() - started
        files, done = len(self._files), len(self.todo)
        rotation = {"kmsbeam_rotation": 1, "method": "pme-key-material", "source_key": self.m.key,
                    "target_key": self.m.key, "target_versions": {h: self.versions[h] for h in self.resolved},
                    "counts": {"files": files, "files_rotated": done, "files_skipped": files - done},
                    "elapsed_seconds": round(elapsed, 3)}  # fmt: skip
        return Outcome(f"kmsbeam rotate --in-place: {self.where} (PME key material)",
                       [("files", f"{files:,}"), ("files rotated", f"{done:,}"),
                        ("files already rotated", f"{files - done:,}"),
                        ("data bytes written", "0"), ("elapsed", f"{elapsed:.1f} s")], rotation)  # fmt: skip


class PmeRewriteRotator(_Pme):
    """OUTPUT: every part file rewritten under new PME keys."""

    def __init__(self, args: argparse.Namespace, m: Manifest) -> None:
        if args.reencrypt or args.only_version or args.trust_manifest:
            raise ConfigurationError("a PME dataset is rotated by rewriting it with new PME keys: "
                                     "--reencrypt, --only-version and --trust-manifest do not apply")  # fmt: skip
        self.args, self.m = args, m
        self.src, self.where = Path(args.input), Path(args.output)
        self.inputs = sorted(p for p in self.src.glob("part-*") if p.is_file() and p.suffix == ".parquet")
        if not self.inputs:
            raise ConfigurationError(f"{self.src} has no part-*.parquet files")
        resolved, key_map = _resolve(args, m)
        self.old = PmeDecryption(list(dict.fromkeys(resolved.values())), m.context, key_map)
        new_key = lambda uri: str(args.to_key or resolved.get(uri, uri))  # noqa: E731  (one target, else resolved)
        self.target = new_key(m.key)
        self.encryption = PmeEncryption(
            footer_key=new_key(m.footer_key or m.key),
            column_keys={c: new_key(u) for c, u in (m.column_keys or {}).items()},
            plaintext_footer=m.plaintext_footer, external_key_material=m.key_material == "external",
            context=m.context)  # fmt: skip
        self.versions = {u: Rewrapper(kmsbeam.open_key_source(u, create=False)).check_target()
                         for u in self.encryption.uris}  # fmt: skip  (a disabled or unknown key stops us here)
        self._files = [self.where / f.name for f in self.inputs]  # what verify reads back
        self.decryption = PmeDecryption(list(self.encryption.uris), m.context)

    def dry_run(self) -> Outcome:
        return Outcome(f"kmsbeam rotate --dry-run: {self.src} -> {self.where} (PME rewrite)",
                       [("files", f"{len(self.inputs):,}"), ("files to rewrite", f"{len(self.inputs):,}"),
                        ("master keys", ", ".join(f"{u} (version {v})" for u, v in self.versions.items()))])  # fmt: skip

    def rotate(self) -> Outcome:
        m, out = self.m, self.where
        prepare_output(out, out / "_dead_letters", self.args.overwrite, [str(f) for f in self.inputs])
        (out / ROTATION_NAME).unlink(missing_ok=True)
        started = time.monotonic()
        rows, failures = 0, []
        for f in self.inputs:
            try:
                rows += self._rewrite(f, out / f.name)
            except (KmsBeamError, OSError, ValueError) as exc:
                failures.append({"file": f.name, "reason": failure_reason(exc) if isinstance(
                    exc, KmsBeamError) else type(exc).__name__})  # fmt: skip
                (out / f.name).unlink(missing_ok=True)
                key_material_path(out / f.name).unlink(missing_ok=True)
        self._files = [out / f.name for f in self.inputs if (out / f.name).is_file()]
        elapsed = time.monotonic() - started
        Manifest(**{**m.__dict__, "key": self.target, "footer_key": self.encryption.footer_key,
                    "column_keys": dict(self.encryption.column_keys),
                    "kmsbeam_version": kmsbeam.__version__}).write(out)  # fmt: skip
        done = len(self.inputs) - len(failures)
        rotation = {"kmsbeam_rotation": 1, "method": "pme-rewrite", "source_key": m.key,
                    "target_key": self.target, "target_versions": self.versions,
                    "counts": {"files": len(self.inputs), "files_rewritten": done, "rows": rows,
                               "failed": len(failures)},
                    "failures": failures, "elapsed_seconds": round(elapsed, 3)}  # fmt: skip
        warning = (f"{len(failures):,} files could not be rewritten (listed with the reason in "
                   f"{out / ROTATION_NAME})") if failures else None  # fmt: skip
        return Outcome(f"kmsbeam rotate: {self.src} -> {out} (PME rewritten with new PME keys)",
                       [("files rewritten", f"{done:,}"), ("rows", f"{rows:,}"),
                        ("files failed", f"{len(failures):,}"), ("elapsed", f"{elapsed:.1f} s")],
                       rotation, warning, failed=bool(failures))  # fmt: skip

    def _rewrite(self, src: Path, dst: Path) -> int:
        """Copy ``src`` to ``dst`` one row group at a time under new PME keys; rows copied."""
        reader = pq.ParquetFile(src, decryption_properties=self.old.properties(str(src)))
        schema = reader.schema_arrow
        properties = self.encryption.properties(schema, str(dst))
        rows = 0
        with pq.ParquetWriter(dst, schema, compression="snappy", encryption_properties=properties) as writer:
            for i in range(reader.num_row_groups):
                group = reader.read_row_group(i)
                writer.write_table(group, row_group_size=max(1, group.num_rows))
                rows += group.num_rows
        return rows
