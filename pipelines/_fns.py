"""The small Beam functions of the jobs: format, count, dead letters (reading: ``_read``).

They live in an importable module (not ``__main__``) so multi_processing and portable
workers can unpickle them. Each holds only strings and lists.
"""

from __future__ import annotations

import base64
import copy
import csv
import datetime as dt
import io
import json
import re
from collections.abc import Iterator, Sequence
from decimal import Decimal
from typing import Any

import apache_beam as beam
from apache_beam import pvalue
from apache_beam.metrics import Metrics
from kmsbeam.transforms import DEAD_LETTER

#: counters of the jobs themselves (the transforms count in the ``kmsbeam`` namespace)
NAMESPACE = "kmsbeam.pipelines"
#: the largest JSONL line or CSV row (UTF-8 bytes) a job reads or writes
MAX_RECORD_BYTES = 16 * 2**20
_SURROGATE = re.compile("[\ud800-\udfff]")


def too_large(limit: int) -> str:
    """The dead-letter reason of a line or row over ``limit`` bytes."""
    return f"record too large: a line or row holds at most {limit} bytes"


def _size_over(line: str, limit: int) -> int:
    """The UTF-8 size of ``line`` when it is over ``limit`` bytes, else 0."""
    if len(line) * 4 <= limit:
        return 0
    size = len(line.encode("utf-8", "surrogatepass"))
    return size if size > limit else 0


def dumps(record: Any) -> str:
    """The compact JSON line style of kmsbeam (key order kept, UTF-8 as is). Values JSON has
    no type for (bytes, dates, decimals, decrypted from values another writer encrypted) are
    written as dead letters write them: base64 or ISO text, decimal text. A lone surrogate
    (from a ``\\udXXX`` escape in the input) stays an escape: it has no UTF-8 form."""
    line = json.dumps(record, ensure_ascii=False, separators=(",", ":"), default=_json_default)
    if _SURROGATE.search(line):
        line = json.dumps(record, separators=(",", ":"), default=_json_default)
    return line


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    return str(value)


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


class FormatJsonl(beam.DoFn):
    """A dict record as one JSON line; a line over ``max_bytes`` is a dead letter (its record
    is ``{"bytes": N}``: a job's reader would refuse the line, and the dead letter holds no
    data)."""

    def __init__(self, max_bytes: int = MAX_RECORD_BYTES) -> None:
        self._max = max_bytes

    def process(self, record: Any) -> Iterator[Any]:
        line = dumps(record)
        size = _size_over(line, self._max)
        if size:
            yield _dead("FormatJSONL", too_large(self._max), {"bytes": size})
            return
        yield line


class FormatCsv(beam.DoFn):
    """A dict record back into a CSV line in the given column order."""

    def __init__(self, columns: Sequence[str], max_bytes: int = MAX_RECORD_BYTES) -> None:
        self._columns = list(columns)
        self._max = max_bytes

    def process(self, record: dict[str, Any]) -> Iterator[Any]:
        missing = [c for c in self._columns if c not in record]
        extra = [k for k in record if k not in self._columns]
        if missing or extra:
            yield _dead("FormatCSV", "the record does not match the CSV header", record)
            return
        line = csv_line(["" if record[c] is None else record[c] for c in self._columns])
        size = _size_over(line, self._max)
        if size:
            yield _dead("FormatCSV", too_large(self._max), {"bytes": size})
            return
        yield line


class Count(beam.DoFn):
    """Pass elements through, counting them in ``kmsbeam.pipelines/NAME``."""

    def __init__(self, name: str) -> None:
        self._name = name

    def setup(self) -> None:
        self._counter = Metrics.counter(NAMESPACE, self._name)

    def process(self, element: Any) -> Iterator[Any]:
        self._counter.inc()
        yield element



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
