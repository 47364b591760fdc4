"""Turning command-line choices into a checked job plan, before any pipeline is built.

Every user mistake (missing input, unknown format or field, bad key URI, options that do not
match the manifest, an output directory with data in it) is found here and raised as a
``kmsbeam.ConfigurationError`` carrying one sentence that says what to do.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
from kmsbeam.pipelines import formats, paths, preflight
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest
from kmsbeam.pipelines.output_dir import DEAD_LETTER_DIR, prepare_output

import kmsbeam
from kmsbeam import (
    DEFAULT_KEY_URI,
    ConfigurationError,
    check_context,
    parse_key_uri,
    parse_paths,
)
from kmsbeam.formats.records import DEFAULT_PAYLOAD_FIELD
from kmsbeam.keys.trust import TrustedKeySources

__all__ = [
    "JobSpec", "ParquetSpec", "Plan", "dead_dir_for", "normalize_spec", "parquet_spec", "plan_decrypt",
    "plan_encrypt", "prepare_output", "trusted_sources",
]  # fmt: skip



@dataclass
class ParquetSpec:
    """The ``--parquet-mode`` options: PME or cell-encrypted columns of Parquet input."""

    mode: str
    columns: list[str] = field(default_factory=list)
    column_keys: dict[str, str] = field(default_factory=dict)
    footer_key: str | None = None
    plaintext_footer: bool = False
    external_key_material: bool = False


def parquet_spec(args: Any) -> ParquetSpec | None:
    """The Parquet options of parsed CLI arguments, or None when none was given."""
    keys: dict[str, str] = {}
    for item in args.column_key or []:
        column, eq, uri = item.partition("=")
        if not eq or not column.strip() or not uri:
            raise ConfigurationError(f"--column-key takes COLUMN=URI, not {item.split('=')[0]!r}...")
        keys[column.strip()] = uri
    given = args.columns or keys or args.footer_key or args.plaintext_footer or args.external_key_material
    if args.parquet_mode is None and not given:
        return None
    if args.parquet_mode is None:
        raise ConfigurationError("choose how to protect the columns: --parquet-mode pme or cells")
    return ParquetSpec(args.parquet_mode, list(args.columns or []), keys, args.footer_key,
                       args.plaintext_footer, args.external_key_material)  # fmt: skip


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
    parquet: ParquetSpec | None = None
    kms_qps: float | None = None  # KMS calls/s per worker process (kmsbeam.keys.budget); None: no cap
    kms_price_per_10k: float | None = None  # for the summary's cost estimate; None: the default
    trusted: TrustedKeySources | None = None  # the caller's key sources; None: from key and env
    require_keys: list[str] | None = None  # --require-key items (strict decryption)
    key_cache_ttl: float | None = None  # seconds an unwrapped data key is reused; None: 60
    data_key_max_age: float | None = None  # seconds one data key encrypts; None: 300


@dataclass
class Plan:
    """A checked job: where to read and write, and the dataset's manifest."""

    spec: JobSpec
    files: list[str]
    pattern: str
    manifest: Manifest
    # FileSystems paths (str) for encrypt and decrypt; rotate still passes pathlib Paths (Any
    # until it moves to FileSystems).
    out_dir: Any
    dead_dir: Any
    in_columns: list[str] = field(default_factory=list)
    out_columns: list[str] = field(default_factory=list)
    out_schema: pa.Schema | None = None
    key_created: bool = False
    key_map: dict[str, str] = field(default_factory=dict)  # PME: master key id -> resolved URI
    require_keys: tuple[str, ...] = ()  # strict decryption: the required key URIs

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


def dead_dir_for(spec: JobSpec, out_dir: Any) -> Any:
    """The dead-letter directory: ``--dead-letter`` or OUTPUT/_dead_letters (a str for a str
    OUTPUT, a Path for a Path)."""
    if isinstance(out_dir, Path):
        return Path(spec.dead_letter) if spec.dead_letter else out_dir / DEAD_LETTER_DIR
    if spec.dead_letter:
        return paths.normalize(spec.dead_letter, "--dead-letter").rstrip("/")
    return paths.join(out_dir, DEAD_LETTER_DIR)


def normalize_spec(spec: JobSpec) -> None:
    """INPUT, OUTPUT and ``--dead-letter`` as FileSystems paths: local ones absolute, URLs of
    a scheme no registered filesystem handles refused (before anything runs). Worker
    processes import ``kmsbeam.transforms`` first (``--beam_plugins``): their first bundle may
    be Beam's own (a sink's InitializeWrite on ``oss://``), before any kmsbeam DoFn."""
    if not any(a.split("=")[0] == "--beam_plugins" for a in spec.beam_args):
        spec.beam_args = [*spec.beam_args, "--beam_plugins=kmsbeam.transforms"]
    paths.use_options(spec.beam_args)
    spec.input = paths.normalize(spec.input, "the input")
    spec.output = paths.normalize(spec.output, "the output").rstrip("/") or "/"
    if spec.dead_letter:
        spec.dead_letter = paths.normalize(spec.dead_letter, "--dead-letter")


def _fields(names: list[str] | None) -> list[str]:
    return [p.name for p in parse_paths(names or [])]


def plan_encrypt(spec: JobSpec, notice: Callable[[str], None]) -> Plan:
    """Check an encrypt job, prepare OUTPUT, and open (or create) the key.

    ``notice`` receives the one-line message when the key was created by this call.
    """
    normalize_spec(spec)
    if spec.parquet is not None:
        return _plan_parquet_encrypt(spec, spec.parquet, notice)
    if not _glob(spec.input) and paths.is_dir(spec.input):
        folder = spec.input.rstrip("/")
        raise ConfigurationError(
            f"{folder} is a directory; give a file or a glob such as '{folder}/*.jsonl'"
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
    plan = Plan(spec, files, spec.input, manifest, spec.output, "")
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
    preflight.check(plan)  # --fields against a sample of the input, before OUTPUT is touched
    plan.dead_dir = dead_dir_for(spec, plan.out_dir)
    prepare_output(plan.out_dir, plan.dead_dir, spec.overwrite, files, keep_old=True)  # run_plan replaces it
    source = _open_for_encrypt(key)
    if source.created:
        where = getattr(source, "home", kmsbeam.keystore_home())
        notice(
            f"kmsbeam: created key {parse_key_uri(key).key} in the local keystore {where} "
            "(back it up: data encrypted with it cannot be decrypted without it)"
        )
        plan.key_created = True
    return plan


def trusted_sources(spec: JobSpec) -> TrustedKeySources:
    """The key sources the caller configured for this job: ``--key``, the Parquet key options
    and ``KMSBEAM_KEY_SOURCES`` (``kmsbeam.keys.trust``). A key URI in a manifest only resolves
    against these."""
    required = [u for u in spec.require_keys or [] if ":" in u.split("/", 1)[0]]  # URIs
    if spec.trusted is not None:
        return spec.trusted.with_uris(spec.key, *required)
    pq = spec.parquet
    extra = [pq.footer_key, *pq.column_keys.values()] if pq is not None else []
    return TrustedKeySources.configured(spec.key, *extra, *required)


def required_keys(spec: JobSpec, key: str) -> tuple[str, ...]:
    """``--require-key`` as key URIs (bare key ids in the source of ``key``), their versions
    learnt now: an unknown key fails before the job starts."""
    from kmsbeam.keys.strict import KeyRequirement, qualify_key

    if not spec.require_keys:
        return ()
    requirement = KeyRequirement([qualify_key(item, key) for item in spec.require_keys])
    requirement.versions()
    return requirement.keys


def _plan_parquet_encrypt(spec: JobSpec, pq_spec: ParquetSpec, notice: Callable[[str], None]) -> Plan:
    """``plan_encrypt`` for ``--parquet-mode pme|cells``."""
    from kmsbeam.formats.parquet import PmeEncryption, cells_schema

    if pq_spec.mode not in ("pme", "cells"):
        raise ConfigurationError(f"unknown --parquet-mode {pq_spec.mode!r}: use pme or cells")
    if spec.mode or spec.keep:
        raise ConfigurationError("--mode and --keep do not combine with --parquet-mode")
    files = formats.match_files(spec.input)
    if formats.detect_format(files, spec.format) != "parquet":
        raise ConfigurationError("--parquet-mode encrypts Parquet input; name .parquet files")
    columns = list(dict.fromkeys(pq_spec.columns + (spec.fields or []) + list(pq_spec.column_keys)))
    if not columns:
        raise ConfigurationError("name the columns to encrypt with --columns a,b.c")
    key = spec.key or DEFAULT_KEY_URI
    schema = formats.parquet_schema(files)
    manifest = Manifest(mode=pq_spec.mode, fields=columns, key=key, format="parquet",
                        encoding="bytes", bind=_fields(spec.bind), context=dict(check_context(spec.context)),
                        arrow_schema=Manifest.encode_schema(schema),
                        kmsbeam_version=kmsbeam.__version__)  # fmt: skip
    plan = Plan(spec, files, spec.input, manifest, spec.output, "")
    if pq_spec.mode == "pme":
        if spec.bind:
            raise ConfigurationError("--bind is for --parquet-mode cells (PME has no record identity)")
        manifest.column_keys = {c: pq_spec.column_keys.get(c, key) for c in columns}
        manifest.footer_key = pq_spec.footer_key or key
        manifest.plaintext_footer = pq_spec.plaintext_footer
        manifest.key_material = "external" if pq_spec.external_key_material else "internal"
        PmeEncryption(manifest.footer_key, manifest.column_keys).column_map(schema)  # checks columns
        uris = list(dict.fromkeys([manifest.footer_key, *manifest.column_keys.values()]))
        plan.out_schema = schema
    else:
        if (pq_spec.column_keys or pq_spec.footer_key or pq_spec.plaintext_footer
                or pq_spec.external_key_material):  # fmt: skip
            raise ConfigurationError("--column-key, --footer-key, --plaintext-footer and "
                                     "--external-key-material are for --parquet-mode pme")  # fmt: skip
        uris = [key]
        plan.out_schema = cells_schema(schema, columns, key, manifest.bind)  # checks the columns
    plan.dead_dir = dead_dir_for(spec, plan.out_dir)
    prepare_output(plan.out_dir, plan.dead_dir, spec.overwrite, files, keep_old=True)  # run_plan replaces it
    for uri in uris:
        parse_key_uri(uri)
        source = _open_for_encrypt(uri)
        if source.created:
            where = getattr(source, "home", kmsbeam.keystore_home())
            notice(f"kmsbeam: created key {parse_key_uri(uri).key} in the local keystore {where} "
                   "(back it up: data encrypted with it cannot be decrypted without it)")  # fmt: skip
            plan.key_created = True
    return plan


def _open_for_encrypt(key: str) -> kmsbeam.KeySource:
    """Open the key, creating a ``local:`` alias on first use.

    ``open_key_source`` caches sources per process, so its ``created`` flag would stay true on
    later runs in the same process; a fresh ``LocalKeySource`` tells whether *this* call
    created the key. The transforms then reuse the cached source as usual.
    """
    if parse_key_uri(key).scheme == "local":
        from kmsbeam.keys.local import LocalKeySource

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
    except kmsbeam.AccessDeniedError as exc:
        preflight.check_credentials(key, exc)  # unknown credentials: exit 2; no permission: the job
        return
    if info.state != "Enabled":
        raise kmsbeam.KeyDisabledError(f"the key {key} is {info.state}, not Enabled")


def _glob(path: str) -> bool:
    return any(c in path for c in "*?[")


def _input_of_dataset(spec: JobSpec) -> tuple[list[str], str, Manifest | None]:
    path = spec.input.rstrip("/") or spec.input
    if not _glob(path) and paths.is_dir(path):
        pattern = paths.join(path, "part-*")
        files = paths.match(pattern)
        if not files:
            raise ConfigurationError(
                f"{path} has no part-* data files; give a directory written by kmsbeam encrypt, "
                "a file or a glob"
            )
        return files, pattern, Manifest.read(path)
    files = formats.match_files(spec.input)
    parents = {paths.parent(f) for f in files}
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
    preflight.check_context(spec.context, m.context)  # a wrong --context: exit 2, not N dead letters
    if spec.context is not None:
        m.context = dict(spec.context)
    return still


def plan_decrypt(spec: JobSpec) -> Plan:
    """Check a decrypt job (manifest first, then options), prepare OUTPUT, open the key."""
    normalize_spec(spec)
    files, pattern, manifest = _input_of_dataset(spec)
    still: list[str] = []
    if manifest is None and spec.parquet is not None:
        manifest = _parquet_manifest(spec, spec.parquet, files)
        spec.parquet = None
    if spec.parquet is not None:
        raise ConfigurationError("--parquet-mode and its options are for encrypt (decrypt reads "
                                 "them from the dataset's manifest)")  # fmt: skip
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
    elif manifest.mode in ("pme", "cells"):
        return _plan_parquet_decrypt(spec, files, pattern, manifest, trusted_sources(spec))
    else:
        still = _merge(spec, manifest)
        if not spec.key:  # the manifest's key is data: a hint resolved against the caller's
            manifest.key = trusted_sources(spec).resolve(manifest.key)
    parse_key_uri(manifest.key)
    check_context(manifest.context)
    plan = Plan(spec, files, pattern, manifest, spec.output, "")
    if manifest.format == "csv":
        plan.in_columns = formats.csv_header(files)
        plan.out_columns = manifest.columns or plan.in_columns
    elif manifest.format == "parquet":
        schema = manifest.schema()
        assert schema is not None
        plan.out_schema = formats.encrypted_schema(schema, still) if still else schema
    preflight.check(plan)  # the sample holds kmsbeam values in the fields, before OUTPUT is touched
    plan.dead_dir = dead_dir_for(spec, plan.out_dir)
    prepare_output(plan.out_dir, plan.dead_dir, spec.overwrite, files, keep_old=True)  # run_plan replaces it
    kmsbeam.open_key_source(manifest.key, create=False)
    plan.require_keys = required_keys(spec, manifest.key)
    return plan



def _plan_parquet_decrypt(spec: JobSpec, files: list[str], pattern: str, m: Manifest,
                          trusted: TrustedKeySources) -> Plan:  # fmt: skip
    """``plan_decrypt`` for a dataset written with ``--parquet-mode``: the whole dataset.

    Every key URI of the manifest is a hint resolved against ``trusted``; PME files name their
    master keys by a hash of the URI they were written with, so ``plan.key_map`` maps those
    ids to the resolved URIs."""
    from kmsbeam.formats.parquet import master_key_id

    if spec.fields or spec.mode or spec.keep or spec.parquet is not None:
        raise ConfigurationError(
            f"the dataset was written with --parquet-mode {m.mode}; decrypt it as a whole "
            "(only --key, --context and Beam options may be given)"
        )
    if spec.bind is not None and _fields(spec.bind) != m.bind:
        raise ConfigurationError(f"--bind must match the manifest ({', '.join(m.bind) or 'none'})")
    written = [m.key, m.footer_key or m.key, *(m.column_keys or {}).values()]
    resolved = trusted.resolve_all(u for u in written if u != spec.key)
    resolved.update({spec.key: spec.key} if spec.key else {})
    key_map = {master_key_id(h): r for h, r in resolved.items() if h != r}
    m.key = spec.key or resolved[m.key]
    m.footer_key = resolved[m.footer_key] if m.footer_key else None
    m.column_keys = {c: resolved[u] for c, u in (m.column_keys or {}).items()} or m.column_keys
    if spec.context is not None:
        m.context = dict(spec.context)
    check_context(m.context)
    plan = Plan(spec, files, pattern, m, spec.output, "", out_schema=m.schema(),
                key_map=key_map)  # fmt: skip
    plan.dead_dir = dead_dir_for(spec, plan.out_dir)
    prepare_output(plan.out_dir, plan.dead_dir, spec.overwrite, files, keep_old=True)  # run_plan replaces it
    for uri in dict.fromkeys([m.key, m.footer_key or m.key, *(m.column_keys or {}).values()]):
        parse_key_uri(uri)
        kmsbeam.open_key_source(uri, create=False)
    if spec.require_keys and m.mode == "pme":
        raise ConfigurationError("--require-key is for field, record and cells datasets; a PME "
                                 "dataset opens only with the keys it names")  # fmt: skip
    plan.require_keys = required_keys(spec, m.key)
    return plan


def _parquet_manifest(spec: JobSpec, pq_spec: ParquetSpec, files: list[str]) -> Manifest:
    """A manifest for Parquet files that have none (written elsewhere, or copied alone)."""
    from kmsbeam.formats.parquet import PmeDecryption, cells_metadata, open_parquet, original_schema

    key = spec.key or DEFAULT_KEY_URI
    m = Manifest(mode=pq_spec.mode, fields=pq_spec.columns, key=key, format="parquet",
                 encoding="bytes", bind=_fields(spec.bind), context=dict(spec.context or {}))  # fmt: skip
    if pq_spec.mode == "pme":
        m.column_keys, m.footer_key = dict(pq_spec.column_keys), pq_spec.footer_key or key
        keys = [m.footer_key, *m.column_keys.values(), key]
        local = None if paths.is_remote(files[0]) else files[0]  # external key material: local only
        with paths.open_read(files[0]) as f:
            schema = open_parquet(f, files[0], PmeDecryption(keys, m.context), local).schema_arrow
    else:
        schema = formats.parquet_schema(files)
        meta = cells_metadata(schema)
        if meta is None:
            raise ConfigurationError(f"{files[0]} holds no kmsbeam.cells metadata; it was not "
                                     "written by --parquet-mode cells")  # fmt: skip
        m.fields = m.fields or list(meta["columns"])
        m.bind = m.bind or list(meta.get("bind", []))
        schema = original_schema(schema)
    m.arrow_schema = Manifest.encode_schema(schema)
    return m
