"""Rotation of ``--mode fields`` and ``record`` datasets (JSONL, CSV, Parquet): a Beam job.

By default each value's wrapped data key is rewrapped (``RewrapDataKeys``): the bytes after
each value's header are copied unchanged and the key source is called once per distinct data
key (plus one unwrap to check it); values already under the target's current key version are
copied as they are. ``--reencrypt`` decrypts and encrypts again with new data keys. Each rewrap
is journaled in ``OUTPUT/_kmsbeam_rotation.journal/`` (``kmsbeam.rotation.journal``): a run
that died is resumed by the same command, which takes the data keys the journal lists from it
without a KMS call. The rewrap step also writes the data keys it saw before and after (by commitment K and
master key version, ``kmsbeam.rotation.inventory``: a few lines per bundle, no value read
twice) so the rotation manifest can list what moved; a re-encryption reads them from the
values of its input and output.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, cast

import apache_beam as beam

import kmsbeam
from kmsbeam import ConfigurationError, parse_key_uri
from kmsbeam.pipelines import _fns, formats, jobs, paths
from kmsbeam.pipelines.dead_letters import finish
from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest
from kmsbeam.pipelines.output_dir import DEAD_LETTER_DIR
from kmsbeam.pipelines.spec import JobSpec, Plan
from kmsbeam.pipelines.rotate.output import prepare_output
from kmsbeam.pipelines.rotate.report import dry_run_rows, inventory
from kmsbeam.pipelines.rotate.rotator import Outcome, Verified, required_keys, trusted_sources
from kmsbeam.pipelines.rotate.state import JOURNAL_NAME, ROTATION_NAME, read_rotation, recorded_target
from kmsbeam.pipelines.rotate.verify import verify_dataset
from kmsbeam.pipelines.vaults import require_vault, vault_for
from kmsbeam.pipelines.summary import kms_cost, kms_cost_row
from kmsbeam.rotation.inventory import batch_rows
from kmsbeam.rotation.paths import rewrap_path
from kmsbeam.rotation.rewrap import Rewrapper, record_paths
from kmsbeam.transforms import Encoding, ReencryptFields, ReencryptRecords, RewrapDataKeys, RewrapMode

__all__ = ["RecordsRotator"]

_KINDS = {"local": 1, "kms-emulator": 2, "alibaba-kms": 2, "pkcs11": 3, "alibaba-kms-instance": 4}
_TMP = "_rotation_keys"


def _plan(args: argparse.Namespace, manifest: Manifest, beam_args: list[str]) -> tuple[Plan, str]:
    src = args.input
    if manifest.mode not in ("fields", "record"):
        raise ConfigurationError(f"rotating --parquet-mode {manifest.mode} datasets is not "
                                 "supported yet; use --mode fields or record datasets")  # fmt: skip
    files = paths.list_files(src, "part-*")
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
    _check_vaults(args, manifest)
    spec = JobSpec("rotate", args.input, args.output, overwrite=args.overwrite, beam_args=beam_args)
    out = args.output
    plan = Plan(spec, files, paths.join(src, "part-*"), manifest, out,
                        paths.join(out, DEAD_LETTER_DIR))  # fmt: skip
    if manifest.format == "csv":
        plan.in_columns = formats.csv_header(files)
        plan.out_columns = list(plan.in_columns)
    elif manifest.format == "parquet":
        schema = manifest.schema()
        assert schema is not None
        plan.out_schema = (formats.encrypted_schema(schema, manifest.fields) if manifest.mode == "fields"
                           else formats.record_schema(schema, manifest.keep, manifest.payload_field))  # fmt: skip
    plan.require_keys = required_keys(args, to_key)
    return plan, to_key


def _check_vaults(args: argparse.Namespace, manifest: Manifest) -> None:
    """``--key-vault`` / ``--self-contained``: where OUTPUT's data keys go (``args.key_vault``
    becomes the checked, normalized prefix, or None for self-contained values)."""
    into, out_of = getattr(args, "key_vault", None), getattr(args, "self_contained", False)
    if into and out_of:
        raise ConfigurationError("--key-vault and --self-contained are opposites; give one")
    if (into or out_of) and (args.reencrypt or args.only_version):
        raise ConfigurationError("--key-vault and --self-contained move every value by its header: "
                                 "not with --reencrypt, --only-version or --only-key")  # fmt: skip
    if manifest.key_vault and args.reencrypt:
        raise ConfigurationError(
            f"{args.input} keeps its data keys in the key vault {manifest.key_vault}; to re-encrypt "
            "it under new data keys, move it out (--self-contained), rotate that with --reencrypt, "
            "then move the result into a vault (--key-vault): headers only, both ways"
        )
    if manifest.key_vault and not (into or out_of):
        raise ConfigurationError(
            f"{args.input} keeps its data keys in the key vault {manifest.key_vault}: rotate them "
            f"there with `kmsbeam vault rotate {manifest.key_vault} --to-key KEY` (no data file "
            "is rewritten), or pass --key-vault PREFIX or --self-contained to move the dataset"
        )
    if into:
        vault = vault_for(into)
        if (vault.uri.rstrip("/") + "/").startswith(paths.absolute(args.output).rstrip("/") + "/"):
            raise ConfigurationError(f"keep the key vault outside OUTPUT ({args.output}): "
                                     "rewriting the output would delete its keys")  # fmt: skip
        vault = require_writable(vault)
        if manifest.key_vault and vault == vault_for(manifest.key_vault):
            raise ConfigurationError(f"{args.input} is in {manifest.key_vault} already: rotate its "
                                     "keys with kmsbeam vault rotate")  # fmt: skip
        args.key_vault = vault.uri
    else:
        args.key_vault = None
    if manifest.key_vault:
        require_vault(vault_for(manifest.key_vault))


def require_writable(vault: Any) -> Any:
    vault.prepare()
    return vault


def _build(p: beam.Pipeline, plan: Plan, to_key: str, version: str, args: argparse.Namespace) -> None:
    m = plan.manifest
    record_at, fmt = record_paths(m.mode, m.fields, m.payload_field)
    records, parse_dead = formats.read_record_batches(p, m.format, plan.pattern, plan.in_columns)
    nested = [f for f in m.fields + m.bind if "." in f] if m.mode == "fields" else []
    if m.format == "parquet" and nested:
        records = records | "FillNullStructs" >> beam.Map(_fns.each, _fns.fill_null_parents, (nested,))
    tmp = paths.join(plan.out_dir, _TMP)
    lifetimes = {"key_cache_ttl": getattr(args, "key_cache_ttl", None),  # the revocation latency
                 "data_key_max_age": getattr(args, "data_key_max_age", None)}  # fmt: skip
    if args.reencrypt:
        step: Any = (ReencryptFields(m.key, to_key, m.fields, context=m.context, bind=m.bind,
                                     encoding=cast(Encoding, m.encoding), kms_qps=args.kms_qps,
                                     require_keys=plan.require_keys, **lifetimes)
                     if m.mode == "fields" else
                     ReencryptRecords(m.key, to_key, keep=m.keep, payload_field=m.payload_field,
                                      context=m.context, encoding=cast(Encoding, m.encoding),
                                      kms_qps=args.kms_qps, require_keys=plan.require_keys,
                                      **lifetimes))  # fmt: skip
    else:
        step = RewrapDataKeys(to_key, m.fields, mode=cast(RewrapMode, m.mode), context=m.context,
                              payload_field=m.payload_field, only_versions=args.only_version,
                              target_version=version,
                              journal=paths.join(plan.out_dir, JOURNAL_NAME),
                              kms_qps=args.kms_qps, require_keys=plan.require_keys,
                              key_cache_ttl=lifetimes["key_cache_ttl"],
                              key_inventory=f"{tmp}/keys", key_vault=args.key_vault,
                              from_key_vault=m.key_vault)  # fmt: skip
    good, dead = records | "Rotate" >> step.batched().with_dead_letters()  # lists from read to write
    if args.reencrypt:  # new data keys: named from the values of the input and the output
        for name, pcoll in (("in", records), ("out", good)):
            (pcoll | f"Keys_{name}" >> beam.FlatMap(_rows_of, record_at, fmt, name)
             | f"Distinct_{name}" >> beam.Distinct()
             | f"WriteKeys_{name}" >> beam.io.WriteToText(f"{tmp}/{name}", file_name_suffix=".jsonl"))  # fmt: skip
    if m.format == "parquet" and nested:
        good = good | "RestoreNullStructs" >> beam.Map(_fns.each, _fns.restore_null_parents)
        dead = dead | "RestoreNullStructsDead" >> beam.Map(_fns.restore_null_parents)
    encrypted = list(m.fields) if m.mode == "fields" else [m.payload_field]
    format_dead = formats.write_record_batches(good, m.format, paths.join(plan.out_dir, "part"),
                                        columns=plan.out_columns, schema=plan.out_schema,
                                        encrypted=encrypted)  # fmt: skip
    letters = [d for d in (parse_dead, dead, format_dead) if d is not None]
    formats.write_dead_letters(letters, paths.join(plan.dead_dir, "part"))


def _rows_of(records: list[Any], record_at: Any, fmt: int, side: str) -> list[str]:
    """The distinct key rows of a list of records (``batch_rows``)."""
    return batch_rows(records, record_at, fmt, side)


class RecordsRotator:
    """A fields or record dataset rotated into OUTPUT by a Beam job (``kmsbeam.pipelines.rotate.rotator``)."""

    def __init__(self, args: argparse.Namespace, manifest: Manifest, beam_args: list[str]) -> None:
        self.args, self.beam_args = args, beam_args
        self.plan, self.to_key = _plan(args, manifest, beam_args)
        jobs.pipeline_options(beam_args)
        recorded = recorded_target(read_rotation(args.input), self.to_key) if args.trust_manifest else None
        if recorded is not None:  # the same rotation again: no KMS call at all
            self.version, self.resolved = recorded, f"{ROTATION_NAME} of the input"
        else:  # a disabled or unknown key stops us here
            self.version = Rewrapper(kmsbeam.open_key_source(self.to_key, create=False)).check_target()
            self.resolved = {"pkcs11": "the token", "alibaba-kms-instance": "an AdvanceEncrypt probe"}.get(
                parse_key_uri(self.to_key).scheme, "DescribeKey")

    def files(self) -> list[str]:
        return self.plan.files

    def dry_run(self) -> Outcome:
        rows = dry_run_rows(self.plan, self.version, self.args)
        return Outcome(f"kmsbeam rotate --dry-run: {self.plan.spec.input} -> key {self.to_key} "
                       f"(version {self.version})", rows)  # fmt: skip

    def rotate(self) -> Outcome:
        args, plan, m, out = self.args, self.plan, self.plan.manifest, self.plan.out_dir
        journal = paths.join(out, JOURNAL_NAME)
        unfinished = paths.is_dir(journal) and not paths.exists(paths.join(out, ROTATION_NAME))
        resuming = unfinished and not args.reencrypt  # re-encryption makes new keys: no journal
        prepare_output(out, plan.dead_dir, args.overwrite or unfinished, plan.files)
        for stale in [paths.join(out, ROTATION_NAME), paths.join(out, _TMP)] + ([] if resuming else [journal]):
            paths.delete_tree(stale)
        if resuming and not args.quiet:
            print(f"kmsbeam: resuming an unfinished rotation into {out} (data keys its "
                  "journal lists are not rewrapped again)", file=sys.stderr)  # fmt: skip
        options, runner = jobs.pipeline_options(self.beam_args)
        started = time.monotonic()
        p = beam.Pipeline(runner=runner, options=options)
        _build(p, plan, self.to_key, self.version, args)
        try:
            result = p.run()
            result.wait_until_finish()
        except kmsbeam.KmsBeamError:
            raise
        except Exception as exc:
            if os.environ.get("KMSBEAM_DEBUG"):
                raise
            raise _PipelineFailed(type(exc).__name__) from None
        elapsed = time.monotonic() - started
        counters = jobs.counters_of(result)
        c = lambda name, ns="kmsbeam": counters.get(f"{ns}/{name}", 0)  # noqa: E731
        tmp = paths.join(out, _TMP)
        before, after = inventory(tmp)
        paths.delete_tree(tmp)
        paths.remove_empty_dir(plan.dead_dir)
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
        rotated = Manifest(**{**m.__dict__, "key": self.to_key, "kmsbeam_version": kmsbeam.__version__,
                              "key_vault": self._vault_out()})  # fmt: skip
        paths.write_text(paths.join(out, MANIFEST_NAME), rotated.to_json())
        path = rewrap_path(self.to_key)  # an instance-gateway rewrap is two calls (paths.py)
        calls = sum(v for k, v in counts.items() if k.startswith("kms_calls_"))
        calls += counts["kms_calls_rewrap"] * (path.per_key - 1)
        billed = {**counters, "kmsbeam/kms_calls_rewrap": counts["kms_calls_rewrap"] * path.per_key}
        rotation = {"kmsbeam_rotation": 1, "method": "reencrypt" if args.reencrypt else "rewrap",
                    "key_vault": {"from": m.key_vault, "to": self._vault_out()},
                    "source_key": m.key, "target_key": self.to_key, "target_version": self.version,
                    "source_versions": sources, "data_keys_moved": len(moved),
                    "data_keys_new": len(set(after) - set(before)), "data_keys": moved,
                    "rewrap_path": None if args.reencrypt else path.summary(),
                    "target_version_from": self.resolved, "resumed": resuming,
                    "required_keys": list(plan.require_keys), "counts": counts,
                    "elapsed_seconds": round(elapsed, 3),
                    "kms_cost": kms_cost(calls, [m.key, self.to_key], args.kms_price_per_10k)}  # fmt: skip
        rows = [("records", f"{counts['records']:,}"),
                ("values rewrapped", f"{counts['values_rewrapped']:,}"),
                ("values already rotated", f"{counts['values_skipped']:,}"),
                ("values rewrapped from the journal", f"{counts['values_resumed']:,}"),
                ("values re-encrypted", f"{counts['values_reencrypted']:,}"),
                ("data keys moved", f"{len(moved):,}"),
                *([] if args.reencrypt else [("rewrap path", path.summary())]),
                (f"KMS calls: {path.calls}", f"{counts['kms_calls_rewrap'] * path.per_key:,}"),
                ("KMS calls: Decrypt", f"{counts['kms_calls_decrypt']:,}"),
                ("KMS calls: GenerateDataKey", f"{counts['kms_calls_generate_data_key']:,}"),
                kms_cost_row(billed, [m.key, self.to_key], args.kms_price_per_10k),
                ("dead letters", f"{counts['dead_letters']:,}"),
                ("elapsed", f"{elapsed:.1f} s")]  # fmt: skip
        title = (f"kmsbeam rotate: {plan.spec.input} -> {out} (key {self.to_key}, "
                 f"version {self.version}, from {self.resolved})")  # fmt: skip
        budget = getattr(args, "max_dead_letters", None)  # the budget: exit 0 or 3
        return Outcome(title, rows, rotation, exit_code=lambda: finish(
            counts["records"], counts["records_written"], str(plan.dead_dir), budget))  # fmt: skip

    def _vault_out(self) -> str | None:
        """OUTPUT's key vault: ``--key-vault``, none with ``--self-contained``, else the input's."""
        if getattr(self.args, "self_contained", False):
            return None
        return getattr(self.args, "key_vault", None) or self.plan.manifest.key_vault

    def verify(self, fraction: float | None) -> Verified:
        """Decrypt OUTPUT (all of it, or ``fraction``): with a key vault, every entry a value
        names is read and unwrapped (what ``kmsbeam vault check`` proves)."""
        trusted = trusted_sources(self.args).with_uris(self.to_key)
        written = dataclasses.replace(self.plan.manifest, key_vault=self._vault_out())
        return verify_dataset(self.plan.out_dir, written, self.beam_args, fraction, trusted)

    def write_rotation(self, text: str) -> None:
        out = self.plan.out_dir
        paths.write_text(paths.join(out, ROTATION_NAME), text)
        paths.delete_tree(paths.join(out, JOURNAL_NAME))  # the manifest now says what moved


class _PipelineFailed(kmsbeam.KmsBeamError):
    """The Beam pipeline failed with an unexpected error (its message may quote a record)."""

    def __init__(self, kind: str) -> None:
        super().__init__(f"the pipeline failed ({kind}); rerun with KMSBEAM_DEBUG=1 to see the traceback")
