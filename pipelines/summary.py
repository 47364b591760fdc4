"""What the CLI prints about a job: the progress line while it runs and the summary table.

The FnApiRunner reports metrics only at the end, so the progress line shows elapsed time.
Nothing printed here carries a value, a key or a context value: counts, sizes and paths only.

KMS calls are listed by operation (every ``kms_calls_*`` counter: calls made, failed ones
included, the same way for every operation), followed by an estimated cost: Alibaba Cloud KMS bills cryptographic API calls per 10,000 requests. The price is
``KMS_PRICE_PER_10K`` (USD, taken on ``KMS_PRICE_DATE`` from Alibaba Cloud's "Billing of KMS"
page: basic keys, regions outside the Chinese mainland; USD 0.08 inside it), overridden by
``--kms-price-per-10k`` or ``$KMSBEAM_KMS_PRICE_PER_10K``. It is an estimate: retries,
``DescribeKey`` checks, free quotas, KMS instances billed by QPS and price changes are not in
it. ``local:`` and ``pkcs11:`` keys make no billed calls and show no cost.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from kmsbeam.pipelines.dead_letters import Budget, outcome, reason_rows
from kmsbeam.pipelines.jobs import JobResult

from kmsbeam import ConfigurationError

__all__ = ["KMS_PRICE_CURRENCY", "KMS_PRICE_DATE", "KMS_PRICE_ENV", "KMS_PRICE_PER_10K", "Progress",
           "dead_letter_warning", "finish", "job_key_uris", "kms_budget_rows", "kms_call_rows", "kms_cost", "kms_cost_row",
           "kms_price_per_10k", "summary_table", "table"]  # fmt: skip

KMS_PRICE_PER_10K = 0.03  # USD per 10,000 API calls (see the module docstring)
KMS_PRICE_CURRENCY = "USD"
KMS_PRICE_DATE = "2026-11-23"
KMS_PRICE_ENV = "KMSBEAM_KMS_PRICE_PER_10K"
BILLED_SCHEMES = ("alibaba-kms", "kms-emulator")  # the emulator: what Alibaba would charge
QPS_BILLED_SCHEMES = ("alibaba-kms-instance",)  # a KMS instance is billed by its QPS spec, not per call

# counter -> KMS API operation (other kms_calls_* counters are listed by their own name)
KMS_OPERATIONS = {
    "kms_calls_generate_data_key": "GenerateDataKey",
    "kms_calls_decrypt": "Decrypt",
    "kms_calls_rewrap": "ReEncrypt",
}
INSTANCE_OPERATIONS = {  # the KMS 3.0 instance API's names (alibaba-kms-instance://)
    "kms_calls_generate_data_key": "AdvanceGenerateDataKey",
    "kms_calls_decrypt": "AdvanceDecrypt",
}
_ALWAYS = ("kms_calls_generate_data_key", "kms_calls_decrypt")


class Progress:
    """A background thread writing ``kmsbeam: encrypting ... 12 s`` on a TTY stderr."""

    def __init__(self, what: str, stream: TextIO | None = None, interval: float = 1.0) -> None:
        self._what = what
        self._stream = stream or sys.stderr
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._started = time.monotonic()

    @property
    def enabled(self) -> bool:
        isatty = getattr(self._stream, "isatty", None)
        return bool(isatty and isatty())

    def start(self) -> None:
        self._started = time.monotonic()
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="kmsbeam-progress", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            seconds = time.monotonic() - self._started
            self._stream.write(f"\rkmsbeam: {self._what} ... {seconds:.0f} s")
            self._stream.flush()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._stream.write("\r\033[K")
            self._stream.flush()


def _n(value: int) -> str:
    return f"{value:,}"


def _bytes(value: int) -> str:
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{value:,} B" if unit == "B" else f"{size:,.1f} {unit}"
        size /= 1024
    return f"{value:,} B"


def kms_price_per_10k(given: float | None = None, environ: Mapping[str, str] | None = None) -> float:
    """The price per 10,000 KMS calls: ``given`` (the CLI flag), else ``$KMSBEAM_KMS_PRICE_PER_10K``,
    else ``KMS_PRICE_PER_10K``.

    Raises:
        ConfigurationError: a price that is not a finite number of at least 0.
    """
    where, value = "--kms-price-per-10k", given
    if value is None:
        text = (os.environ if environ is None else environ).get(KMS_PRICE_ENV, "").strip()
        if not text:
            return KMS_PRICE_PER_10K
        where = KMS_PRICE_ENV
        try:
            value = float(text)
        except ValueError:
            value = math.nan
    if isinstance(value, bool) or not math.isfinite(value) or value < 0:
        raise ConfigurationError(f"{where} is a price per 10,000 KMS calls, a number of at least 0")
    return float(value)


def kms_call_rows(counters: Mapping[str, int], namespace: str = "kmsbeam",
                  key_uris: Iterable[str] = ()) -> list[tuple[str, str]]:  # fmt: skip
    """``("KMS calls: Operation", "N")`` rows from counters keyed ``namespace/name`` (GenerateDataKey
    and Decrypt always, the other ``kms_calls_*`` counters when present). When every key of
    ``key_uris`` is a KMS 3.0 instance key, the operations are named as its API names them
    (AdvanceGenerateDataKey, AdvanceDecrypt)."""
    uris = list(key_uris)
    operations = KMS_OPERATIONS
    if uris and all(u.split(":", 1)[0] in QPS_BILLED_SCHEMES for u in uris):
        operations = {**KMS_OPERATIONS, **INSTANCE_OPERATIONS}
    prefix = f"{namespace}/kms_calls_"
    names = list(_ALWAYS) + sorted(k[len(namespace) + 1 :] for k in counters
                                   if k.startswith(prefix) and k[len(namespace) + 1 :] not in _ALWAYS)  # fmt: skip
    return [(f"KMS calls: {operations.get(n, n[len('kms_calls_'):])}",
             _n(counters.get(f"{namespace}/{n}", 0))) for n in names]  # fmt: skip


def _calls(counters: Mapping[str, int], namespace: str = "kmsbeam") -> int:
    prefix = f"{namespace}/kms_calls_"
    return sum(int(v) for k, v in counters.items() if k.startswith(prefix))


def _billed(key_uris: Iterable[str]) -> bool:
    return any(u.split(":", 1)[0] in BILLED_SCHEMES for u in key_uris)


def kms_cost(calls: int, key_uris: Iterable[str], price_per_10k: float | None = None) -> dict[str, Any]:
    """The estimated KMS cost of ``calls`` calls under ``key_uris``, for machine-readable output:
    ``{"kms_calls", "billed", "price_per_10k", "currency", "price_date", "estimated_cost"}``
    (``billed`` false and the cost 0 when no key is an Alibaba KMS or emulator key)."""
    price = kms_price_per_10k(price_per_10k)
    billed = _billed(key_uris)
    return {"kms_calls": calls, "billed": billed, "price_per_10k": price,
            "currency": KMS_PRICE_CURRENCY, "price_date": KMS_PRICE_DATE,
            "estimated_cost": calls * price / 10_000 if billed else 0.0}  # fmt: skip


def _money(amount: float) -> str:
    if amount and amount < 0.01:
        return f"{KMS_PRICE_CURRENCY} {amount:.6f}"
    return f"{KMS_PRICE_CURRENCY} {amount:,.2f}"


def kms_cost_row(counters: Mapping[str, int], key_uris: Iterable[str],
                 price_per_10k: float | None = None) -> tuple[str, str]:  # fmt: skip
    """The ``KMS cost (estimate)`` row: every ``kms_calls_*`` counter times the price."""
    uris = list(key_uris)
    cost = kms_cost(_calls(counters), uris, price_per_10k)
    if not cost["billed"] and uris and all(u.split(":", 1)[0] in QPS_BILLED_SCHEMES for u in uris):
        return ("KMS cost (estimate)", "none per call (a KMS instance is billed by its QPS spec, not per call)")
    if not cost["billed"]:
        schemes = ", ".join(sorted({u.split(":", 1)[0] + ":" for u in uris}))
        return ("KMS cost (estimate)", f"none ({schemes} keys make no billed KMS calls)")
    return ("KMS cost (estimate)",
            f"{_money(cost['estimated_cost'])}  ({cost['kms_calls']:,} "
            f"call{'' if cost['kms_calls'] == 1 else 's'} x "
            f"{_money(cost['price_per_10k'])} per 10,000, price of {KMS_PRICE_DATE}; estimate)")  # fmt: skip


def kms_budget_rows(counters: Mapping[str, int], kms_qps: float | None,
                    namespace: str = "kmsbeam") -> list[tuple[str, str]]:  # fmt: skip
    """The ``KMS budget waits`` row when a budget was set or calls waited (else none)."""
    waits = counters.get(f"{namespace}/kms_budget_waits", 0)
    if kms_qps is None and not waits:
        return []
    ms = counters.get(f"{namespace}/kms_budget_wait_ms", 0)
    limit = f"--kms-qps {kms_qps:g} per worker" if kms_qps is not None else "a KMS call budget"
    return [("KMS budget waits", f"{waits:,} calls waited {ms:,} ms in all ({limit})")]


def job_key_uris(plan: Any) -> list[str]:
    """Every key URI a job's manifest names (the key, and the footer and column keys)."""
    m = plan.manifest
    uris = [m.key, getattr(m, "footer_key", None) or m.key, *(getattr(m, "column_keys", None) or {}).values()]
    return list(dict.fromkeys(u for u in uris if u))


def master_key_rows(counters: Mapping[str, int], key: str,
                    required: Iterable[str] = ()) -> list[tuple[str, str]]:  # fmt: skip
    """``required keys`` (strict mode) and ``master keys used``: each master key version that
    unwrapped a data key (``kmsbeam.key_versions`` metrics, exact over workers), named by the
    required key, or the job's key, it belongs to -- or "another master key" when it is
    neither (a ``local:`` or KMS source unwraps any key it holds)."""
    from kmsbeam.keys.strict import KeyRequirement
    from kmsbeam.transforms.key_versions import versions_used

    from kmsbeam import KmsBeamError

    used = versions_used(counters)
    keys = list(required)
    rows = [("required keys", ", ".join(keys))] if keys else []
    if not used:
        return rows
    try:
        owners = KeyRequirement(keys or [key]).versions()
    except KmsBeamError:  # e.g. no permission to list the key's versions
        owners = {}
    named = []
    for version in used:
        owner = next((u for u, vs in owners.items() if version in vs), None)
        unknown = "another master key" if owners else "a master key"
        named.append(f"{owner or unknown} (version {version})")
    return rows + [("master keys used", "; ".join(named))]


def summary_table(result: JobResult) -> str:
    """The end-of-job table (plain text, one row per line)."""
    plan = result.plan
    m = plan.manifest
    verb = "encrypted" if plan.spec.action == "encrypt" else "decrypted"
    rate = result.records_in / result.elapsed if result.elapsed > 0 else 0.0
    rows = [
        ("records in", _n(result.records_in)),
        ("records out", _n(result.records_out)),
        (f"values {verb}", _n(result.count(f"values_{verb}"))),
        ("data keys generated", _n(result.count("data_keys_generated"))),
        *kms_call_rows(result.counters, key_uris=job_key_uris(plan)),
        kms_cost_row(result.counters, job_key_uris(plan), plan.spec.kms_price_per_10k),
        *kms_budget_rows(result.counters, plan.spec.kms_qps),
        *master_key_rows(result.counters, m.key, getattr(plan, "require_keys", ())),
        ("dead letters", _n(_dead(result))
         + (f"  ({plan.dead_dir})" if _dead(result) else "")),
        *reason_rows(result.reasons),
        ("bytes in", _bytes(result.bytes_in)),
        ("bytes out", _bytes(result.bytes_out)),
        ("elapsed", f"{result.elapsed:.1f} s"),
        ("rate", f"{rate:,.0f} records/s"),
    ]  # fmt: skip
    if result.counted_from_output:  # kmsbeam.pipelines.runners
        rows = _without_metrics(rows)
    title = (f"kmsbeam {plan.spec.action}: {plan.spec.input} -> {plan.out_dir} "
             f"({m.format}, {m.mode} mode, key {m.key})")  # fmt: skip
    return table(title, rows)


def table(title: str, rows: list[tuple[str, str]]) -> str:
    """A summary table: the title, then one ``  name  value`` line per row, names aligned."""
    width = max(len(name) for name, _ in rows)
    return "\n".join([title] + [f"  {name:<{width}}  {value}" for name, value in rows])


_METRIC_ROWS = ("values ", "data keys", "KMS ", "master keys", "required keys")


def _without_metrics(rows: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The rows of a job whose runner reported no metrics: counts from the written output."""
    note = ("counted", "in the written output: the runner reported no metrics "
            "(values, data keys and KMS calls unknown)")  # fmt: skip
    return [note] + [r for r in rows if not r[0].startswith(_METRIC_ROWS)]


def _dead(result: JobResult) -> int:
    """Dead letters counted from the written files (exact on every runner), else the counter."""
    return sum(result.reasons.values()) or result.dead_letters


def dead_letter_warning(result: JobResult) -> str | None:
    """One warning line when records went to the dead letters, else None."""
    if not _dead(result):
        return None
    return (f"kmsbeam: warning: {_dead(result):,} of {result.records_in:,} records went to "
            f"the dead letters in {result.plan.dead_dir} (each line has the reason)")  # fmt: skip


def finish(result: JobResult, budget: Budget | None = None) -> int:
    """Print the dead-letter warning or the one-sentence error, and return the exit code
    (0, or 3 over ``budget``: ``dead_letters.outcome``)."""
    reasons = result.reasons or Counter({"(reason not counted)": result.dead_letters})
    verdict = outcome(result.records_in, result.records_out, +reasons, budget or Budget(),
                      str(result.plan.dead_dir))  # fmt: skip
    if verdict.message:
        print(f"kmsbeam: error: {verdict.message}", file=sys.stderr)
    else:
        warning = dead_letter_warning(result)
        if warning:
            print(warning, file=sys.stderr)
    return verdict.code
