"""The small Beam functions of the jobs: format, count, dead letters (reading: ``_read``).

Records travel between the steps of a job in lists of up to ``BATCH_SIZE`` (one element per
list: Beam's per-element cost would exceed the work); dead letters travel one per element.
They live in an importable module (not ``__main__``) so multi_processing and portable
workers can unpickle them. Each holds only strings and lists.
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Iterator, Sequence
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from kmsbeam.pipelines._json import dump_lines
from kmsbeam.pipelines._json import dumps as dumps  # the JSONL codec: records, dead letters
from kmsbeam.transforms import DEAD_LETTER

#: counters of the jobs themselves (the transforms count in the ``kmsbeam`` namespace)
NAMESPACE = "kmsbeam.pipelines"
#: the largest JSONL line or CSV row (UTF-8 bytes) a job reads or writes
MAX_RECORD_BYTES = 16 * 2**20
#: the most records in one list between read, encrypt/decrypt and write
BATCH_SIZE = 512


def too_large(limit: int) -> str:
    """The dead-letter reason of a line or row over ``limit`` bytes."""
    return f"record too large: a line or row holds at most {limit} bytes"


def _size_over(line: str, limit: int) -> int:
    """The UTF-8 size of ``line`` when it is over ``limit`` bytes, else 0."""
    if len(line) * 4 <= limit:
        return 0
    size = len(line.encode("utf-8", "surrogatepass"))
    return size if size > limit else 0


def dead_letter_line(letter: Any) -> str:
    """A dead letter as one JSON line: bytes become base64 text, dates ISO text."""
    return dumps(letter)


def _dead(transform: str, reason: str, record: Any) -> pvalue.TaggedOutput:
    return pvalue.TaggedOutput(DEAD_LETTER, {"transform": transform, "reason": reason,
                                             "record": record})  # fmt: skip


def csv_line(values: Sequence[Any]) -> str:
    """One CSV row as text, quoted by the csv module as needed (no line terminator)."""
    out = io.StringIO()
    csv.writer(out, lineterminator="\r\n").writerow(values)  # "\r" and "\n" in a field: quoted
    return out.getvalue()[:-2]


class _Format(beam.DoFn):
    """A list of records -> ONE string: their lines joined by ``\\n`` (the writer ends it, so
    the file's bytes are those of one line per record); a record that does not fit is a dead
    letter. Counts ``records_written``."""

    def __init__(self, max_bytes: int = MAX_RECORD_BYTES) -> None:
        self._max = max_bytes

    def setup(self) -> None:
        self._written = Metrics.counter(NAMESPACE, "records_written")

    def process(self, records: list[Any]) -> Iterator[Any]:
        lines: list[str] = []
        for record in records:
            line = self._line(record)
            if isinstance(line, pvalue.TaggedOutput):
                yield line
            else:
                lines.append(line)
        if lines:
            self._written.inc(len(lines))
            yield "\n".join(lines)

    def _line(self, record: Any) -> str | pvalue.TaggedOutput:
        raise NotImplementedError

    def _fit(self, step: str, line: str) -> str | pvalue.TaggedOutput:
        size = _size_over(line, self._max)
        return _dead(step, too_large(self._max), {"bytes": size}) if size else line


class FormatJsonl(_Format):
    """Dict records as JSON lines; a line over ``max_bytes`` is a dead letter (its record is
    ``{"bytes": N}``: a job's reader would refuse the line, and the dead letter holds no
    data). A list of dicts ``orjson`` writes is joined as UTF-8 bytes, the bytes of ``dumps``
    (the text sink writes bytes as they are): no text is decoded to be encoded again."""

    def process(self, records: list[Any]) -> Iterator[Any]:
        lines = dump_lines(records)
        if lines is None:  # something orjson does not write: line by line, as text
            yield from super().process(records)
            return
        joined = b"\n".join(lines)
        if len(joined) > self._max:  # some line may be over: each one checked
            fits = [line for line in lines if len(line) <= self._max]
            for line in lines:
                if len(line) > self._max:
                    yield _dead("FormatJSONL", too_large(self._max), {"bytes": len(line)})
            lines, joined = fits, b"\n".join(fits)
        if lines:
            self._written.inc(len(lines))
            yield joined

    def _line(self, record: Any) -> str | pvalue.TaggedOutput:
        return self._fit("FormatJSONL", dumps(record))


class FormatCsv(_Format):
    """Dict records back into CSV lines in the given column order."""

    def __init__(self, columns: Sequence[str], max_bytes: int = MAX_RECORD_BYTES) -> None:
        super().__init__(max_bytes)
        self._columns = list(columns)

    def _line(self, record: dict[str, Any]) -> str | pvalue.TaggedOutput:
        missing = [c for c in self._columns if c not in record]
        extra = [k for k in record if k not in self._columns]
        if missing or extra:
            return _dead("FormatCSV", "the record does not match the CSV header", record)
        return self._fit("FormatCSV", csv_line(["" if record[c] is None else record[c] for c in self._columns]))


class Count(beam.DoFn):
    """Pass elements through, counting them in ``kmsbeam.pipelines/NAME`` (a list: its records)."""

    def __init__(self, name: str) -> None:
        self._name = name

    def setup(self) -> None:
        self._counter = Metrics.counter(NAMESPACE, self._name)

    def process(self, element: Any) -> Iterator[Any]:
        self._counter.inc(len(element) if isinstance(element, list) else 1)
        yield element


def each(batch: list[Any], fn: Any, args: tuple[Any, ...] = ()) -> list[Any]:
    """``fn(record, *args)`` for each record of a list (``beam.Map(each, fn, args)``)."""
    return [fn(record, *args) for record in batch]


def records_of(batch: list[Any]) -> list[Any]:
    """A list's records, one element each (``beam.FlatMap(records_of)``)."""
    return batch


#: marker key carrying the null parent structs of a record past the crypto transforms
NULL_PARENTS = "\x00kmsbeam_null_parents"


def _has_null_parent(record: dict[str, Any], nested: list[list[str]]) -> bool:
    for parts in nested:
        node: Any = record
        for part in parts[:-1]:
            if not isinstance(node, dict) or part not in node:
                break
            if node[part] is None:
                return True
            node = node[part]
    return False


def fill_null_parents(record: dict[str, Any], paths: Sequence[str]) -> dict[str, Any]:
    """Give nested paths under a null struct a ``None`` leaf, remembering the null parents.

    A null Parquet struct means its fields are null too, but the record engines would call
    the nested field missing. ``restore_null_parents`` puts the nulls back afterwards.
    """
    nested = [p.split(".") for p in paths if "." in p]
    if not nested or not _has_null_parent(record, nested):
        return record
    out = copy.deepcopy(record)
    nulls: list[str] = []
    for parts in nested:
        node: Any = out
        inside = False
        for depth, part in enumerate(parts[:-1]):
            prefix = ".".join(parts[: depth + 1])
            if prefix in nulls:
                inside = True
            elif part in node and node[part] is None:
                node[part] = {}
                nulls.append(prefix)
                inside = True
            elif inside and part not in node:
                node[part] = {}
            if not isinstance(node.get(part), dict):
                break
            node = node[part]
        else:
            if inside:
                node.setdefault(parts[-1], None)
    out[NULL_PARENTS] = nulls
    return out


def restore_null_parents(record: Any) -> Any:
    """Undo ``fill_null_parents`` (on dead letters too, whose ``record`` holds the record)."""
    if isinstance(record, dict) and set(record) == {"transform", "reason", "record"}:
        return {**record, "record": restore_null_parents(record["record"])}
    if not isinstance(record, dict) or NULL_PARENTS not in record:
        return record
    out = dict(record)
    for prefix in sorted(out.pop(NULL_PARENTS), key=len):
        parts = prefix.split(".")
        node: Any = out
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                break
            node[part] = dict(node[part])
            node = node[part]
        else:
            node[parts[-1]] = None
    return out
