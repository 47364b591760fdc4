"""Turning command-line choices into a checked job plan, before any pipeline is built.

Every user mistake (missing input, unknown format or field, bad key URI, options that do not
match the manifest, an output directory with data in it) is found here and raised as a
``kmsbeam.ConfigurationError`` carrying one sentence that says what to do.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from kmsbeam.pipelines import formats
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest

import kmsbeam
from kmsbeam import (
    DEFAULT_KEY_URI,
    ConfigurationError,
    check_context,
    parse_key_uri,
    parse_paths,
)
from kmsbeam.records import DEFAULT_PAYLOAD_FIELD

__all__ = ["JobSpec", "Plan", "plan_decrypt", "plan_encrypt"]

DEAD_LETTER_DIR = "_dead_letters"


@dataclass
class JobSpec:
    """What the user asked for; ``None`` means "not given" (decrypt then uses the manifest)."""

    action: str
    input: str
    output: str
    format: str | None = None
    fields: list[str] | None = None
    mode: str | None = None
    keep: list[str] | None = None
    bind: list[str] | None = None
    key: str | None = None
    context: dict[str, str] | None = None
    dead_letter: str | None = None
    max_records_per_key: int | None = None
    overwrite: bool = False
    beam_args: list[str] = field(default_factory=list)


@dataclass
class Plan:
    """A checked job: where to read and write, and the dataset's manifest."""

    spec: JobSpec
    files: list[str]
    pattern: str
    manifest: Manifest
    out_dir: Path
    dead_dir: Path
    in_columns: list[str] = field(default_factory=list)
    out_columns: list[str] = field(default_factory=list)
    out_schema: pa.Schema | None = None
    key_created: bool = False

    @property
    def format(self) -> str:
        return self.manifest.format


def _check_mode(spec: JobSpec, mode: str) -> None:
    if mode not in ("fields", "record"):
        raise ConfigurationError(f"unknown --mode {mode!r}: use fields or record")
    if mode == "fields" and spec.keep:
        raise ConfigurationError("--keep is for --mode record; in fields mode use --bind")
    if mode == "record" and (spec.fields or spec.bind):
        raise ConfigurationError("--fields and --bind are for --mode fields, not --mode record")


def _prepare_output(out_dir: Path, dead_dir: Path, overwrite: bool, inputs: list[str]) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigurationError(f"the output {out_dir} is a file; give a directory path")
    resolved = out_dir.resolve()
    if any(Path(f).resolve().parent == resolved for f in inputs):
        raise ConfigurationError("the output directory holds the input; choose another output")
    for directory in (out_dir, dead_dir):
        if directory.is_dir() and any(directory.iterdir()):
            if not overwrite:
                raise ConfigurationError(
                    f"the output directory {directory} already contains files; pass "
                    "--overwrite to replace kmsbeam's output in it, or choose an empty directory"
                )
            for p in directory.glob("part-*"):
                p.unlink()
            if (directory / MANIFEST_NAME).is_file():
                (directory / MANIFEST_NAME).unlink()
            if (directory / DEAD_LETTER_DIR).is_dir():
                shutil.rmtree(directory / DEAD_LETTER_DIR)
    out_dir.mkdir(parents=True, exist_ok=True)


def _dead_dir(spec: JobSpec, out_dir: Path) -> Path:
    return Path(spec.dead_letter) if spec.dead_letter else out_dir / DEAD_LETTER_DIR


def _fields(names: list[str] | None) -> list[str]:
    return [p.name for p in parse_paths(names or [])]


def plan_encrypt(spec: JobSpec, notice: Callable[[str], None]) -> Plan:
    """Check an encrypt job, prepare OUTPUT, and open (or create) the key.

    ``notice`` receives the one-line message when the key was created by this call.
    """
    if os.path.isdir(spec.input):
        raise ConfigurationError(
            f"{spec.input} is a directory; give a file or a glob such as '{spec.input}/*.jsonl'"
        )
    files = formats.match_files(spec.input)
    fmt = formats.detect_format(files, spec.format)
    mode = spec.mode or "fields"
    _check_mode(spec, mode)
    fields, bind = _fields(spec.fields), _fields(spec.bind)
    keep = list(spec.keep or [])
    if mode == "fields" and not fields:
        raise ConfigurationError(
            "name the fields to encrypt with --fields a,b.c (or encrypt whole records with "
            "--mode record)"
        )
    key = spec.key or DEFAULT_KEY_URI
    parse_key_uri(key)
    context = check_context(spec.context or {})
    manifest = Manifest(mode=mode, fields=fields, key=key, format=fmt,
                        encoding=formats.ENCODINGS[fmt], bind=bind, keep=keep,
                        payload_field=DEFAULT_PAYLOAD_FIELD, context=dict(context),
                        kmsbeam_version=kmsbeam.__version__)  # fmt: skip
    plan = Plan(spec, files, spec.input, manifest, Path(spec.output), Path())
    if fmt == "csv":
        header = formats.csv_header(files)
        named = fields + bind + keep
        for name in named:
            if "." in name and name not in header:
                raise ConfigurationError(f"CSV columns are flat: there is no nested field {name!r}")
        formats.check_csv_fields(header, named)
        manifest.columns = plan.in_columns = header
        plan.out_columns = header if mode == "fields" else keep + [manifest.payload_field]
    elif fmt == "parquet":
        schema = formats.parquet_schema(files)
        manifest.arrow_schema = Manifest.encode_schema(schema)
        formats.encrypted_schema(schema, bind)  # checks that the bind fields exist
        plan.out_schema = (formats.encrypted_schema(schema, fields) if mode == "fields"
                           else formats.record_schema(schema, keep, manifest.payload_field))  # fmt: skip
    plan.dead_dir = _dead_dir(spec, plan.out_dir)
    _prepare_output(plan.out_dir, plan.dead_dir, spec.overwrite, files)
    source = _open_for_encrypt(key)
    if getattr(source, "created", False):
        where = getattr(source, "home", kmsbeam.keystore_home())
        notice(
            f"kmsbeam: created key {parse_key_uri(key).key} in the local keystore {where} "
            "(back it up: data encrypted with it cannot be decrypted without it)"
        )
        plan.key_created = True
    return plan


def _open_for_encrypt(key: str) -> object:
    """Open the key, creating a ``local:`` alias on first use.

    ``open_key_source`` caches sources per process, so its ``created`` flag would stay true on
    later runs in the same process; a fresh ``LocalKeySource`` tells whether *this* call
    created the key. The transforms then reuse the cached source as usual.
    """
    if parse_key_uri(key).scheme == "local":
        from kmsbeam.local import LocalKeySource

        return LocalKeySource(key, home=kmsbeam.keystore_home(), create=True)
    source = kmsbeam.open_key_source(key, create=True)
    _check_remote_key(key, source)
    return source


def _check_remote_key(key: str, source: kmsbeam.KeySource) -> None:
    """A remote key that is missing or not enabled fails the job before it starts (one
    sentence), not each record as a dead letter. A KMS that is down fails here too, after the
    key source's retries. A caller without permission to describe the key (least privilege:
    an ingestion role may only generate data keys) is left to find out during the job."""
    try:
        info = source.describe_key()
    except kmsbeam.AccessDeniedError:
        return
    if info.state != "Enabled":
        raise kmsbeam.KeyDisabledError(f"the key {key} is {info.state}, not Enabled")


def _input_of_dataset(spec: JobSpec) -> tuple[list[str], str, Manifest | None]:
    path = Path(spec.input)
    if path.is_dir():
        pattern = str(path / "part-*")
        files = formats.match_files(pattern) if any(path.glob("part-*")) else []
        if not files:
            raise ConfigurationError(
                f"{path} has no part-* data files; give a directory written by kmsbeam encrypt, "
                "a file or a glob"
            )
        return files, pattern, Manifest.read(path)
    files = formats.match_files(spec.input)
    parents = {Path(f).parent for f in files}
    manifest = Manifest.read(parents.pop()) if len(parents) == 1 else None
    return files, spec.input, manifest


def _merge(spec: JobSpec, m: Manifest) -> list[str]:
    """Check explicit decrypt options against the manifest (key and context may override).

    Returns the fields that stay encrypted (``--fields`` may name a subset).
    """
    if spec.format and spec.format != m.format:
        raise ConfigurationError(f"the dataset is {m.format} (per its manifest), not {spec.format}")
    if spec.mode and spec.mode != m.mode:
        raise ConfigurationError(f"the dataset was encrypted in {m.mode} mode (per its manifest)")
    _check_mode(spec, m.mode)
    for name in _fields(spec.fields):
        if name not in m.fields:
            raise ConfigurationError(
                f"unknown field {name!r}: the manifest lists {', '.join(m.fields) or 'none'}"
            )
    still: list[str] = []
    if spec.fields:
        still = [f for f in m.fields if f not in _fields(spec.fields)]
        m.fields = _fields(spec.fields)
    if spec.bind is not None and _fields(spec.bind) != m.bind:
        raise ConfigurationError(f"--bind must match the manifest ({', '.join(m.bind) or 'none'})")
    if spec.keep is not None and list(spec.keep) != m.keep:
        raise ConfigurationError(f"--keep must match the manifest ({', '.join(m.keep) or 'none'})")
    if spec.key:
        m.key = spec.key
    if spec.context is not None:
        m.context = dict(spec.context)
    return still


def plan_decrypt(spec: JobSpec) -> Plan:
    """Check a decrypt job (manifest first, then options), prepare OUTPUT, open the key."""
    files, pattern, manifest = _input_of_dataset(spec)
    still: list[str] = []
    if manifest is None:
        fmt = formats.detect_format(files, spec.format)
        mode = spec.mode or "fields"
        _check_mode(spec, mode)
        if fmt == "parquet" or (fmt == "csv" and mode == "record"):
            raise ConfigurationError(
                f"decrypting {fmt} in {mode} mode needs the {MANIFEST_NAME} manifest that "
                "kmsbeam encrypt wrote next to the data; decrypt that output directory"
            )
        if mode == "fields" and not spec.fields:
            raise ConfigurationError(
                f"there is no {MANIFEST_NAME} manifest next to the input: name the encrypted "
                "fields with --fields a,b.c (or --mode record)"
            )
        manifest = Manifest(mode=mode, fields=_fields(spec.fields), key=spec.key or DEFAULT_KEY_URI,
                            format=fmt, encoding=formats.ENCODINGS[fmt], bind=_fields(spec.bind),
                            keep=list(spec.keep or []), context=dict(spec.context or {}))  # fmt: skip
    else:
        still = _merge(spec, manifest)
    parse_key_uri(manifest.key)
    check_context(manifest.context)
    plan = Plan(spec, files, pattern, manifest, Path(spec.output), Path())
    if manifest.format == "csv":
        plan.in_columns = formats.csv_header(files)
        plan.out_columns = manifest.columns or plan.in_columns
    elif manifest.format == "parquet":
        schema = manifest.schema()
        assert schema is not None
        plan.out_schema = formats.encrypted_schema(schema, still) if still else schema
    plan.dead_dir = _dead_dir(spec, plan.out_dir)
    _prepare_output(plan.out_dir, plan.dead_dir, spec.overwrite, files)
    kmsbeam.open_key_source(manifest.key, create=False)
    return plan

