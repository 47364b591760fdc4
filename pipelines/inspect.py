"""``kmsbeam inspect FILE...``: how Parquet files (and kmsbeam objects) are protected, without
keys or decryption.

::

    kmsbeam inspect out/part-00000-of-00001.parquet     # a table per file
    kmsbeam inspect out/                                 # every *.parquet file in the directory
    kmsbeam inspect out/ --json                          # one JSON object per file
    kmsbeam inspect oss://lake/enc/customers/            # any Beam filesystem (oss:// ...)

For each file: the encryption (none, PME with an encrypted or plaintext footer), the footer
key, and per column how it is protected (plaintext, a PME column or footer key, kmsbeam cells
or records) and under which master key ids, key URIs and master key versions. It reads footer
bytes and value headers only (``kmsbeam.formats.inspect.inspect_file``, generic over formats: an
object stream file shows its one data key): never a key source, never a decryption, and never
the pyarrow metadata calls that abort on encrypted columns.

Paths are Beam FileSystems paths (``kmsbeam.pipelines.paths``). A remote file is copied, with
its external key material if any, into a private temporary directory (0700) for the reading
and deleted right after, whatever happens.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

from kmsbeam import ConfigurationError

__all__ = ["add_inspect_parser", "format_report", "run_inspect"]


def add_inspect_parser(sub: Any) -> None:
    text = "show how Parquet files are encrypted (columns, keys, versions) without decrypting"
    cmd = sub.add_parser("inspect", help=text, description=text, allow_abbrev=False)
    cmd.add_argument("paths", nargs="+", metavar="PATH", help="Parquet files or directories")
    cmd.add_argument("--json", action="store_true", help="one JSON object per file")


def _files(names: Sequence[str]) -> list[str]:
    from kmsbeam.pipelines import paths

    out: list[str] = []
    for name in names:
        p = paths.normalize(name, "the path")
        if paths.exists(p.rstrip("/")):
            out.append(p.rstrip("/"))
        elif paths.is_dir(p):
            found = paths.match(paths.join(p, "*.parquet"))
            if not found:
                raise ConfigurationError(f"{p} holds no .parquet files")
            out += found
        else:
            raise ConfigurationError(f"{p} does not exist; give Parquet files or directories")
    return out


@contextlib.contextmanager
def _local(path: str) -> Iterator[str]:
    """``path`` itself when local; else a private temporary copy (with its external key
    material), deleted on leaving."""
    from kmsbeam.pipelines import paths

    if not paths.is_remote(path):
        yield path
        return
    temp = tempfile.mkdtemp(prefix="kmsbeam-inspect-")  # 0700
    try:
        name = os.path.basename(path) or "file.parquet"
        material = paths.join(paths.parent(path), f"_KEY_MATERIAL_FOR_{name}.json")
        for src in (path, material):
            if src == path or paths.exists(src):
                fd = os.open(os.path.join(temp, os.path.basename(src)), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out, paths.open_read(src) as f:
                    shutil.copyfileobj(f, out, 1 << 20)
        yield os.path.join(temp, name)
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _key(k: Any) -> str:
    if k is None:
        return "-"
    parts = [k.master_key_id]
    if k.key_uri:
        parts.append(k.key_uri)
    if k.key_version:
        parts.append(f"version {k.key_version}")
    if k.wrapped_by != "kmsbeam":
        parts.append(f"({k.wrapped_by})")
    return "  ".join(parts)


def format_report(report: Any) -> str:
    """A ``FileReport`` as text: a header block, then one line per column."""
    lines = [f"{report.path}  ({report.size:,} bytes)", f"  encryption   {report.encryption}"]
    if report.algorithm:
        lines.append(f"  algorithm    {report.algorithm}")
    if report.data_key is not None:
        lines.append(f"  data key     {_key(report.data_key).strip()}  ({report.data_key.key_kind})")
    k = report.footer_key
    if k is not None:
        lines.append(f"  footer key   {_key(k)}")
        wrap = "double" if k.double_wrapping else "single"
        lines.append(f"  key material {k.key_material}, {wrap} wrapping")
    if report.rows is not None:
        lines.append(f"  rows         {report.rows:,} in {report.row_groups:,} row group(s)")
    if report.cells_key:
        lines.append(f"  cells key    {report.cells_key}")
    if report.columns is not None:
        width = max([len(c.path) for c in report.columns] + [6])
        lines.append(f"  {'column':<{width}}  {'protection':<22}  key")
        for c in report.columns:
            if c.key is not None:
                where = _key(c.key)
            elif c.data_keys and "key vault" in c.protection:  # v2 cells: kind and version are in the vault
                where = f"{c.data_keys} data key(s) in a key vault"
            elif c.data_keys:
                versions = ", ".join(c.key_versions) or ", ".join(c.key_kinds)
                where = f"{c.data_keys} data key(s); {', '.join(c.key_kinds)}; version {versions}"
            else:
                where = "-"
            lines.append(f"  {c.path:<{width}}  {c.protection:<22}  {where}")
    lines += [f"  note: {n}" for n in report.notes]
    return "\n".join(lines)


def _manifest_notes(path: str) -> list[str]:
    """What the dataset manifest next to ``path`` says about its column keys (PME files with
    an encrypted footer show no columns otherwise)."""
    from kmsbeam.pipelines import paths
    from kmsbeam.pipelines.manifest import Manifest

    from kmsbeam import FormatError

    try:
        manifest = Manifest.read(paths.parent(path))
    except FormatError:
        return []
    if manifest is None or manifest.mode != "pme" or not manifest.column_keys:
        return []
    keys = ", ".join(f"{c}={u}" for c, u in manifest.column_keys.items())
    return [f"the dataset manifest lists the column keys {keys}; footer key {manifest.footer_key}"]


def run_inspect(parser: Any, args: argparse.Namespace, extra: Sequence[str], out: TextIO) -> int:
    """Inspect each file; 0 when every file was read, 1 when some were not Parquet."""
    from kmsbeam.formats.inspect import inspect_file

    from kmsbeam import FormatError

    if extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    failed = 0
    for i, path in enumerate(_files(args.paths)):
        copy = path
        try:
            with _local(path) as copy:
                report = inspect_file(copy)
            report.path = path
        except (FormatError, OSError) as exc:
            failed += 1
            message = str(exc) if isinstance(exc, FormatError) else f"{path}: {exc.strerror or exc}"
            message = message.replace(copy, path)  # name the URL, not the temporary copy
            if args.json:
                print(json.dumps({"path": str(path), "error": message}), file=out)
            else:
                print(f"{'' if i == 0 else chr(10)}{path}\n  error: {message}", file=out)
            continue
        if report.columns is None:  # an encrypted footer: the manifest may say more
            report.notes += _manifest_notes(path)
        if args.json:
            print(json.dumps(report.to_dict()), file=out)
        else:
            print(("\n" if i else "") + format_report(report), file=out)
    return 1 if failed else 0
