"""``kmsbeam rotate PME-DIR OUTPUT``: a PME dataset rewritten under new PME keys.

PME with *internal* key material keeps its wrapped keys in the file footer (and, with an
encrypted footer, inside the encrypted footer itself): pyarrow can neither rewrap them in place
nor write a file with given data keys, so key material cannot be replaced without rewriting
the file. This rotation therefore decrypts each file row group by row group and writes it again
with fresh PME keys wrapped under the target master keys (the data pages change; the rows,
schema and row groups do not). It is the out-of-place path for external key material too
(``--in-place`` is the one that leaves data files untouched).

No Beam: one file at a time, memory bounded by one row group. Nothing decrypted touches disk
outside the encrypted output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import kmsbeam
from kmsbeam import ConfigurationError, KmsBeamError, failure_reason
from kmsbeam.pipelines.manifest import Manifest
from kmsbeam.pipelines.output_dir import prepare_output
from kmsbeam.pipelines.rotate.state import ROTATION_NAME, finished_at
from kmsbeam.rotation.rewrap import Rewrapper

__all__ = ["rotate_pme_rewrite"]


def rotate_pme_rewrite(args: argparse.Namespace, m: Manifest, table: Any) -> int:
    """Rewrite every part file of the PME dataset ``args.input`` into ``args.output``."""
    import pyarrow.parquet as pq

    from kmsbeam.formats.parquet import PmeDecryption, PmeEncryption, key_material_path

    if args.reencrypt or args.only_version or args.trust_manifest:
        raise ConfigurationError("a PME dataset is rotated by rewriting it with new PME keys: "
                                 "--reencrypt, --only-version and --trust-manifest do not apply")  # fmt: skip
    src, out = Path(args.input), Path(args.output)
    files = sorted(p for p in src.glob("part-*") if p.is_file() and p.suffix == ".parquet")
    if not files:
        raise ConfigurationError(f"{src} has no part-*.parquet files")
    from kmsbeam.formats.parquet import master_key_id
    from kmsbeam.pipelines.rotate.job import trusted_sources

    # the manifest's URIs are hints: the caller's sources open them (PME ids stay the written)
    resolved = trusted_sources(args).resolve_all([m.footer_key or m.key, *(m.column_keys or {}).values()])
    old_uris = list(dict.fromkeys(resolved.values()))
    key_map = {master_key_id(h): r for h, r in resolved.items() if h != r}

    def new_key(uri: str) -> str:  # one target for every master key, else the resolved one
        return str(args.to_key or resolved.get(uri, uri))

    encryption = PmeEncryption(
        footer_key=new_key(m.footer_key or m.key),
        column_keys={c: new_key(u) for c, u in (m.column_keys or {}).items()},
        plaintext_footer=m.plaintext_footer, external_key_material=m.key_material == "external",
        context=m.context)  # fmt: skip
    versions = {u: Rewrapper(kmsbeam.open_key_source(u, create=False)).check_target()
                for u in encryption.uris}  # fmt: skip  (a disabled or unknown key stops us here)
    if args.dry_run:
        rows = [("files", f"{len(files):,}"), ("files to rewrite", f"{len(files):,}"),
                ("master keys", ", ".join(f"{u} (version {v})" for u, v in versions.items()))]
        print(table(f"kmsbeam rotate --dry-run: {src} -> {out} (PME rewrite)", rows))
        return 0
    prepare_output(out, out / "_dead_letters", args.overwrite, [str(f) for f in files])
    (out / ROTATION_NAME).unlink(missing_ok=True)
    decryption = PmeDecryption(old_uris, m.context, key_map)
    started = time.monotonic()
    rows_done, failures = 0, []
    for f in files:
        target = out / f.name
        try:
            rows_done += _rewrite(pq, f, target, decryption, encryption)
        except (KmsBeamError, OSError, ValueError) as exc:
            failures.append({"file": f.name, "reason": failure_reason(exc) if isinstance(
                exc, KmsBeamError) else type(exc).__name__})  # fmt: skip
            target.unlink(missing_ok=True)
            key_material_path(target).unlink(missing_ok=True)
    elapsed = time.monotonic() - started
    Manifest(**{**m.__dict__, "key": new_key(m.key), "footer_key": encryption.footer_key,
                "column_keys": dict(encryption.column_keys),
                "kmsbeam_version": kmsbeam.__version__}).write(out)  # fmt: skip
    rotation = {"kmsbeam_rotation": 1, "method": "pme-rewrite", "source_key": m.key,
                "target_key": new_key(m.key), "target_versions": versions,
                "counts": {"files": len(files), "files_rewritten": len(files) - len(failures),
                           "rows": rows_done, "failed": len(failures)},
                "failures": failures, "elapsed_seconds": round(elapsed, 3),
                "finished_at": finished_at()}  # fmt: skip
    (out / ROTATION_NAME).write_text(json.dumps(rotation, indent=2) + "\n", encoding="utf-8")
    if not args.quiet:
        print(table(f"kmsbeam rotate: {src} -> {out} (PME rewritten with new PME keys)",
                    [("files rewritten", f"{len(files) - len(failures):,}"),
                     ("rows", f"{rows_done:,}"), ("files failed", f"{len(failures):,}"),
                     ("elapsed", f"{elapsed:.1f} s")]))  # fmt: skip
    if failures:
        print(f"kmsbeam: warning: {len(failures):,} files could not be rewritten (listed with "
              f"the reason in {out / ROTATION_NAME})", file=sys.stderr)  # fmt: skip
        return 1
    return 0


def _rewrite(pq: Any, src: Path, dst: Path, decryption: Any, encryption: Any) -> int:
    """Copy ``src`` to ``dst`` one row group at a time under new PME keys; rows copied."""
    reader = pq.ParquetFile(src, decryption_properties=decryption.properties(str(src)))
    schema = reader.schema_arrow
    properties = encryption.properties(schema, str(dst))
    rows = 0
    with pq.ParquetWriter(dst, schema, compression="snappy", encryption_properties=properties) as writer:
        for i in range(reader.num_row_groups):
            group = reader.read_row_group(i)
            writer.write_table(group, row_group_size=max(1, group.num_rows))
            rows += group.num_rows
    return rows
