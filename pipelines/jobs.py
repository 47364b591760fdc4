"""Building and running the encrypt and decrypt pipelines from a checked ``Plan``.

::

    read (JSONL | CSV | Parquet) -> Encrypt/Decrypt{Fields,Records}.with_dead_letters()
        -> write part-SSSSS-of-NNNNN.<ext>            (+ OUTPUT/_kmsbeam.json on encrypt)
    parse, crypto and format dead letters -> OUTPUT/_dead_letters/part-*.jsonl

Runner: without ``--runner`` (or with ``DirectRunner``) the job runs on Beam's FnApiRunner,
which is what the DirectRunner falls back to, naming it directly so Beam never tries to
download Prism; ``direct_running_mode`` defaults to ``in_memory`` and ``direct_num_workers``
to 1. ``multi_threading`` is refused: it loses records after a shuffle.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from kmsbeam.pipelines import _fns, formats, paths
from kmsbeam.pipelines.plan import Plan
from kmsbeam.transforms import (
    DecryptFields,
    DecryptRecords,
    EncryptFields,
    EncryptRecords,
)

from kmsbeam import ConfigurationError, DataKeyPolicy, KmsBeamError
from kmsbeam import errors as _errors
from kmsbeam.failures import fresh_error

__all__ = ["JobResult", "build_pipeline", "counters_of", "job_failure", "pipeline_options", "run_plan"]

# The errors a DoFn raises for a key-source failure (kmsbeam.reasons.job_error): their message
# is one sentence built from the job's configuration, never from a record.
_JOB_ERRORS = ("KeySourceError", "KeySourceUnavailableError", "AccessDeniedError",
               "KeyNotFoundError", "KeyDisabledError", "ConfigurationError",
               "FormatError")  # fmt: skip  (FormatError: an input file unreadable mid-job)
_ERROR_LINE = re.compile(r"^kmsbeam\.errors\.(\w+): (.+)$", re.M)
_WHILE = re.compile(r"( \[while running '[^']*'\])+$")

_DIRECT = (None, "DirectRunner", "FnApiRunner", "SwitchingDirectRunner")


@dataclass
class JobResult:
    """What a finished job did: Beam counters by ``namespace/name``, sizes and time."""

    plan: Plan
    counters: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0

    def count(self, name: str, namespace: str = "kmsbeam") -> int:
        return self.counters.get(f"{namespace}/{name}", 0)

    @property
    def records_in(self) -> int:
        return self.count("records_read", "kmsbeam.pipelines")

    @property
    def records_out(self) -> int:
        return self.count("records_written", "kmsbeam.pipelines")

    @property
    def dead_letters(self) -> int:
        return self.count("dead_letters_written", "kmsbeam.pipelines")


def _unknown_args(args: list[str]) -> list[str]:
    """The arguments no Beam PipelineOptions class knows (Beam itself only logs them)."""
    try:
        from apache_beam.options.pipeline_options import _BeamArgumentParser
    except ImportError:  # a future Beam: skip the check rather than fail
        return []
    parser = _BeamArgumentParser(allow_abbrev=False)
    classes = {str(c): c for c in PipelineOptions.__subclasses__()}
    for cls in classes.values():
        cls._add_argparse_args(parser)
    return [a for a in parser.parse_known_args(args)[1] if a.startswith("-")]


def pipeline_options(args: list[str]) -> tuple[PipelineOptions, Any]:
    """Beam options from the arguments the CLI does not know, and the runner to use."""
    unknown = _unknown_args(args)
    if unknown:
        raise ConfigurationError(
            f"unknown option {unknown[0]}; see `kmsbeam encrypt --help` (Beam pipeline options "
            "such as --runner or --direct_num_workers are passed through)"
        )
    options = PipelineOptions(args)
    direct = options.view_as(DirectOptions)
    if direct.direct_running_mode == "multi_threading":
        raise ConfigurationError(
            "direct_running_mode=multi_threading loses records in Beam's FnApiRunner; use "
            "in_memory (the default) or multi_processing"
        )
    standard = options.view_as(StandardOptions)
    workers = options.view_as(WorkerOptions)
    if not any(a.split("=")[0] == "--default_sdk_harness_log_level" for a in args):
        workers.default_sdk_harness_log_level = "ERROR"  # keep worker processes quiet
    if standard.runner in _DIRECT:
        direct.direct_running_mode = direct.direct_running_mode or "in_memory"
        direct.direct_num_workers = direct.direct_num_workers or 1
        return options, _fn_api_runner(options)
    return options, None


def _fn_api_runner(options: PipelineOptions) -> Any:
    """The FnApiRunner as the DirectRunner builds it (workers get the pipeline options)."""
    from apache_beam.portability.api import beam_provision_api_pb2
    from apache_beam.runners.portability.fn_api_runner import fn_runner
    from apache_beam.runners.portability.portable_runner import JobServiceHandle

    encoded = JobServiceHandle.encode_pipeline_options(options.get_all_options())
    info = fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=encoded))
    return fn_runner.FnApiRunner(provision_info=info)


def _transform(plan: Plan) -> Any:
    m, spec = plan.manifest, plan.spec
    policy = None
    if spec.max_records_per_key is not None:
        policy = DataKeyPolicy(max_records=spec.max_records_per_key)
    encrypting = spec.action == "encrypt"
    qps = spec.kms_qps  # travels in the DoFns; installed in each worker process in setup()
    if m.mode == "fields" and encrypting:
        return EncryptFields(m.fields, m.key, context=m.context, bind=m.bind,
                             encoding=m.encoding, policy=policy, kms_qps=qps,
                             data_key_max_age=spec.data_key_max_age)  # fmt: skip
    if m.mode == "fields":
        return DecryptFields(m.fields, m.key, context=m.context, bind=m.bind, kms_qps=qps,
                             require_keys=plan.require_keys,
                             key_cache_ttl=spec.key_cache_ttl)  # fmt: skip
    if encrypting:
        return EncryptRecords(m.key, keep=m.keep, payload_field=m.payload_field,
                              context=m.context, encoding=m.encoding, policy=policy,
                              kms_qps=qps, data_key_max_age=spec.data_key_max_age)  # fmt: skip
    return DecryptRecords(m.key, keep=m.keep, payload_field=m.payload_field, context=m.context,
                          kms_qps=qps, require_keys=plan.require_keys,
                          key_cache_ttl=spec.key_cache_ttl)  # fmt: skip


def build_pipeline(p: beam.Pipeline, plan: Plan) -> None:
    """Add the job's transforms to ``p``."""
    m = plan.manifest
    if m.mode in ("pme", "cells"):  # --parquet-mode: Arrow tables end to end
        from kmsbeam.pipelines._parquet import build_parquet_job

        return build_parquet_job(p, plan)
    records, parse_dead = formats.read_records(p, plan.format, plan.pattern, plan.in_columns)
    nested = [f for f in m.fields + m.bind if "." in f] if m.mode == "fields" else []
    if plan.format == "parquet" and nested:  # a null struct has null fields, not missing ones
        records = records | "FillNullStructs" >> beam.Map(_fns.fill_null_parents, nested)
    name = type(_transform(plan)).__name__
    good, crypto_dead = records | name >> _transform(plan).with_dead_letters()
    if plan.format == "parquet" and nested:
        good = good | "RestoreNullStructs" >> beam.Map(_fns.restore_null_parents)
        crypto_dead = crypto_dead | "RestoreNullStructsDead" >> beam.Map(_fns.restore_null_parents)
    out_prefix = paths.join(plan.out_dir, "part")
    encrypted = list(m.fields) if m.mode == "fields" else [m.payload_field]
    shown = None  # decrypting to Parquet: a value of another type than its column is a dead letter
    if plan.format == "parquet" and plan.spec.action == "decrypt":
        shown = formats.shown_in_dead_letters(m, plan.out_schema)
    format_dead = formats.write_records(good, plan.format, out_prefix, columns=plan.out_columns,
                                        schema=plan.out_schema, encrypted=encrypted,
                                        fit_shown=shown)  # fmt: skip
    letters = [d for d in (parse_dead, crypto_dead, format_dead) if d is not None]
    formats.write_dead_letters(letters, paths.join(plan.dead_dir, "part"))


def counters_of(result: Any) -> dict[str, int]:
    totals: dict[str, int] = {}
    for c in result.metrics().query(MetricsFilter())["counters"]:
        value = c.committed if c.committed is not None else c.attempted  # some report attempted only
        key = f"{c.key.metric.namespace}/{c.key.metric.name}"
        totals[key] = totals.get(key, 0) + int(value or 0)
    return totals


def job_failure(exc: BaseException) -> KmsBeamError | None:
    """The one-sentence key-source error that failed a pipeline, or ``None`` when ``exc`` is
    something else.

    In-process runners re-raise the DoFn's error itself (with Beam's ``[while running ...]``
    suffix, dropped here); worker processes send its traceback as text inside a RuntimeError,
    whose last ``kmsbeam.errors.<Class>: <sentence>`` line names it. A job that failed while
    running exits 1, so the classes the CLI reads as usage mistakes (exit 2: configuration,
    key not found or disabled) come back as a plain ``KeySourceError`` with the same sentence.
    """
    if isinstance(exc, KmsBeamError):
        if type(exc).__name__ not in _JOB_ERRORS:
            return None
        cls: type[KmsBeamError] = type(exc)
        message, code = str(exc), exc.code
    else:
        found = [m for m in _ERROR_LINE.finditer(str(exc)) if m.group(1) in _JOB_ERRORS]
        if not found:
            return None
        cls, message, code = getattr(_errors, found[-1].group(1)), found[-1].group(2).strip(), None
    if issubclass(cls, _errors.FormatError):  # the job failed (exit 1), not a usage mistake
        cls = KmsBeamError
    elif issubclass(cls, (ConfigurationError, _errors.KeyNotFoundError)):
        cls = _errors.KeySourceError
    return fresh_error(cls, _WHILE.sub("", message), code)


def _discard_temporaries(plan: Plan) -> None:
    """After a failed job: Beam's temporary shard directories (partial output, possibly
    cleartext on decrypt) go, and so does a dead-letter directory left empty."""
    for directory in dict.fromkeys((plan.dead_dir, plan.out_dir)):
        paths.remove_temporaries(directory)
    paths.remove_empty_dir(plan.dead_dir)


def _size(files: list[str]) -> int:
    return sum(paths.size(f) for f in files)


def run_plan(plan: Plan, on_start: Callable[[], None] | None = None) -> JobResult:
    """Build and run the pipeline; write the manifest after a successful encrypt."""
    options, runner = pipeline_options(plan.spec.beam_args)
    started = time.monotonic()
    p = beam.Pipeline(runner=runner, options=options)
    build_pipeline(p, plan)
    if on_start:
        on_start()
    failed: KmsBeamError | None = None
    try:
        result = p.run()
        result.wait_until_finish()
    except Exception as exc:
        failed = job_failure(exc)
        if failed is None:
            raise
    if failed is not None:  # one sentence, raised outside the handler: no traceback text
        _discard_temporaries(plan)
        raise failed
    elapsed = time.monotonic() - started
    if plan.spec.action == "encrypt":
        plan.manifest.write(plan.out_dir)
    paths.remove_empty_dir(plan.dead_dir)  # Beam leaves the directory behind when there were none
    return JobResult(plan, counters_of(result), elapsed, _size(plan.files),
                     _size(paths.match(paths.join(plan.out_dir, "part-*"))))  # fmt: skip
