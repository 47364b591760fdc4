"""``kmsbeam cat OBJECT``: decrypt one encrypted object (``oss://`` or a local file) to stdout.

::

    kmsbeam cat oss://bucket/exports/2026-11-23/part-00000.jsonl.kmsb | head

No pipeline: the object streams through ``kmsbeam.formats.objects.ObjectReader`` (memory: two chunks).
The key and context are, in order: ``--key``/``--context``; the export manifest next to the
object; the object's own header. A key URI from the manifest or the header is data: only a
hint resolved against the caller's key sources (``--key``, ``KMSBEAM_KEY_SOURCES``; see
``kmsbeam.keys.trust``), so an object never makes ``cat`` connect anywhere or load a module. Every chunk is authenticated before it is written, so a
damaged object stops with the authentication error after the intact chunks before it.

``oss://`` objects are read with the OSS client (``--oss-endpoint``); every other path through
Beam's FileSystems (a local file, or ``s3://``, ``hdfs://``, ``gs://`` with their extras). A
``scheme://`` no filesystem handles is one error, never a local file named after it.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, BinaryIO

import kmsbeam
from kmsbeam.keys.trust import TrustedKeySources
from kmsbeam.pipelines.export import EXPORT_MANIFEST, ExportManifest
from kmsbeam.pipelines.options import add_require_key_argument

__all__ = ["add_cat_parser", "run_cat", "run_command"]


def add_cat_parser(sub: Any) -> None:
    text = "decrypt one encrypted object (oss:// or a file) to standard output"
    cat = sub.add_parser("cat", help=text, description=text, allow_abbrev=False)
    cat.add_argument("object", metavar="OBJECT", help="an oss://bucket/key or a local .kmsb file")
    cat.add_argument("--key", help="key URI (default: the export manifest's, else the object's, "
                     "if it names a source given by KMSBEAM_KEY_SOURCES or a local: key)")  # fmt: skip
    cat.add_argument("--context", action="append", metavar="NAME=VALUE",
                     help="encryption context entry (default: the manifest's or the object's)")  # fmt: skip
    cat.add_argument("--oss-endpoint", help="OSS endpoint (default KMSBEAM_OSS_ENDPOINT)")
    add_require_key_argument(cat)


def run_command(args: argparse.Namespace, beam_args: list[str], context: dict[str, str] | None) -> int:
    """``kmsbeam cat``: no Beam options; a missing object or file is a user mistake
    (``ConfigurationError``), not a traceback."""
    try:
        if beam_args:
            raise kmsbeam.ConfigurationError(f"unrecognized arguments: {' '.join(beam_args)}")
        return run_cat(args, context)
    except FileNotFoundError as exc:
        raise kmsbeam.ConfigurationError(str(exc)) from None


def _manifest_near(path: str, config: Any) -> Any:
    """The export manifest in the object's parent, or None (never an error: it is optional)."""
    parent = path.rsplit("/", 1)[0] if "/" in path else "."
    location = parent + "/" + EXPORT_MANIFEST
    try:
        if path.startswith("oss://"):
            from kmsbeam.oss import oss_client

            text = oss_client(config).get(location).decode("utf-8")
        else:
            from kmsbeam.pipelines import paths

            if not paths.exists(location):
                return None
            text = paths.read_text(location)
        if '"kmsbeam_export"' not in text:
            return None
        return ExportManifest.from_json(text, location)
    except Exception:  # noqa: BLE001  (optional: Beam wraps IO errors; none is fine)
        return None


def run_cat(args: argparse.Namespace, context: dict[str, str] | None, out: BinaryIO | None = None) -> int:
    from kmsbeam.formats.objects import ObjectReader
    from kmsbeam.oss import OssConfig, oss_client
    from kmsbeam.pipelines import paths

    out = out if out is not None else sys.stdout.buffer
    args.object = paths.absolute(args.object)  # an unknown scheme:// is refused here
    config = OssConfig.from_env(endpoint=args.oss_endpoint)
    manifest = _manifest_near(args.object, config)
    required = getattr(args, "require_key", None) or []
    trusted = TrustedKeySources.configured(args.key, *[u for u in required if ":" in u.split("/", 1)[0]])
    key = args.key or (trusted.resolve(manifest.key) if manifest else None)
    if context is None and manifest is not None:
        context = manifest.context
    if args.object.startswith("oss://"):
        client = oss_client(config)
        info = client.head(args.object)
        raw: Any = client.open_read(args.object, size=info.size)
        metadata = info.metadata or {}
    elif paths.is_remote(args.object):
        from apache_beam.io.filesystems import FileSystems

        if not paths.exists(args.object):
            raise kmsbeam.ConfigurationError(f"there is no object {args.object}")
        raw, metadata = FileSystems.open(args.object, compression_type="uncompressed"), None
    else:
        try:
            raw, metadata = open(args.object, "rb"), None
        except OSError as exc:
            raise kmsbeam.ConfigurationError(f"cannot open {args.object}: {exc.strerror}") from None
    try:
        reader = ObjectReader(raw, key, context=context, metadata=metadata, where=args.object,
                              key_sources=trusted, require_keys=required)  # fmt: skip
    except BaseException:
        raw.close()
        raise
    buf = bytearray(1 << 20)
    with reader:
        try:
            while n := reader.readinto(buf):
                out.write(memoryview(buf)[:n])
            out.flush()
        except BrokenPipeError:  # `| head` closed the pipe: stop quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
