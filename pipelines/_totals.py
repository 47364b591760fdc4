"""What a CLI job's launcher knows of its input before the job: its size and record count.

The input size comes from Beam's filesystems (past ``_MATCHED`` files, extrapolated); the
record count exactly from Parquet footers, else from the mean line length of the first MiB of
the first (uncompressed) text file. Never an error: what cannot be read is not estimated.
Shown by ``kmsbeam.pipelines.progress`` (and public from there).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Totals", "estimate_totals"]

_SAMPLE = 2**20
_MATCHED = 1000  # files whose size is asked for
_FOOTERS = 50  # Parquet footers read for the row count


@dataclass
class Totals:
    """What the launcher knows about the input before the job: bytes, and records when they
    could be counted (``exact``) or estimated."""

    bytes: int | None = None
    records: int | None = None
    exact: bool = False


def _sizes(files: Sequence[str]) -> int | None:
    """The files' total size; past ``_MATCHED`` files, extrapolated from the first ones (one
    listing or HEAD request per file on object stores)."""
    from apache_beam.io.filesystems import FileSystems

    try:
        results = FileSystems.match(list(files[:_MATCHED]))
    except Exception:  # noqa: BLE001 - progress never fails a job
        return None
    total = sum(m.size_in_bytes for r in results for m in r.metadata_list)
    return total if len(files) <= _MATCHED else round(total * len(files) / _MATCHED)


def _parquet_rows(files: Sequence[str]) -> int | None:
    import pyarrow.parquet as pq
    from apache_beam.io.filesystems import FileSystems

    rows = 0
    for path in files:
        try:
            with FileSystems.open(path) as f:
                rows += pq.ParquetFile(f).metadata.num_rows
        except Exception:  # noqa: BLE001 - e.g. an encrypted footer: no estimate
            return None
    return rows


def _text_records(files: Sequence[str], size: int, header: bool) -> tuple[int, bool] | None:
    from apache_beam.io.filesystem import CompressionTypes
    from apache_beam.io.filesystems import FileSystems

    first = files[0]
    if CompressionTypes.detect_compression_type(first) != CompressionTypes.UNCOMPRESSED:
        return None
    try:
        with FileSystems.open(first, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            sample = f.read(_SAMPLE)
    except Exception:  # noqa: BLE001
        return None
    if len(files) == 1 and len(sample) == size:  # the whole input: counted
        lines = sample.count(b"\n") + (1 if sample and not sample.endswith(b"\n") else 0)
        return max(lines - (1 if header else 0), 0), True
    whole = sample[: sample.rfind(b"\n") + 1]  # whole lines only
    lines = whole.count(b"\n")
    if not lines:
        return None
    estimate = round(size * lines / len(whole)) - (len(files) if header else 0)
    return max(estimate, 0), False


def estimate_totals(files: Sequence[str], fmt: str) -> Totals:
    """The input size and (estimated) record count of a job's input files."""
    size = _sizes(files) if files else None
    if size is None:
        return Totals()
    if fmt == "parquet":
        rows = _parquet_rows(files) if len(files) <= _FOOTERS else None
        return Totals(size, rows, rows is not None and len(files) <= _MATCHED)
    counted = _text_records(files, size, header=fmt == "csv")
    if counted is None:
        return Totals(size)
    return Totals(size, counted[0], counted[1])
