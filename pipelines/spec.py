"""What a job is, before and after its checks: the user's ``JobSpec`` (and ``ParquetSpec``), the
checked ``Plan``, and what every planner shares (paths, modes, the job's keys). The planners
are ``kmsbeam.pipelines.plan`` (fields and record datasets) and ``parquet_plan``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

import kmsbeam
from kmsbeam import ConfigurationError, DataKeyPolicy, parse_key_uri, parse_paths
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.keys.strict import KeyRequirement, qualify_key
from kmsbeam.keys.trust import TrustedKeySources
from kmsbeam.pipelines import paths, preflight
from kmsbeam.pipelines.manifest import Manifest
from kmsbeam.pipelines.output_dir import DEAD_LETTER_DIR

__all__ = [
    "JobSpec", "ParquetSpec", "Plan", "check_mode", "check_remote_key", "created_notice", "dead_dir_for",
    "data_key_policy", "field_names",
    "normalize_spec", "open_for_encrypt", "parquet_spec", "required_keys", "trusted_sources",
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
    key_vault: str | None = None  # --key-vault: wrapped data keys kept in this vault (values v2)
    files: list[str] | None = None  # the input files themselves (a watch's window); ``input`` is shown
    across_bundles: bool | None = None  # DataKeyPolicy.across_bundles; None: the transforms decide


@dataclass
class Plan:
    """A checked job: where to read and write, and the dataset's manifest."""

    spec: JobSpec
    files: list[str]
    pattern: str | list[str]  # a glob, or the files themselves (``JobSpec.files``)
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


def data_key_policy(spec: JobSpec) -> DataKeyPolicy | None:
    """The ``DataKeyPolicy`` of an encrypt job's options (None: the transforms' default)."""
    if spec.max_records_per_key is None and spec.across_bundles is None:
        return None
    return DataKeyPolicy(max_records=spec.max_records_per_key or DataKeyPolicy.max_records,
                         across_bundles=spec.across_bundles)  # fmt: skip


def check_mode(spec: JobSpec, mode: str) -> None:
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
    if spec.key_vault:
        spec.key_vault = paths.normalize(spec.key_vault, "--key-vault").rstrip("/") or "/"


def field_names(names: list[str] | None) -> list[str]:
    return [p.name for p in parse_paths(names or [])]


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
    if not spec.require_keys:
        return ()
    requirement = KeyRequirement([qualify_key(item, key) for item in spec.require_keys])
    requirement.versions()
    return requirement.keys


def open_for_encrypt(key: str) -> kmsbeam.KeySource:
    """Open the key, creating a ``local:`` alias on first use.

    ``open_key_source`` caches sources per process, so its ``created`` flag would stay true on
    later runs in the same process; a fresh ``LocalKeySource`` tells whether *this* call
    created the key. The transforms then reuse the cached source as usual.
    """
    if parse_key_uri(key).scheme == "local":
        return LocalKeySource(key, home=kmsbeam.keystore_home(), create=True)
    source = kmsbeam.open_key_source(key, create=True)
    check_remote_key(key, source)
    return source


def created_notice(key: str) -> str:
    """The one line telling the user this run created a ``local:`` key, and where it lives."""
    return (f"kmsbeam: created key {parse_key_uri(key).key} in the local keystore "
            f"{kmsbeam.keystore_home()} (back it up: data encrypted with it cannot be decrypted "
            "without it)")  # fmt: skip


def check_remote_key(key: str, source: kmsbeam.KeySource) -> None:
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
