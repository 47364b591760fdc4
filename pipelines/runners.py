"""Which Beam runners kmsbeam jobs run on, which they refuse, and what passes through to them.

The policy (docs/RUNNERS.md has the table of runners: tested, documented, refused):

- **Refused**, with one sentence saying why: a runner that cannot run kmsbeam correctly
  (``REFUSED``: the DaskRunner), and the DirectRunner's ``multi_threading`` mode. Both lose
  records without failing.
- **Local runners** (no ``--runner``, DirectRunner, FnApiRunner): kmsbeam knows every option
  class, so an option no class knows is refused as a likely typo.
- **Every other runner**: options kmsbeam does not know pass through to Beam untouched (a
  runner's own options, e.g. ``--flink_master``, are defined in modules that are only
  imported when the runner starts).
- **No metrics**: a runner whose result has no metrics still gets a summary: records are
  counted in the written output (``output_counts``) and the summary says so.
- **Workers in this process** (``in_process``: the in-memory DirectRunner, the
  BundleBasedDirectRunner, the PortableRunner in LOOPBACK mode): data keys and KMS calls are
  counted by kmsbeam itself (``kmsbeam.call_counts``) rather than read from Beam's metrics, which
  some of these runners under-report (the BundleBasedDirectRunner keeps only a bundle's counts).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from kmsbeam import ConfigurationError

__all__ = ["LOCAL_RUNNERS", "REFUSED", "check_runner", "counters_or_none", "in_process", "is_local",
           "output_counts", "runner_name", "unknown_options"]  # fmt: skip

LOCAL_RUNNERS = (None, "DirectRunner", "FnApiRunner", "SwitchingDirectRunner")

#: runner class name -> why kmsbeam refuses it (measured with Beam 2.77)
REFUSED = {
    "DaskRunner": (
        "the DaskRunner is refused: in Beam 2.77 it loses the records a DoFn emits in "
        "finish_bundle (kmsbeam encrypts in batches there), runs only the last transform of a "
        "graph and reports no metrics; use the default runner, the PortableRunner, Flink, "
        "Spark or Dataflow (docs/RUNNERS.md)"
    ),
}
#: the runners Beam knows by a short name (``direct``, ``DirectRunner``), by lowercase name
#: without "runner"
_KNOWN = {name.lower().removesuffix("runner"): name for name in (
    "BundleBasedDirectRunner", "DaskRunner", "DataflowRunner", "DirectRunner", "FlinkRunner",
    "InteractiveRunner", "JetRunner", "PortableRunner", "PrismRunner", "PythonRPCDirectRunner",
    "RenderRunner", "SamzaRunner", "SparkRunner", "SwitchingDirectRunner", "TestDataflowRunner",
    "TestDirectRunner", "FnApiRunner")}  # fmt: skip
MULTI_THREADING = (
    "direct_running_mode=multi_threading loses records in Beam's FnApiRunner; use in_memory "
    "(the default) or multi_processing"
)


def runner_name(runner: Any) -> str | None:
    """The class name of a ``--runner`` value as Beam resolves it (``DaskRunner`` and
    ``apache_beam.runners.dask.dask_runner.DaskRunner`` are both ``DaskRunner``; ``direct``
    is ``DirectRunner``); None when no runner was named."""
    if runner is None:
        return None
    if not isinstance(runner, str):
        return runner.__name__ if isinstance(runner, type) else type(runner).__name__
    name = runner.rsplit(".", 1)[-1]
    key = name.lower().removesuffix("runner")
    return _KNOWN.get(key, name)


def _refusal(name: str | None) -> str | None:
    if name is None:
        return None
    key = name.lower().removesuffix("runner")
    return next((why for refused, why in REFUSED.items()
                 if refused.lower().removesuffix("runner") == key), None)  # fmt: skip


def is_local(name: str | None) -> bool:
    """Whether ``name`` (from ``runner_name``) is one of the FnApiRunner's names."""
    return name in LOCAL_RUNNERS


def in_process(options: Any) -> bool:
    """Whether the job's workers run in this process (so ``kmsbeam.call_counts`` sees every
    data key and KMS call they make): the local runners in ``in_memory`` mode (kmsbeam's
    default), the BundleBasedDirectRunner, and any runner with ``--environment_type=LOOPBACK``."""
    from apache_beam.options.pipeline_options import DirectOptions, PortableOptions, StandardOptions

    name = runner_name(options.view_as(StandardOptions).runner)
    if is_local(name):
        return (options.view_as(DirectOptions).direct_running_mode or "in_memory") == "in_memory"
    if name in ("BundleBasedDirectRunner", "TestDirectRunner"):
        return True
    return (options.view_as(PortableOptions).environment_type or "").upper() == "LOOPBACK"


def check_runner(options: Any) -> None:
    """Refuse a runner (or a DirectRunner mode) that cannot run kmsbeam correctly.

    Raises:
        ConfigurationError: one sentence saying why, and what to use instead.
    """
    from apache_beam.options.pipeline_options import DirectOptions, StandardOptions

    name = runner_name(options.view_as(StandardOptions).runner)
    why = _refusal(name)
    if why:
        raise ConfigurationError(why)
    if is_local(name) and options.view_as(DirectOptions).direct_running_mode == "multi_threading":
        raise ConfigurationError(MULTI_THREADING)


def unknown_options(args: Sequence[str], options: Any) -> list[str]:
    """The options that no imported Beam options class knows, when the runner is local (else
    none: they pass through to the runner untouched)."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    if not is_local(runner_name(options.view_as(StandardOptions).runner)):
        return []
    parsed = PipelineOptions(list(args))
    beam_log = logging.getLogger("apache_beam.options.pipeline_options")
    level = beam_log.level
    beam_log.setLevel(logging.ERROR)  # "Discarding unparseable args": we say it better
    try:
        unknown = set(parsed.get_all_options(retain_unknown_options=True))
        unknown -= set(parsed.get_all_options())
    finally:
        beam_log.setLevel(level)
    return [a for a in args  # argparse names --a-b's value a_b
            if a.startswith("-") and a.lstrip("-").split("=", 1)[0].replace("-", "_") in unknown]


def counters_or_none(result: Any) -> dict[str, int] | None:
    """Beam counters by ``namespace/name``, or None when the runner reports no metrics."""
    from apache_beam.metrics.metric import MetricsFilter

    try:
        counters = result.metrics().query(MetricsFilter())["counters"]
    except NotImplementedError:
        return None
    totals: dict[str, int] = {}
    for c in counters:
        value = c.committed if c.committed is not None else c.attempted  # some report attempted only
        key = f"{c.key.metric.namespace}/{c.key.metric.name}"
        totals[key] = totals.get(key, 0) + int(value or 0)
    return totals or None


def _lines(pattern: str, header: bool) -> int:
    from apache_beam.io.filesystems import FileSystems

    total = 0
    for match in FileSystems.match([pattern]):
        for meta in match.metadata_list:
            with FileSystems.open(meta.path) as f:
                count = sum(1 for line in iter(lambda: f.readline(), b"") if line.strip())
            total += max(count - (1 if header else 0), 0)
    return total


def _rows(pattern: str) -> int:
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    total = 0
    for match in FileSystems.match([pattern]):
        for meta in match.metadata_list:
            with FileSystems.open(meta.path) as f:
                total += pq.ParquetFile(f).metadata.num_rows
    return total


def output_counts(out_dir: str, dead_dir: str, fmt: str) -> dict[str, int]:
    """Counters rebuilt from what a job wrote: records out (``part-*`` shards of ``out_dir``),
    dead letters (``dead_dir``), and records in = the two added up. Keys as ``counters_or_none``.

    Parquet shards are counted from their footers; a PME file with an encrypted footer cannot
    be counted without its keys and raises."""
    sep = "" if out_dir.endswith("/") else "/"
    shards = f"{out_dir}{sep}part-*"
    out = _rows(shards) if fmt == "parquet" else _lines(shards, header=fmt == "csv")
    dsep = "" if dead_dir.endswith("/") else "/"
    try:
        dead = _lines(f"{dead_dir}{dsep}part-*", header=False)
    except Exception:  # noqa: BLE001 - no dead-letter directory: none written
        dead = 0
    ns = "kmsbeam.pipelines"
    return {f"{ns}/records_written": out, f"{ns}/dead_letters_written": dead,
            f"{ns}/records_read": out + dead}  # fmt: skip
