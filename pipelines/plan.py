"""Turning command-line choices into a checked job plan, before any pipeline is built: fields
and record datasets here, ``--parquet-mode`` ones in ``parquet_plan`` (types in ``spec``).

Every user mistake (missing input, unknown format or field, bad key URI, options that do not
match the manifest, an output directory with data in it) is found here and raised as a
``kmsbeam.ConfigurationError`` carrying one sentence that says what to do.
"""

from __future__ import annotations

from collections.abc import Callable

import kmsbeam
from kmsbeam import DEFAULT_KEY_URI, ConfigurationError, check_context, parse_key_uri
from kmsbeam.formats.records import DEFAULT_PAYLOAD_FIELD
from kmsbeam.pipelines import formats, paths, preflight
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest
from kmsbeam.pipelines.output_dir import prepare_output
from kmsbeam.pipelines.vaults import require_vault, vault_for
from kmsbeam.pipelines.parquet_plan import parquet_manifest, plan_parquet_decrypt, plan_parquet_encrypt
from kmsbeam.pipelines.spec import (
    JobSpec,
    ParquetSpec,
    Plan,
    check_mode,
    created_notice,
    dead_dir_for,
    field_names,
    normalize_spec,
    open_for_encrypt,
    parquet_spec,
    required_keys,
    trusted_sources,
)

# the spec types are part of planning's API: ``from kmsbeam.pipelines.plan import JobSpec`` works
__all__ = [
    "JobSpec", "ParquetSpec", "Plan", "check_encrypt_options", "dead_dir_for", "normalize_spec",
    "parquet_spec", "plan_decrypt", "plan_encrypt", "trusted_sources",
]  # fmt: skip


def check_encrypt_options(spec: JobSpec) -> None:
    """The checks of an encrypt job that need no input file and touch nothing: modes, fields,
    columns, key URI, context, key vault. ``plan_encrypt`` starts with them (and opens the key
    last, so a mistake never creates a ``local:`` key); a watch makes them before any file
    lands, so a mistake exits 2 at once, not when the first window starts."""
    normalize_spec(spec)
    pq = spec.parquet
    if pq is not None:
        if pq.mode not in ("pme", "cells"):
            raise ConfigurationError(f"unknown --parquet-mode {pq.mode!r}: use pme or cells")
        if spec.mode or spec.keep:
            raise ConfigurationError("--mode and --keep do not combine with --parquet-mode")
        if not (pq.columns or spec.fields or pq.column_keys):
            raise ConfigurationError("name the columns to encrypt with --columns a,b.c")
        if spec.key_vault and pq.mode == "pme":
            raise ConfigurationError("--key-vault is for fields, record and cells datasets; PME "
                                     "files keep their wrapped keys in their footers")  # fmt: skip
    else:
        mode = spec.mode or "fields"
        check_mode(spec, mode)
        if mode == "fields" and not field_names(spec.fields):
            raise ConfigurationError(
                "name the fields to encrypt with --fields a,b.c (or encrypt whole records with "
                "--mode record)"
            )
    key = spec.key or DEFAULT_KEY_URI
    parse_key_uri(key)
    check_context(spec.context or {})
    if spec.key_vault:
        _outside(spec.key_vault, spec.output)


def plan_encrypt(spec: JobSpec, notice: Callable[[str], None]) -> Plan:
    """Check an encrypt job, prepare OUTPUT, and open (or create) the key.

    ``notice`` receives the one-line message when the key was created by this call.
    """
    check_encrypt_options(spec)
    if spec.parquet is not None:
        return plan_parquet_encrypt(spec, spec.parquet, notice)
    if spec.files is None and not _glob(spec.input) and paths.is_dir(spec.input):
        folder = spec.input.rstrip("/")
        raise ConfigurationError(
            f"{folder} is a directory; give a file or a glob such as '{folder}/*.jsonl'"
        )
    files = formats.input_files(spec)
    fmt = formats.detect_format(files, spec.format)
    mode = spec.mode or "fields"
    fields, bind = field_names(spec.fields), field_names(spec.bind)
    keep = list(spec.keep or [])
    key = spec.key or DEFAULT_KEY_URI
    context = check_context(spec.context or {})
    manifest = Manifest(mode=mode, fields=fields, key=key, format=fmt,
                        encoding=formats.ENCODINGS[fmt], bind=bind, keep=keep,
                        payload_field=DEFAULT_PAYLOAD_FIELD, context=dict(context),
                        kmsbeam_version=kmsbeam.__version__, key_vault=spec.key_vault)  # fmt: skip
    plan = Plan(spec, files, spec.input if spec.files is None else files, manifest, spec.output, "")
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
    if spec.key_vault:
        vault_for(spec.key_vault).prepare()  # writable, before OUTPUT is touched
    prepare_output(plan.out_dir, plan.dead_dir, spec.overwrite, files, keep_old=True)  # run_plan replaces it
    source = open_for_encrypt(key)
    if source.created:
        notice(created_notice(key))  # only a local: key is ever created
        plan.key_created = True
    return plan


def _outside(vault: str, out_dir: str) -> None:
    """A vault inside OUTPUT would be replaced with it (``--overwrite``) and lose every key."""
    inner, outer = vault.rstrip("/") + "/", out_dir.rstrip("/") + "/"
    if inner.startswith(outer):
        raise ConfigurationError(f"keep the key vault outside OUTPUT ({out_dir}): rewriting the "
                                 "output would delete its keys, and with them the data")  # fmt: skip


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
    check_mode(spec, m.mode)
    for name in field_names(spec.fields):
        if name not in m.fields:
            raise ConfigurationError(
                f"unknown field {name!r}: the manifest lists {', '.join(m.fields) or 'none'}"
            )
    still: list[str] = []
    if spec.fields:
        still = [f for f in m.fields if f not in field_names(spec.fields)]
        m.fields = field_names(spec.fields)
    if spec.bind is not None and field_names(spec.bind) != m.bind:
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
        manifest = parquet_manifest(spec, spec.parquet, files)
        spec.parquet = None
    if spec.parquet is not None:
        raise ConfigurationError("--parquet-mode and its options are for encrypt (decrypt reads "
                                 "them from the dataset's manifest)")  # fmt: skip
    if manifest is None:
        fmt = formats.detect_format(files, spec.format)
        mode = spec.mode or "fields"
        check_mode(spec, mode)
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
        manifest = Manifest(mode=mode, fields=field_names(spec.fields), key=spec.key or DEFAULT_KEY_URI,
                            format=fmt, encoding=formats.ENCODINGS[fmt], bind=field_names(spec.bind),
                            keep=list(spec.keep or []), context=dict(spec.context or {}),
                            key_vault=spec.key_vault)  # fmt: skip
    elif manifest.mode in ("pme", "cells"):
        return plan_parquet_decrypt(spec, files, pattern, manifest, trusted_sources(spec))
    else:
        still = _merge(spec, manifest)
        manifest.key_vault = spec.key_vault or manifest.key_vault
        if not spec.key:  # the manifest's key is data: a hint resolved against the caller's
            manifest.key = trusted_sources(spec).resolve(manifest.key)
    parse_key_uri(manifest.key)
    check_context(manifest.context)
    if manifest.key_vault:
        require_vault(vault_for(manifest.key_vault))  # a typo: exit 2, not N dead letters
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
