"""``kmsbeam rotate DIR --in-place`` for PME datasets written with external key material.

Files whose key material already names the current version of every master key it uses are
skipped (read from the key texts, no call), so a second run rewraps nothing; with
``--trust-manifest`` the versions come from the dataset's rotation manifest and the run makes
no KMS call at all. A run stopped half-way resumes the same way: each file's key material is
its own journal (pyarrow replaces it whole).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import kmsbeam
from kmsbeam import ConfigurationError, KmsBeamError
from kmsbeam.pipelines.rotate.state import ROTATION_NAME, finished_at, read_rotation
from kmsbeam.rotation.rewrap import Rewrapper

__all__ = ["rotate_pme_in_place"]



def _material_versions(path: Path) -> dict[str, str] | None:
    """{key URI: master key version} named by a file's external key material (None: unreadable)."""
    from kmsbeam.formats.parquet import key_material_path, parse_key_text

    try:
        stored = json.loads(key_material_path(path).read_text(encoding="utf-8"))
        out: dict[str, str] = {}
        for raw in stored.values():
            meta = json.loads(raw)
            text = parse_key_text(meta["wrappedKEK" if meta.get("doubleWrapping") else "wrappedDEK"])
            if text.uri is None:
                return None
            out[text.uri] = str(text.key_version)
        return out
    except (OSError, ValueError, KeyError, TypeError, AttributeError, KmsBeamError):
        return None


def rotate_pme_in_place(args: argparse.Namespace, read_manifest: Any, table: Any) -> int:
    """PME with external key material: rewrap each file's key material under the current
    versions of its master keys (pyarrow's master-key rotation); data files stay as they are.

    PME names master keys by a hash of their URI, so the target is the same URIs: an alias
    moved to a new key, or a key with a new version.
    """
    from kmsbeam.formats.parquet import PmeDecryption, key_material_path, rotate_key_material

    src = Path(args.input)
    m = read_manifest(src)
    if m.mode != "pme" or m.key_material != "external":
        raise ConfigurationError("--in-place rotates PME datasets written with "
                                 "--external-key-material; give an OUTPUT directory instead")  # fmt: skip
    from kmsbeam.formats.parquet import master_key_id
    from kmsbeam.pipelines.rotate.job import trusted_sources

    written = list(dict.fromkeys([m.footer_key or m.key, *(m.column_keys or {}).values()]))
    if args.to_key and args.to_key not in written:
        raise ConfigurationError("PME names its master keys by their URIs: rotate the keys "
                                 "behind them (move the alias, or a new key version), then "
                                 "run --in-place without --to-key")  # fmt: skip
    if args.reencrypt or args.only_version:
        raise ConfigurationError("--reencrypt and --only-version/--only-key do not combine with --in-place")
    # the manifest's URIs are hints: open the caller's sources; PME ids stay the written ones
    resolved = trusted_sources(args).resolve_all(written)
    uris = list(dict.fromkeys(resolved.values()))
    key_map = {master_key_id(h): r for h, r in resolved.items() if h != r}
    previous = read_rotation(src) if args.trust_manifest else None
    recorded = previous.get("target_versions") if previous else None
    versions: dict[str, str] = {}
    for hint, uri in resolved.items():
        if isinstance(recorded, dict) and isinstance(recorded.get(hint), str):
            versions[hint] = recorded[hint]
        else:
            versions[hint] = Rewrapper(kmsbeam.open_key_source(uri)).check_target()
        versions[uri] = versions[hint]  # key texts name the URI they were sealed with
    files = sorted(f for f in src.glob("part-*") if key_material_path(f).is_file())
    if not files:
        raise ConfigurationError(f"{src} has no part-* files with external key material")
    todo = [f for f in files if _current(_material_versions(f), versions) is False]
    if args.dry_run:
        print(table(f"kmsbeam rotate --in-place --dry-run: {src}",
                     [("files", f"{len(files):,}"), ("files to rotate", f"{len(todo):,}"),
                      ("master keys", f"{len(uris):,}")]))  # fmt: skip
        return 0
    started = time.monotonic()
    decryption = PmeDecryption(uris, m.context, key_map)
    for f in todo:
        rotate_key_material(str(f), decryption)
    elapsed = time.monotonic() - started
    verified = _verify(files, decryption, args.verify_sample) if (
        args.verify or args.verify_sample is not None) else None  # fmt: skip
    rotation = {"kmsbeam_rotation": 1, "method": "pme-key-material", "source_key": m.key,
                "target_key": m.key, "target_versions": {h: versions[h] for h in resolved},
                "counts": {"files": len(files), "files_rotated": len(todo),
                           "files_skipped": len(files) - len(todo)},
                "elapsed_seconds": round(elapsed, 3), "finished_at": finished_at()}  # fmt: skip
    if verified is not None:
        rotation["verify"] = verified
    (src / ROTATION_NAME).write_text(json.dumps(rotation, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        print(table(f"kmsbeam rotate --in-place: {src} (PME key material)",
                     [("files", f"{len(files):,}"), ("files rotated", f"{len(todo):,}"),
                      ("files already rotated", f"{len(files) - len(todo):,}"),
                      ("data bytes written", "0"), ("elapsed", f"{elapsed:.1f} s")]
                     + ([] if verified is None else [("verified (decrypted)",
                         f"{verified['files_read']:,} of {verified['files_sampled']:,} files, "
                         f"{verified['failed']:,} failed")])))  # fmt: skip
    return 1 if verified is not None and verified["failed"] else 0


def _current(found: dict[str, str] | None, versions: dict[str, str]) -> bool:
    """Whether key material names only the target versions (unreadable material: False)."""
    if not found:
        return False
    return all(versions.get(uri) == version for uri, version in found.items())


def _verify(files: list[Path], decryption: Any, fraction: float | None) -> dict[str, Any]:
    """Read (decrypt) every file, or an evenly spread fraction of them, and count rows."""
    import pyarrow.parquet as pq

    from kmsbeam.pipelines.rotate.state import sample_indices

    picked = [files[i] for i in sample_indices(len(files), fraction or 1.0)]
    out = {"files_sampled": len(picked), "files_read": 0, "rows_read": 0, "failed": 0}
    for f in picked:
        try:
            table_ = pq.read_table(f, decryption_properties=decryption.properties(str(f)))
        except (KmsBeamError, OSError, ValueError):
            out["failed"] += 1
            continue
        out["files_read"] += 1
        out["rows_read"] += table_.num_rows
    return out
