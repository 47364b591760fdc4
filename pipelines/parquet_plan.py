"""Planning ``--parquet-mode pme|cells`` jobs (``kmsbeam.pipelines.plan`` dispatches here): the
manifest, output schema and keys of a PME or cells dataset, checked before anything is written.
"""

from __future__ import annotations

from collections.abc import Callable

import kmsbeam
from kmsbeam import DEFAULT_KEY_URI, ConfigurationError, check_context, parse_key_uri
from kmsbeam.formats.parquet import (
    PmeDecryption,
    PmeEncryption,
    cells_metadata,
    cells_schema,
    master_key_id,
    open_parquet,
    original_schema,
)
from kmsbeam.keys.trust import TrustedKeySources
from kmsbeam.pipelines import formats, paths
from kmsbeam.pipelines.manifest import Manifest
from kmsbeam.pipelines.output_dir import prepare_output
from kmsbeam.pipelines.vaults import require_vault, vault_for
from kmsbeam.pipelines.spec import (
    JobSpec,
    ParquetSpec,
    Plan,
    created_notice,
    dead_dir_for,
    field_names,
    open_for_encrypt,
    required_keys,
)

__all__ = ["parquet_manifest", "plan_parquet_decrypt", "plan_parquet_encrypt"]


def plan_parquet_encrypt(spec: JobSpec, pq_spec: ParquetSpec, notice: Callable[[str], None]) -> Plan:
    """``plan_encrypt`` for ``--parquet-mode pme|cells`` (after ``plan.check_encrypt_options``)."""
    files = formats.input_files(spec)
    if formats.detect_format(files, spec.format) != "parquet":
        raise ConfigurationError("--parquet-mode encrypts Parquet input; name .parquet files")
    columns = list(dict.fromkeys(pq_spec.columns + (spec.fields or []) + list(pq_spec.column_keys)))
    key = spec.key or DEFAULT_KEY_URI
    schema = formats.parquet_schema(files)
    manifest = Manifest(mode=pq_spec.mode, fields=columns, key=key, format="parquet",
                        encoding="bytes", bind=field_names(spec.bind), context=dict(check_context(spec.context)),
                        arrow_schema=Manifest.encode_schema(schema),
                        kmsbeam_version=kmsbeam.__version__)  # fmt: skip
    plan = Plan(spec, files, spec.input if spec.files is None else files, manifest, spec.output, "")
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
        plan.out_schema = cells_schema(schema, columns, key, manifest.bind, spec.key_vault)  # checks the columns
        if spec.key_vault:
            if (spec.key_vault.rstrip("/") + "/").startswith(spec.output.rstrip("/") + "/"):
                raise ConfigurationError(f"keep the key vault outside OUTPUT ({spec.output}): "
                                         "rewriting the output would delete its keys")  # fmt: skip
            vault_for(spec.key_vault).prepare()  # writable, before OUTPUT is touched
            manifest.key_vault = spec.key_vault
    plan.dead_dir = dead_dir_for(spec, plan.out_dir)
    prepare_output(plan.out_dir, plan.dead_dir, spec.overwrite, files, keep_old=True)  # run_plan replaces it
    for uri in uris:
        parse_key_uri(uri)
        source = open_for_encrypt(uri)
        if source.created:
            notice(created_notice(uri))  # only a local: key is ever created
            plan.key_created = True
    return plan


def plan_parquet_decrypt(spec: JobSpec, files: list[str], pattern: str, m: Manifest,
                          trusted: TrustedKeySources) -> Plan:  # fmt: skip
    """``plan_decrypt`` for a dataset written with ``--parquet-mode``: the whole dataset.

    Every key URI of the manifest is a hint resolved against ``trusted``; PME files name their
    master keys by a hash of the URI they were written with, so ``plan.key_map`` maps those
    ids to the resolved URIs."""
    if spec.fields or spec.mode or spec.keep or spec.parquet is not None:
        raise ConfigurationError(
            f"the dataset was written with --parquet-mode {m.mode}; decrypt it as a whole "
            "(only --key, --context and Beam options may be given)"
        )
    if spec.bind is not None and field_names(spec.bind) != m.bind:
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
    m.key_vault = spec.key_vault or m.key_vault
    if m.key_vault:
        if m.mode != "cells":
            raise ConfigurationError("--key-vault is for fields, record and cells datasets")
        require_vault(vault_for(m.key_vault))
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


def parquet_manifest(spec: JobSpec, pq_spec: ParquetSpec, files: list[str]) -> Manifest:
    """A manifest for Parquet files that have none (written elsewhere, or copied alone)."""
    key = spec.key or DEFAULT_KEY_URI
    m = Manifest(mode=pq_spec.mode, fields=pq_spec.columns, key=key, format="parquet",
                 encoding="bytes", bind=field_names(spec.bind), context=dict(spec.context or {}))  # fmt: skip
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
