"""``kmsbeam rotate DIR --in-place`` for PME datasets written with external key material."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import kmsbeam
from kmsbeam import ConfigurationError
from kmsbeam.rotation import Rewrapper

__all__ = ["rotate_pme_in_place"]

ROTATION_NAME = "_kmsbeam_rotation.json"


def rotate_pme_in_place(args: argparse.Namespace, read_manifest: Any, table: Any) -> int:
    """PME with external key material: rewrap each file's key material under the current
    versions of its master keys (pyarrow's master-key rotation); data files stay as they are.

    PME names master keys by a hash of their URI, so the target is the same URIs: an alias
    moved to a new key, or a key with a new version.
    """
    from kmsbeam.parquet import PmeDecryption, key_material_path, rotate_key_material

    src = Path(args.input)
    m = read_manifest(src)
    if m.mode != "pme" or m.key_material != "external":
        raise ConfigurationError("--in-place rotates PME datasets written with "
                                 "--external-key-material; give an OUTPUT directory instead")  # fmt: skip
    uris = list(dict.fromkeys([m.footer_key or m.key, *(m.column_keys or {}).values()]))
    if args.to_key and args.to_key not in uris:
        raise ConfigurationError("PME names its master keys by their URIs: rotate the keys "
                                 "behind them (move the alias, or a new key version), then "
                                 "run --in-place without --to-key")  # fmt: skip
    if args.reencrypt or args.only_version:
        raise ConfigurationError("--reencrypt and --only-version do not combine with --in-place")
    versions: dict[str, str] = {}
    for uri in uris:
        versions[uri] = Rewrapper(kmsbeam.open_key_source(uri)).check_target()
    files = sorted(f for f in src.glob("part-*") if key_material_path(f).is_file())
    if not files:
        raise ConfigurationError(f"{src} has no part-* files with external key material")
    if args.dry_run:
        print(table(f"kmsbeam rotate --in-place --dry-run: {src}",
                     [("files", f"{len(files):,}"), ("master keys", f"{len(uris):,}")]))  # fmt: skip
        return 0
    started = time.monotonic()
    decryption = PmeDecryption(uris, m.context)
    for f in files:
        rotate_key_material(str(f), decryption)
    elapsed = time.monotonic() - started
    rotation = {"kmsbeam_rotation": 1, "method": "pme-key-material", "source_key": m.key,
                "target_key": m.key, "target_versions": versions,
                "counts": {"files": len(files)}, "elapsed_seconds": round(elapsed, 3)}  # fmt: skip
    (src / ROTATION_NAME).write_text(json.dumps(rotation, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        print(table(f"kmsbeam rotate --in-place: {src} (PME key material)",
                     [("files", f"{len(files):,}"), ("data bytes written", "0"),
                      ("elapsed", f"{elapsed:.1f} s")]))  # fmt: skip
    return 0
