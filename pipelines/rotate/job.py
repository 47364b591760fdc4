"""``kmsbeam rotate``: move a dataset written by ``kmsbeam encrypt`` to a new master key.

::

    kmsbeam rotate out/enc/ out/enc-rotated/ --to-key kms-emulator://127.0.0.1:9800/alias/pii
    kmsbeam rotate out/enc/ out/enc-new/ --reencrypt    # new data keys, data re-encrypted
    kmsbeam rotate out/enc/ out/x/ --to-key URI --dry-run   # count data keys and calls only
    kmsbeam rotate events-pme/ --in-place     # PME, external key material: key files only
    kmsbeam rotate oss://bucket/export/ --in-place   # OSS export: object metadata only

By default each value's wrapped data key is rewrapped (``RewrapDataKeys``): the bytes after
each value's header are copied unchanged and the key source is called once per distinct
data key (plus one unwrap to check it). Values already under the target's current key
version are copied as they are, so running it again on its own output makes no data-key
call. ``--reencrypt`` decrypts and encrypts again with new data keys.

OUTPUT gets the data, ``_kmsbeam.json`` (the input's manifest with ``key`` = the target) and
``_kmsbeam_rotation.json``, the rotation manifest::

    {"kmsbeam_rotation": 1, "method": "rewrap", "source_key": URI, "target_key": URI,
     "target_version": V, "source_versions": {V: data keys}, "data_keys_moved": N,
     "data_keys": [{"commitment": K-hex, "from": V, "to": V2}, ...],
     "counts": {"records": .., "values_rewrapped": .., "values_skipped": .., ...}}

Data keys are named by their commitment K (public: it is in every value header), never by
key material. Supported inputs: datasets in ``fields`` and ``record`` mode (JSONL, CSV,
Parquet); cells and PME datasets have their own modules (``rotate_cells``, ``rotate_pme``,
``rotate_pme_rewrite``), OSS exports ``rotate_oss``.

Resuming: each rewrap is journaled in ``OUTPUT/_kmsbeam_rotation.journal/`` as it happens
(``kmsbeam.rotation.journal``). If a run dies, running the same command again finds the journal
without a rotation manifest, replaces the partial output, and takes the data keys the journal
lists from it without a KMS call. ``--trust-manifest`` takes the target's version from the
input's rotation manifest (no ``DescribeKey``; see ``rotate_state``). ``--only-key URI`` keeps
data keys under any version of that source key.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

import apache_beam as beam
from kmsbeam.pipelines import _fns, formats, jobs
from kmsbeam.pipelines.rotate import fs as rotate_fs
from kmsbeam.pipelines import paths as job_paths
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest
from kmsbeam.pipelines.output_dir import DEAD_LETTER_DIR
from kmsbeam.pipelines.plan import JobSpec
from kmsbeam.pipelines.rotate.lock import LOCK_NAME
from kmsbeam.pipelines.rotate.report import dry_run, inventory, key_rows, table
from kmsbeam.pipelines.rotate.state import (
    JOURNAL_NAME,
    ROTATION_NAME,
    RotationPlan,
    finished_at,
    read_rotation,
    recorded_target,
)
from kmsbeam.pipelines.rotate.verify import verify_output
from kmsbeam.pipelines.summary import kms_cost, kms_cost_row
from kmsbeam.transforms import ReencryptFields, ReencryptRecords, RewrapDataKeys

import kmsbeam
from kmsbeam import ConfigurationError, parse_key_uri
from kmsbeam.rotation.rewrap import Rewrapper, record_paths, source_key_versions
from kmsbeam.keys.trust import TrustedKeySources

__all__ = ["ROTATION_NAME", "run_rotate", "trusted_sources"]

_KINDS = {"local": 1, "kms-emulator": 2, "alibaba-kms": 2, "pkcs11": 3}
_TMP = "_rotation_keys"


def trusted_sources(args: argparse.Namespace) -> TrustedKeySources:
    """The caller's key sources: ``--to-key``, ``--only-key`` and ``KMSBEAM_KEY_SOURCES``.
    Key URIs in the dataset's manifests are hints resolved against these (``kmsbeam.keys.trust``)."""
    required = [u for u in getattr(args, "require_key", None) or [] if ":" in u.split("/", 1)[0]]
    return TrustedKeySources.configured(getattr(args, "to_key", None),
                                        *(getattr(args, "only_key", None) or []), *required)  # fmt: skip


def required_keys(args: argparse.Namespace, to_key: str) -> tuple[str, ...]:
    """``--require-key`` as key URIs (bare key ids in the target's key source, which must hold
    the data keys to rewrap them), their versions learnt now."""
    from kmsbeam.keys.strict import KeyRequirement, qualify_key

    items = getattr(args, "require_key", None)
    if not items:
        return ()
    requirement = KeyRequirement([qualify_key(item, to_key) for item in items])
    requirement.versions()  # an unknown key fails before anything is written
    return requirement.keys


def _manifest_text(src: str) -> str | None:
    """The text of ``src/_kmsbeam.json`` on any filesystem, or None."""
    path = rotate_fs.join(src, MANIFEST_NAME)
    try:
        return rotate_fs.read_text(path) if rotate_fs.exists(path) else None
    except Exception as exc:  # Beam wraps IO errors
        raise ConfigurationError(f"cannot read {path} ({type(exc).__name__})") from None


def is_export_input(src: str) -> bool:
    """True when ``src`` holds an export manifest (``kmsbeam export``), not a dataset's."""
    text = _manifest_text(rotate_fs.absolute(src))
    return text is not None and '"kmsbeam_export"' in text


def _manifest(src: str) -> Manifest:
    """The dataset manifest of ``src`` (a local directory or any FileSystems prefix)."""
    text = _manifest_text(str(src))
    if text is None:
        raise ConfigurationError(f"{src} is not a directory written by kmsbeam encrypt (no "
                                 f"{MANIFEST_NAME}); rotate the output directory of an encrypt")  # fmt: skip
    if '"kmsbeam_export"' in text:
        raise ConfigurationError(f"{src} holds a kmsbeam export, not a dataset: rotate it with "
                                 "--in-place (object metadata only)")  # fmt: skip
    return Manifest.from_json(text, rotate_fs.join(str(src), MANIFEST_NAME))


def _plan(args: argparse.Namespace, beam_args: list[str]) -> tuple[RotationPlan, Manifest, str]:
    src = args.input
    manifest = _manifest(src)
    if args.output is None:
        raise ConfigurationError("name the OUTPUT directory (or --in-place for PME datasets "
                                 "with external key material)")  # fmt: skip
    if manifest.mode not in ("fields", "record"):
        raise ConfigurationError(f"rotating --parquet-mode {manifest.mode} datasets is not "
                                 "supported yet; use --mode fields or record datasets")  # fmt: skip
    files = rotate_fs.list_files(src, "part-*")
    if not files:
        raise ConfigurationError(f"{src} has no part-* data files")
    trusted = trusted_sources(args)
    to_key = args.to_key or trusted.resolve(manifest.key)
    parse_key_uri(to_key)
    if args.reencrypt:  # the source key is opened only to re-encrypt (a rewrap asks the target)
        manifest.key = trusted.resolve(manifest.key)
    old, new = _KINDS[parse_key_uri(manifest.key).scheme], _KINDS[parse_key_uri(to_key).scheme]
    if old != new and not args.reencrypt:
        raise ConfigurationError(f"{to_key} is another kind of key source than {manifest.key}: "
                                 "data keys cannot be rewrapped across kinds; use --reencrypt")  # fmt: skip
    spec = JobSpec("rotate", args.input, args.output, overwrite=args.overwrite, beam_args=beam_args)
    out = args.output
    plan = RotationPlan(spec, files, rotate_fs.join(src, "part-*"), manifest, out,
                        rotate_fs.join(out, DEAD_LETTER_DIR))  # fmt: skip
    if manifest.format == "csv":
        plan.in_columns = formats.csv_header(files)
        plan.out_columns = list(plan.in_columns)
    elif manifest.format == "parquet":
        schema = manifest.schema()
        assert schema is not None
        plan.out_schema = (formats.encrypted_schema(schema, manifest.fields) if manifest.mode == "fields"
                           else formats.record_schema(schema, manifest.keep, manifest.payload_field))  # fmt: skip
    plan.require_keys = required_keys(args, to_key)
    return plan, manifest, to_key


def _build(p: beam.Pipeline, plan: RotationPlan, m: Manifest, to_key: str, version: str,
           args: argparse.Namespace) -> None:  # fmt: skip
    paths, fmt = record_paths(m.mode, m.fields, m.payload_field)
    records, parse_dead = formats.read_records(p, m.format, plan.pattern, plan.in_columns)
    nested = [f for f in m.fields + m.bind if "." in f] if m.mode == "fields" else []
    if m.format == "parquet" and nested:
        records = records | "FillNullStructs" >> beam.Map(_fns.fill_null_parents, nested)
    lifetimes = {"key_cache_ttl": getattr(args, "key_cache_ttl", None),  # the revocation latency
                 "data_key_max_age": getattr(args, "data_key_max_age", None)}  # fmt: skip
    if args.reencrypt:
        step: Any = (ReencryptFields(m.fields, m.key, to_key, context=m.context, bind=m.bind,
                                     encoding=m.encoding, kms_qps=args.kms_qps,
                                     require_keys=plan.require_keys, **lifetimes)
                     if m.mode == "fields" else
                     ReencryptRecords(m.key, to_key, keep=m.keep, payload_field=m.payload_field,
                                      context=m.context, encoding=m.encoding,
                                      kms_qps=args.kms_qps, require_keys=plan.require_keys,
                                      **lifetimes))  # fmt: skip
    else:
        step = RewrapDataKeys(m.fields, to_key, mode=m.mode, context=m.context,
                              payload_field=m.payload_field, only_versions=args.only_version,
                              check_target=False, target_version=version,
                              journal=rotate_fs.join(plan.out_dir, JOURNAL_NAME),
                              kms_qps=args.kms_qps, require_keys=plan.require_keys,
                              key_cache_ttl=lifetimes["key_cache_ttl"])  # fmt: skip
    good, dead = records | "Rotate" >> step.with_dead_letters()
    tmp = rotate_fs.join(plan.out_dir, _TMP)
    for name, pcoll in (("in", records), ("out", good)):
        (pcoll | f"Keys_{name}" >> beam.FlatMap(key_rows, paths, fmt)
         | f"Distinct_{name}" >> beam.Distinct()
         | f"WriteKeys_{name}" >> beam.io.WriteToText(f"{tmp}/{name}", file_name_suffix=".jsonl"))  # fmt: skip
    if m.format == "parquet" and nested:
        good = good | "RestoreNullStructs" >> beam.Map(_fns.restore_null_parents)
        dead = dead | "RestoreNullStructsDead" >> beam.Map(_fns.restore_null_parents)
    encrypted = list(m.fields) if m.mode == "fields" else [m.payload_field]
    format_dead = formats.write_records(good, m.format, rotate_fs.join(plan.out_dir, "part"),
                                        columns=plan.out_columns, schema=plan.out_schema,
                                        encrypted=encrypted)  # fmt: skip
    letters = [d for d in (parse_dead, dead, format_dead) if d is not None]
    formats.write_dead_letters(letters, rotate_fs.join(plan.dead_dir, "part"))


def run_rotate(args: argparse.Namespace, beam_args: list[str]) -> int:
    """The ``rotate`` command; returns the exit code. One rotation per target (``rotate_lock``)."""
    from kmsbeam.keys.budget import install_kms_budget, uninstall_kms_budget
    from kmsbeam.pipelines.rotate.lock import rotation_lock

    qps = getattr(args, "kms_qps", None)
    if not any(a.split("=")[0] == "--beam_plugins" for a in beam_args):  # oss:// in every worker
        beam_args = [*beam_args, "--beam_plugins=kmsbeam.transforms"]
    job_paths.use_options(beam_args)  # the launcher's filesystems see --oss_endpoint ...
    # every path as the workers must see it: local ones absolute, unknown schemes refused
    args.input = rotate_fs.absolute(args.input)
    args.output = None if args.output is None else rotate_fs.absolute(args.output)
    from kmsbeam.pipelines.progress import elapsed_progress

    what = f"rotating {args.input}"
    why = "a rotation counts its values at the end"
    with rotation_lock(args), elapsed_progress(what, args.quiet or args.dry_run,
                                               getattr(args, "progress_every", None), why):  # fmt: skip
        if qps is None:
            return _run(args, beam_args)
        install_kms_budget(qps)  # this process's own calls (describe, in-process rotations)
        try:
            return _run(args, beam_args)
        finally:
            uninstall_kms_budget(qps)


def _run(args: argparse.Namespace, beam_args: list[str]) -> int:
    if args.only_key:  # filters by source key become filters by every version of it
        if args.reencrypt:
            raise ConfigurationError("--only-key filters a rewrap; --reencrypt re-encrypts everything")
        versions = list(args.only_version or [])
        for uri in args.only_key:
            versions.extend(source_key_versions(kmsbeam.open_key_source(uri, create=False)))
        args.only_version = versions
    if args.only_version and args.reencrypt:
        raise ConfigurationError("--only-version filters a rewrap; --reencrypt re-encrypts everything")
    # an oss:// export rotates in place (rotate_oss reads its manifest); otherwise one read tells
    # an export manifest from a dataset's, wherever it lives
    export = args.in_place and args.input.startswith("oss://") or is_export_input(args.input)
    if getattr(args, "require_key", None) and (args.in_place or export):
        raise ConfigurationError("--require-key applies to field, record and cells datasets "
                                 "rotated into an OUTPUT directory")  # fmt: skip
    if args.in_place:
        if args.output is not None:
            raise ConfigurationError("--in-place rewrites INPUT; give no OUTPUT")
        if export and args.input.startswith("oss://"):
            from kmsbeam.pipelines.rotate.oss import rotate_export_in_place

            return rotate_export_in_place(args, table)
        if export:
            raise ConfigurationError("only exports on oss:// rotate in place (their wrapped keys "
                                     "are object metadata); export this one again under the new key")  # fmt: skip
        if rotate_fs.is_remote(args.input):
            raise ConfigurationError("--in-place rotates a local PME dataset or an oss:// export; "
                                     "rotate other datasets into an OUTPUT directory")  # fmt: skip
        from kmsbeam.pipelines.rotate.pme import rotate_pme_in_place

        return rotate_pme_in_place(args, _manifest, table)
    if export:
        raise ConfigurationError("an export is rotated in place, not into an OUTPUT: pass "
                                 "--in-place (oss:// exports; object metadata only)")  # fmt: skip
    first = _manifest(args.input)
    remote = rotate_fs.is_remote(args.input) or rotate_fs.is_remote(args.output or "")
    if first.mode == "pme" and remote:
        raise ConfigurationError("PME datasets are rotated on local disk for now; copy the "
                                 "dataset to a local directory, rotate it, and copy it back")  # fmt: skip
    if first.mode == "pme" and args.output is not None:
        from kmsbeam.pipelines.rotate.pme_rewrite import rotate_pme_rewrite

        if getattr(args, "require_key", None):
            raise ConfigurationError("--require-key applies to field, record and cells datasets; "
                                     "a PME dataset opens only with the keys it names")  # fmt: skip

        return rotate_pme_rewrite(args, first, table)
    if first.mode == "cells":
        if args.output is None or args.reencrypt:
            raise ConfigurationError("a --parquet-mode cells dataset is rotated into an OUTPUT "
                                     "directory by rewrap (no --reencrypt yet)")  # fmt: skip
        from kmsbeam.pipelines.rotate.cells import rotate_cells

        return rotate_cells(args, first, table)
    plan, m, to_key = _plan(args, beam_args)
    jobs.pipeline_options(beam_args)
    recorded = recorded_target(read_rotation(args.input), to_key) if args.trust_manifest else None
    if recorded is not None:  # the same rotation again: no KMS call at all
        version, resolved = recorded, f"{ROTATION_NAME} of the input"
    else:  # a disabled or unknown key stops us here
        version = Rewrapper(kmsbeam.open_key_source(to_key, create=False)).check_target()
        resolved = "DescribeKey" if parse_key_uri(to_key).scheme != "pkcs11" else "the token"
    if args.dry_run:
        return dry_run(plan, m, to_key, version, args)
    out = plan.out_dir
    journal = rotate_fs.join(out, JOURNAL_NAME)
    unfinished = rotate_fs.is_dir(journal) and not rotate_fs.exists(rotate_fs.join(out, ROTATION_NAME))
    resuming = unfinished and not args.reencrypt  # re-encryption makes new keys: no journal
    rotate_fs.prepare_output(out, plan.dead_dir, args.overwrite or unfinished, plan.files,
                             ignore=(LOCK_NAME,))  # fmt: skip
    stale_paths = [rotate_fs.join(out, ROTATION_NAME), rotate_fs.join(out, _TMP)]
    for stale in stale_paths + ([] if resuming else [journal]):
        rotate_fs.delete_tree(stale)
    if resuming and not args.quiet:
        print(f"kmsbeam: resuming an unfinished rotation into {plan.out_dir} (data keys its "
              "journal lists are not rewrapped again)", file=sys.stderr)  # fmt: skip
    options, runner = jobs.pipeline_options(beam_args)
    started = time.monotonic()
    p = beam.Pipeline(runner=runner, options=options)
    _build(p, plan, m, to_key, version, args)
    try:
        result = p.run()
        result.wait_until_finish()
    except kmsbeam.KmsBeamError:
        raise
    except Exception as exc:
        if os.environ.get("KMSBEAM_DEBUG"):
            raise
        print(f"kmsbeam: error: the pipeline failed ({type(exc).__name__}); rerun with "
              "KMSBEAM_DEBUG=1 to see the traceback", file=sys.stderr)  # fmt: skip
        return 1
    elapsed = time.monotonic() - started
    counters = jobs.counters_of(result)
    c = lambda name, ns="kmsbeam": counters.get(f"{ns}/{name}", 0)  # noqa: E731
    tmp = rotate_fs.join(out, _TMP)
    before, after = inventory(tmp, "in"), inventory(tmp, "out")
    rotate_fs.delete_tree(tmp)
    if not rotate_fs.is_remote(plan.dead_dir) and os.path.isdir(plan.dead_dir) and not os.listdir(plan.dead_dir):
        os.rmdir(plan.dead_dir)
    moved = [{"commitment": k, "from": v, "to": after[k]} for k, v in sorted(before.items())
             if k in after and after[k] != v]  # fmt: skip
    sources: dict[str, int] = {}
    for v in before.values():
        sources[v] = sources.get(v, 0) + 1
    counts = {"records": c("records_read", "kmsbeam.pipelines"),
              "records_written": c("records_written", "kmsbeam.pipelines"),
              "values_rewrapped": c("values_rewrapped"), "values_skipped": c("values_skipped"),
              "values_filtered": c("values_filtered"), "values_resumed": c("values_resumed"),
              "values_reencrypted": c("values_encrypted"),
              "dead_letters": c("dead_letters_written", "kmsbeam.pipelines"),
              "kms_calls_rewrap": c("kms_calls_rewrap"), "kms_calls_decrypt": c("kms_calls_decrypt"),
              "kms_calls_generate_data_key": c("kms_calls_generate_data_key")}  # fmt: skip
    new_manifest = Manifest(**{**m.__dict__, "key": to_key, "kmsbeam_version": kmsbeam.__version__})
    rotate_fs.write_text(rotate_fs.join(out, MANIFEST_NAME), new_manifest.to_json())
    rotation = {"kmsbeam_rotation": 1, "method": "reencrypt" if args.reencrypt else "rewrap",
                "source_key": m.key, "target_key": to_key, "target_version": version,
                "source_versions": sources, "data_keys_moved": len(moved),
                "data_keys_new": len(set(after) - set(before)), "data_keys": moved,
                "target_version_from": resolved, "resumed": resuming,
                "required_keys": list(plan.require_keys),
                "counts": counts, "elapsed_seconds": round(elapsed, 3)}  # fmt: skip
    verified = None
    if args.verify or args.verify_sample is not None:
        verified = verify_output(out, m, beam_args, args.verify_sample,
                                 trusted=trusted_sources(args).with_uris(to_key))  # fmt: skip
        rotation["verify"] = verified
    calls = sum(v for k, v in counts.items() if k.startswith("kms_calls_"))
    rotation["kms_cost"] = kms_cost(calls, [m.key, to_key], args.kms_price_per_10k)
    rotation["finished_at"] = finished_at()
    rotate_fs.write_text(rotate_fs.join(out, ROTATION_NAME), json.dumps(rotation, indent=2) + "\n")
    rotate_fs.delete_tree(journal)  # the manifest now says what moved
    if not args.quiet:
        rows = [("records", f"{counts['records']:,}"),
                ("values rewrapped", f"{counts['values_rewrapped']:,}"),
                ("values already rotated", f"{counts['values_skipped']:,}"),
                ("values rewrapped from the journal", f"{counts['values_resumed']:,}"),
                ("values re-encrypted", f"{counts['values_reencrypted']:,}"),
                ("data keys moved", f"{len(moved):,}"),
                ("KMS calls: ReEncrypt", f"{counts['kms_calls_rewrap']:,}"),
                ("KMS calls: Decrypt", f"{counts['kms_calls_decrypt']:,}"),
                ("KMS calls: GenerateDataKey", f"{counts['kms_calls_generate_data_key']:,}"),
                kms_cost_row(counters, [m.key, to_key], args.kms_price_per_10k),
                ("dead letters", f"{counts['dead_letters']:,}"),
                ("elapsed", f"{elapsed:.1f} s")]  # fmt: skip
        if verified is not None:
            rows.append(("verified (decrypted)", f"{verified['records_decrypted']:,} of "
                         f"{verified['records_sampled']:,} records sampled, "
                         f"{verified['dead_letters']:,} failed"))  # fmt: skip
        print(table(f"kmsbeam rotate: {plan.spec.input} -> {plan.out_dir} (key {to_key}, "
                     f"version {version}, from {resolved})", rows))  # fmt: skip
    if verified is not None and verified["dead_letters"]:
        return 1
    from kmsbeam.pipelines.dead_letters import finish  # the budget: exit 0 or 3

    return finish(counts["records"], counts["records_written"], str(plan.dead_dir),
                  getattr(args, "max_dead_letters", None))  # fmt: skip
