"""Building and running the encrypt and decrypt pipelines from a checked ``Plan``.

::

    read (JSONL | CSV | Parquet) -> Encrypt/Decrypt{Fields,Records}.batched().with_dead_letters()
        -> write part-SSSSS-of-NNNNN.<ext>            (+ OUTPUT/_kmsbeam.json on encrypt)
    parse, crypto and format dead letters -> OUTPUT/_dead_letters/part-*.jsonl

Records move from read to write in lists of up to ``_fns.BATCH_SIZE`` (one engine call and one
write per list: ``formats.read_record_batches``); dead letters one per element.

Runner: without ``--runner`` (or with ``DirectRunner``) the job runs on Beam's FnApiRunner,
which is what the DirectRunner falls back to, naming it directly so Beam never tries to
download Prism; ``direct_running_mode`` defaults to ``in_memory`` and ``direct_num_workers``
to 1. ``multi_threading`` is refused: it loses records after a shuffle.
"""

from __future__ import annotations

import re
from collections import Counter
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions,
    PipelineOptions,
    StandardOptions,
    WorkerOptions,
)
from kmsbeam.pipelines import _fns, formats, paths
from kmsbeam.pipelines.plan import Plan
from kmsbeam.pipelines.spec import data_key_policy
from kmsbeam.pipelines.runners import in_process
from kmsbeam.pipelines.cleanup import Interrupts, Staging, private_umask
from kmsbeam.pipelines.sealed import seal as seal_letters
from kmsbeam.pipelines.dead_letters import count_reasons, write_dead_letter_manifest
from kmsbeam.transforms import (
    DecryptFields,
    DecryptRecords,
    EncryptFields,
    EncryptRecords,
    Encoding,
)

from kmsbeam import ConfigurationError, KmsBeamError, call_counts
from kmsbeam import errors as _errors
from kmsbeam.failures import fresh_error

__all__ = ["JobResult", "build_pipeline", "calls_made", "counters_of", "job_failure", "pipeline_options",
           "run_plan"]  # fmt: skip

# The errors a DoFn raises for a key-source failure (kmsbeam.reasons.job_error): their message
# is one sentence built from the job's configuration, never from a record.
_JOB_ERRORS = ("KeySourceError", "KeySourceUnavailableError", "AccessDeniedError",
               "KeyNotFoundError", "KeyDisabledError", "ConfigurationError",
               "FormatError")  # fmt: skip  (FormatError: an input file unreadable mid-job)
_ERROR_LINE = re.compile(r"^kmsbeam\.errors\.(\w+): (.+)$", re.M)
_WHILE = re.compile(r"( \[while running '[^']*'\])+$")


@dataclass
class JobResult:
    """What a finished job did: Beam counters by ``namespace/name``, sizes and time."""

    plan: Plan
    counters: dict[str, int] = field(default_factory=dict)
    elapsed: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    reasons: Counter[str] = field(default_factory=Counter)  # dead letters by reason (exact)
    counted_from_output: bool = False  # the runner reported no metrics (kmsbeam.pipelines.runners)

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


def pipeline_options(args: list[str]) -> tuple[PipelineOptions, Any]:
    """Beam options from the arguments the CLI does not know, and the runner to use (the
    policy, refused runners and options passed through: ``kmsbeam.pipelines.runners``)."""
    from kmsbeam.pipelines import runners

    options = PipelineOptions(args)
    runners.check_runner(options)
    unknown = runners.unknown_options(args, options)
    if unknown:
        raise ConfigurationError(
            f"unknown option {unknown[0]}; see `kmsbeam encrypt --help` (Beam pipeline options "
            "such as --runner or --direct_num_workers are passed through)"
        )
    direct = options.view_as(DirectOptions)
    standard = options.view_as(StandardOptions)
    workers = options.view_as(WorkerOptions)
    if not any(a.split("=")[0] == "--default_sdk_harness_log_level" for a in args):
        workers.default_sdk_harness_log_level = "ERROR"  # keep worker processes quiet
    if runners.is_local(runners.runner_name(standard.runner)):
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
    policy = data_key_policy(spec)
    encrypting = spec.action == "encrypt"
    qps = spec.kms_qps  # travels in the DoFns; installed in each worker process in setup()
    if m.mode == "fields" and encrypting:
        return EncryptFields(m.key, m.fields, context=m.context, bind=m.bind,
                             encoding=cast(Encoding, m.encoding), policy=policy, kms_qps=qps,
                             data_key_max_age=spec.data_key_max_age, key_vault=m.key_vault)  # fmt: skip
    if m.mode == "fields":
        return DecryptFields(m.key, m.fields, context=m.context, bind=m.bind, kms_qps=qps,
                             require_keys=plan.require_keys,
                             key_cache_ttl=spec.key_cache_ttl, key_vault=m.key_vault)  # fmt: skip
    if encrypting:
        return EncryptRecords(m.key, keep=m.keep, payload_field=m.payload_field,
                              context=m.context, encoding=cast(Encoding, m.encoding), policy=policy,
                              kms_qps=qps, data_key_max_age=spec.data_key_max_age,
                              key_vault=m.key_vault)  # fmt: skip
    return DecryptRecords(m.key, keep=m.keep, payload_field=m.payload_field, context=m.context,
                          kms_qps=qps, require_keys=plan.require_keys,
                          key_cache_ttl=spec.key_cache_ttl, key_vault=m.key_vault)  # fmt: skip


def build_pipeline(p: beam.Pipeline, plan: Plan, tally: Any = None, given: list[Any] | None = None,
                   crypto: Any = None) -> None:  # fmt: skip
    """Add the job's transforms to ``p``.

    ``tally``: a DoFn counting the records read, for the progress line (not ``--parquet-mode``).
    ``given``: the records to run instead of reading the input (dead-letter replay). ``crypto``:
    a PTransform in place of the encrypt/decrypt transform, for benchmarks (one returning its
    input and an empty dead-letter output runs the same job with encryption turned off): lists
    of records in, ``(lists of records, dead letters)`` out, as
    ``EncryptFields(...).batched().with_dead_letters()`` does; not ``--parquet-mode``.
    """
    m = plan.manifest
    if m.mode in ("pme", "cells"):  # --parquet-mode: Arrow tables end to end
        from kmsbeam.pipelines._parquet import build_parquet_job

        return build_parquet_job(p, plan)
    if given is not None:  # kmsbeam dead-letters replay: the records in memory, never on disk
        lists = [given[i : i + _fns.BATCH_SIZE] for i in range(0, len(given), _fns.BATCH_SIZE)]
        records, parse_dead = (p | "Replay" >> beam.Create(lists)
                               | "CountRead" >> beam.ParDo(_fns.Count("records_read"))), None  # fmt: skip
    else:
        records, parse_dead = formats.read_record_batches(p, plan.format, plan.pattern, plan.in_columns)
    if tally is not None:
        records = records | "Progress" >> beam.ParDo(tally)
    nested = [f for f in m.fields + m.bind if "." in f] if m.mode == "fields" else []
    if plan.format == "parquet" and nested:  # a null struct has null fields, not missing ones
        records = records | "FillNullStructs" >> beam.Map(_fns.each, _fns.fill_null_parents, (nested,))
    step = crypto if crypto is not None else _transform(plan).batched().with_dead_letters()
    good, crypto_dead = records | type(_transform(plan)).__name__ >> step
    if plan.format == "parquet" and nested:
        good = good | "RestoreNullStructs" >> beam.Map(_fns.each, _fns.restore_null_parents)
        crypto_dead = crypto_dead | "RestoreNullStructsDead" >> beam.Map(_fns.restore_null_parents)
    out_prefix = paths.join(plan.out_dir, "part")
    encrypted = list(m.fields) if m.mode == "fields" else [m.payload_field]
    shown = None  # decrypting to Parquet: a value of another type than its column is a dead letter
    if plan.format == "parquet" and plan.spec.action == "decrypt":
        shown = formats.shown_in_dead_letters(m, plan.out_schema)
    format_dead = formats.write_record_batches(good, plan.format, out_prefix, columns=plan.out_columns,
                                               schema=plan.out_schema, encrypted=encrypted,
                                               fit_shown=shown)  # fmt: skip
    if plan.spec.action == "encrypt":  # every dead letter holds cleartext: sealed (``sealed``)
        parse_dead, crypto_dead, format_dead = None, None, seal_letters(
            [d for d in (parse_dead, crypto_dead, format_dead) if d is not None], m.key, m.context,
            across_bundles=bool(plan.spec.across_bundles))  # fmt: skip
    elif format_dead is not None and plan.format == "csv":  # a decrypted record that did not fit
        format_dead = seal_letters(format_dead, m.key, m.context)  # the header: sealed (the rest:
        # ciphertext as read, a line's size, or a Parquet record's cleartext fields only)
    letters = [d for d in (parse_dead, crypto_dead, format_dead) if d is not None]
    formats.write_dead_letters(letters, paths.join(plan.dead_dir, "part"))


def counters_of(result: Any) -> dict[str, int]:
    """Beam counters by ``namespace/name`` (empty when the runner reports no metrics)."""
    from kmsbeam.pipelines.runners import counters_or_none

    return counters_or_none(result) or {}


def _counters(result: Any, plan: Plan) -> tuple[dict[str, int], bool]:
    """The job's counters, and whether they were counted in the written output instead (a
    runner that reports no metrics)."""
    from kmsbeam.pipelines.runners import counters_or_none, output_counts

    counters = counters_or_none(result)
    if counters is not None:
        return counters, False
    try:
        return output_counts(str(plan.out_dir), str(plan.dead_dir), plan.format), True
    except Exception:  # noqa: BLE001 - e.g. PME shards with an encrypted footer: no counts
        return {}, True


def calls_made(before: Mapping[str, int]) -> dict[str, int]:
    """The data keys and KMS calls of this process since ``before`` (a ``call_counts()``), as
    ``kmsbeam/<counter>`` entries."""
    now = call_counts()
    return {f"kmsbeam/{name}": now[name] - before.get(name, 0) for name in now}


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


def _size(files: list[str]) -> int:
    return sum(paths.size(f) for f in files)


def run_plan(plan: Plan, on_start: Callable[[], None] | None = None, tally: Any = None,
             existed: tuple[bool, bool] = (True, True), given: list[Any] | None = None,
             crypto: Any = None) -> JobResult:  # fmt: skip
    """Build and run the pipeline into staging folders (``cleanup``), write the manifest after a
    successful encrypt, then move the output into place. A failed or interrupted job removes
    everything it wrote (``existed``: whether OUTPUT and the dead-letter directory were there
    before the job, so they are removed again when the job created them; ``tally``, ``given``,
    ``crypto``: as for ``build_pipeline``)."""
    options, runner = pipeline_options(plan.spec.beam_args)
    staging = Staging.begin(plan, existed)
    interrupts = Interrupts().__enter__()
    umask = private_umask()  # what the job writes locally: 0600, directories 0700
    umask.__enter__()
    try:
        started = time.monotonic()
        p = beam.Pipeline(runner=runner, options=options)
        build_pipeline(p, plan, tally, given, crypto)
        if on_start:
            on_start()
        failed: KmsBeamError | None = None
        calls_before = call_counts()
        bytes_in = _size(plan.files)  # before the job: a file gone afterwards does not fail it
        try:
            result = p.run()
            result.wait_until_finish()
        except Exception as exc:
            failed = job_failure(exc)
            if failed is None:
                raise
        if failed is not None:  # one sentence, raised outside the handler: no traceback text
            raise failed
        elapsed = time.monotonic() - started
        if plan.spec.action == "encrypt":
            plan.manifest.write(plan.out_dir)
        counters, counted = _counters(result, plan)
        if in_process(options):  # kmsbeam's own counts: right where Beam's metrics are not
            counters |= {k: v for k, v in calls_made(calls_before).items() if v or k in counters}
        reasons = count_reasons(str(plan.dead_dir))
        if reasons:
            write_dead_letter_manifest(plan)
        out_bytes = _size(paths.match(paths.join(plan.out_dir, "part-*")))
    except BaseException as exc:  # failed, or interrupted (KeyboardInterrupt): nothing stays behind
        interrupts.__exit__()
        umask.__exit__(None, None, None)
        staging.discard()
        if interrupts.happened and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from None  # Beam wrapped it: the CLI exits 130
        raise
    interrupts.__exit__()
    umask.__exit__(None, None, None)
    staging.commit()  # sets local outputs and dead letters 0600 (directories 0700) too
    return JobResult(plan, counters, elapsed, bytes_in, out_bytes, reasons,
                     counted_from_output=counted)  # fmt: skip
