"""``kmsbeam export`` and the export side of ``kmsbeam decrypt``: files <-> encrypted objects.

::

    kmsbeam export out/enc/ oss://bucket/exports/2026-11-23/ --key alibaba-kms://cn-hangzhou/alias/export
    kmsbeam decrypt oss://bucket/exports/2026-11-23/ restored/

Export encrypts every file of INPUT (a directory, recursively, ``_dead_letters/`` skipped; a
file; a glob; an ``oss://`` prefix) into ``DEST/<relative name>.kmsb`` (object stream v1, one
data key per object, the wrapped key also in ``x-oss-meta-kmsbeam-*``), then writes the
export manifest ``DEST/_kmsbeam.json`` (configuration and object list; no key material). A
``kmsbeam decrypt`` whose INPUT holds an export manifest restores the files into OUTPUT.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import kmsbeam
from kmsbeam import ConfigurationError, FormatError, KmsBeamError
from kmsbeam.keys.trust import TrustedKeySources
from kmsbeam.pipelines._noise import quiet_beam_logging
from kmsbeam.pipelines.options import add_kms_budget_arguments, positive_number

__all__ = ["EXPORT_MANIFEST", "ExportManifest", "add_export_parser", "read_manifest",
           "run_command", "run_export", "run_restore"]  # fmt: skip

EXPORT_MANIFEST = "_kmsbeam.json"
VERSION = 1
SKIPPED_DIRS = ("_dead_letters",)


@dataclass
class ExportManifest:
    """``DEST/_kmsbeam.json`` of an export."""

    key: str
    context: dict[str, str] = field(default_factory=dict)
    chunk_size: int = 0
    objects: list[dict[str, Any]] = field(default_factory=list)
    kmsbeam_version: str = kmsbeam.__version__

    def to_json(self) -> str:
        return json.dumps({"kmsbeam_export": VERSION, **asdict(self)}, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str, where: str) -> ExportManifest:
        try:
            data = json.loads(text)
            if data.pop("kmsbeam_export") != VERSION:
                raise ValueError
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise FormatError(f"{where} is not a kmsbeam export manifest (version {VERSION})") from exc


def read_manifest(location: str) -> ExportManifest | None:
    """The export manifest at ``location`` (a directory or prefix), or None."""
    from apache_beam.io.filesystems import FileSystems

    from kmsbeam.pipelines import paths

    path = paths.join(location, EXPORT_MANIFEST)
    try:
        if not FileSystems.exists(path):
            return None
        with FileSystems.open(path) as f:
            text = f.read().decode("utf-8")
    except Exception as exc:
        raise _plain(exc, path) from exc
    if '"kmsbeam_export"' not in text:
        return None
    return ExportManifest.from_json(text, path)


def _plain(exc: Exception, path: str) -> KmsBeamError:
    """A Beam IO error (which wraps ours) as the kmsbeam error inside it."""
    inner = getattr(exc, "exception_details", None) or {}
    for err in inner.values():
        if isinstance(err, KmsBeamError):
            return err
    if isinstance(exc, KmsBeamError):
        return exc
    return FormatError(f"cannot read {path} ({type(exc).__name__})")


def run_command(args: argparse.Namespace, beam_args: list[str], context: dict[str, str] | None) -> int:
    """Dispatch ``export`` and the export side of ``decrypt``; a missing object or file is a
    user mistake (``ConfigurationError``), not a traceback."""
    try:
        if args.command == "export":
            quiet_beam_logging()
            from kmsbeam.pipelines.progress import elapsed_progress

            with elapsed_progress(f"exporting {args.input}", args.quiet, args.progress_every,
                                  "an export counts its objects at the end"):  # fmt: skip
                return run_export(args, beam_args, context)
        return run_restore(args, beam_args, context)
    except FileNotFoundError as exc:
        raise ConfigurationError(str(exc)) from None


def add_export_parser(sub: Any) -> None:
    text = "encrypt files into objects (oss:// or any Beam path), one data key per object"
    job = sub.add_parser("export", help=text, description=text, allow_abbrev=False,
                         epilog="Other options go to Beam, e.g. --oss_endpoint URL, --runner.")  # fmt: skip
    job.add_argument("input", metavar="INPUT", help="a directory, file, glob or oss:// prefix")
    job.add_argument("output", metavar="DEST", help="the destination prefix, e.g. oss://bucket/exports/")
    job.add_argument("--key", help=f"key URI (default {kmsbeam.DEFAULT_KEY_URI})")
    job.add_argument("--context", action="append", metavar="NAME=VALUE",
                     help="encryption context entry (repeatable)")  # fmt: skip
    job.add_argument("--chunk-size", type=int, default=1 << 20, metavar="BYTES",
                     help="plaintext bytes per chunk (default 1 MiB)")  # fmt: skip
    job.add_argument("--overwrite", action="store_true", help="replace an export already in DEST")
    job.add_argument("--quiet", "-q", action="store_true", help="no progress and no summary table")
    job.add_argument("--progress-every", type=positive_number, metavar="SECONDS",
                     help="off a terminal, write a progress line every SECONDS (default 30)")
    add_kms_budget_arguments(job)


def _sources(location: str) -> tuple[list[tuple[str, int]], str]:
    """(path, size) of every input file and the base their output names are relative to."""
    from apache_beam.io.filesystems import FileSystems

    if not location.startswith("oss://") and os.path.isdir(location):
        base = os.path.abspath(location) + os.sep
        found = []
        for root, dirs, files in os.walk(base):
            dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
            found += [(p, os.path.getsize(p)) for p in (os.path.join(root, f) for f in sorted(files))]
        return found, base
    pattern = location + "*" if location.endswith("/") else location
    try:
        matched = FileSystems.match([pattern])[0].metadata_list
    except Exception as exc:
        raise _plain(exc, location) from exc
    base = location if location.endswith("/") else location[: location.rfind("/") + 1]
    return sorted((m.path, m.size_in_bytes) for m in matched), base


def _options(beam_args: list[str]) -> tuple[Any, Any, Any]:
    from apache_beam.options.pipeline_options import SetupOptions

    from kmsbeam.pipelines.jobs import pipeline_options
    from kmsbeam.transforms.ossfs import config_from_options

    options, runner = pipeline_options(beam_args)
    setup = options.view_as(SetupOptions)
    setup.beam_plugins = sorted(set(setup.beam_plugins or []) | {"kmsbeam.transforms"})
    return options, runner, config_from_options(options)


def _run(options: Any, runner: Any, build: Any) -> tuple[dict[str, int], float]:
    """Run a pipeline; a failed object becomes one ``kmsbeam: error`` sentence."""
    import apache_beam as beam

    from kmsbeam.pipelines.jobs import counters_of

    started = time.monotonic()
    p = beam.Pipeline(runner=runner, options=options)
    build(p)
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as exc:
        if os.environ.get("KMSBEAM_DEBUG"):
            raise
        found = re.search(r"((?:Encrypt|Decrypt)Objects failed on [^\n]*)", str(exc))
        raise KmsBeamError(found.group(1) if found else
                           f"the pipeline failed ({type(exc).__name__})") from None  # fmt: skip
    return counters_of(result), time.monotonic() - started


def _rate(total: int, seconds: float) -> str:
    return f"{total / seconds / 1e6:,.1f} MB/s" if seconds > 0 else "-"


def _kms_rows(counters: dict[str, int], key: str, args: argparse.Namespace) -> list[tuple[str, str]]:
    """KMS calls by operation, the estimated cost and the budget waits (``summary``)."""
    from kmsbeam.pipelines import summary

    price = getattr(args, "kms_price_per_10k", None)
    return [*summary.kms_call_rows(counters), summary.kms_cost_row(counters, [key], price),
            *summary.kms_budget_rows(counters, getattr(args, "kms_qps", None))]  # fmt: skip


def run_export(args: argparse.Namespace, beam_args: list[str], context: dict[str, str] | None) -> int:
    """``kmsbeam export``: see the module docstring."""
    import apache_beam as beam
    from apache_beam.io.filesystems import FileSystems

    from kmsbeam.pipelines import paths
    from kmsbeam.pipelines.summary import kms_price_per_10k, table
    from kmsbeam.transforms import EncryptObjects, create_local_keys

    args.kms_price_per_10k = kms_price_per_10k(getattr(args, "kms_price_per_10k", None))
    options, runner, oss = _options(beam_args)
    # paths as every worker sees them: local ones absolute, an unknown scheme:// refused
    args.input, args.output = paths.absolute(args.input), paths.absolute(args.output)
    dest = args.output if args.output.endswith("/") else args.output + "/"
    if read_manifest(dest) is not None and not args.overwrite:
        raise ConfigurationError(f"{dest} already holds a kmsbeam export; pass --overwrite to replace it")
    sources, base = _sources(args.input)
    if not sources:
        raise ConfigurationError(f"no input files at {args.input}")
    key = args.key or kmsbeam.DEFAULT_KEY_URI
    for created in create_local_keys(key):  # the explicit step: transforms never create keys
        print(f"kmsbeam: created key {created} in the local keystore", file=sys.stderr)
    kmsbeam.open_key_source(key)  # a key that cannot be opened fails here, before the pipeline
    transform = EncryptObjects(key, dest, base=base, context=context, chunk_size=args.chunk_size, oss=oss,
                               kms_qps=getattr(args, "kms_qps", None))  # fmt: skip
    counters, elapsed = _run(options, runner, lambda p: p | beam.Create([s for s, _ in sources])
                             | beam.Reshuffle() | transform)  # fmt: skip
    names = [s[len(base) :].replace(os.sep, "/") + ".kmsb" for s, _ in sources]
    sizes = {m.path: m.size_in_bytes for m in FileSystems.match([dest + "**"])[0].metadata_list}
    objects = [{"name": n, "source": s[len(base) :].replace(os.sep, "/"), "bytes": size,
                "encrypted_bytes": sizes.get(dest + n, -1)} for n, (s, size) in zip(names, sources)]  # fmt: skip
    if any(o["encrypted_bytes"] < 0 for o in objects):
        raise KmsBeamError(f"some objects are missing from {dest} after the export; rerun it")
    manifest = ExportManifest(key, dict(context or {}), args.chunk_size, objects)
    with FileSystems.create(paths.join(dest, EXPORT_MANIFEST), mime_type="application/json") as f:
        f.write(manifest.to_json().encode("utf-8"))
    total_in = sum(o["bytes"] for o in objects)
    if not args.quiet:
        print(table(f"kmsbeam export: {args.input} -> {dest} (key {key})", [
            ("objects", f"{len(objects):,}"),
            ("data keys generated", f"{counters.get('kmsbeam/data_keys_generated', 0):,}"),
            *_kms_rows(counters, key, args),
            ("bytes in", f"{total_in:,} B"),
            ("bytes out", f"{sum(o['encrypted_bytes'] for o in objects):,} B"),
            ("elapsed", f"{elapsed:.1f} s"),
            ("rate", _rate(total_in, elapsed)),
        ]))  # fmt: skip
    return 0


def run_restore(args: argparse.Namespace, beam_args: list[str], context: dict[str, str] | None) -> int:
    """``kmsbeam decrypt EXPORT OUTPUT``: decrypt every object the manifest lists."""
    import apache_beam as beam

    from kmsbeam.pipelines.summary import kms_price_per_10k, table
    from kmsbeam.transforms import DecryptObjects

    args.kms_price_per_10k = kms_price_per_10k(getattr(args, "kms_price_per_10k", None))
    given = [f"--{n}" for n in ("format", "fields", "mode", "keep", "bind", "max_records_per_key",
                                "parquet_mode", "columns")
             if getattr(args, n, None)]  # fmt: skip
    if given:
        raise ConfigurationError(f"{given[0].replace('_', '-')} does not apply to an export; "
                                 "the export manifest says how to decrypt it")  # fmt: skip
    from kmsbeam.pipelines import paths

    options, runner, oss = _options(beam_args)
    args.input, args.output = paths.absolute(args.input), paths.absolute(args.output)
    src = args.input if args.input.endswith("/") else args.input + "/"
    manifest = read_manifest(src)
    if manifest is None:
        raise ConfigurationError(f"{src} holds no kmsbeam export manifest ({EXPORT_MANIFEST}); "
                                 "use kmsbeam cat for a single object")  # fmt: skip
    out = args.output
    if not paths.is_remote(out):
        os.makedirs(out, exist_ok=True)
        if os.listdir(out) and not args.overwrite:
            raise ConfigurationError(f"{out} is not empty; pass --overwrite to write into it")
    elif paths.list_files(out, "**") and not args.overwrite:
        raise ConfigurationError(f"{out} is not empty; pass --overwrite to write into it")
    urls = [src + o["name"] for o in manifest.objects]
    # the manifest's key is data: a hint resolved against the caller's key sources
    required = getattr(args, "require_key", None) or []
    key = args.key or TrustedKeySources.configured(
        *[u for u in required if ":" in u.split("/", 1)[0]]).resolve(manifest.key)
    transform = DecryptObjects(key, out, base=src, require_keys=required,
                               context=context if context is not None else manifest.context, oss=oss,
                               kms_qps=getattr(args, "kms_qps", None))  # fmt: skip
    counters, elapsed = _run(options, runner, lambda p: p | beam.Create(urls) | beam.Reshuffle() | transform)
    total = sum(int(o["bytes"]) for o in manifest.objects)
    if not args.quiet:
        print(table(f"kmsbeam decrypt: {src} -> {out} (export, key {key})", [
            ("objects", f"{len(urls):,}"),
            *_kms_rows(counters, key, args),
            ("bytes out", f"{total:,} B"),
            ("elapsed", f"{elapsed:.1f} s"),
            ("rate", _rate(total, elapsed)),
        ]))  # fmt: skip
    return 0
