"""``FormatJsonl``: a list of records -> one joined line string whose UTF-8 bytes are those of
``dumps`` of each record (the batch path writes ``orjson`` bytes as they are), and a line over
the limit is a dead letter, as record by record."""

from __future__ import annotations

import random
from typing import Any

from apache_beam import pvalue

from kmsbeam.pipelines._fns import FormatJsonl
from tests.pipelines.test_json_codec import PINNED, _record, reference_dumps


def _written(fmt: FormatJsonl, records: list[Any]) -> tuple[bytes, list[Any]]:
    text, dead = b"", []
    for out in fmt.process(records):
        if isinstance(out, pvalue.TaggedOutput):
            dead.append(out.value)
        else:
            text += out if isinstance(out, bytes) else out.encode("utf-8")
    return text, dead


def _fmt(max_bytes: int = 16 * 2**20) -> FormatJsonl:
    fmt = FormatJsonl(max_bytes)
    fmt.setup()
    return fmt


def test_lists_of_records_write_the_bytes_of_the_standard_library() -> None:
    rnd = random.Random(20261203)
    pinned = [r for r, _ in PINNED if isinstance(r, dict)]
    batches = [pinned, [{"a": "x" * 300, "b": 1}] * 40, [{"f": 1e-06, "s": "e-"}, {"s": "null 0.0000 e-"}, {"i": 3}]]
    batches += [[_record(rnd) for _ in range(rnd.randint(1, 40))] for _ in range(60)]
    for records in batches:
        text, dead = _written(_fmt(), records)
        assert dead == []
        assert text == "\n".join(map(reference_dumps, records)).encode("utf-8"), records


def test_a_line_over_the_limit_is_a_dead_letter_holding_its_size() -> None:
    records = [{"a": "x" * 10}, {"a": "é" * 30}, {"b": 2}, {"a": "y" * 100}]
    text, dead = _written(_fmt(max_bytes=40), records)
    assert text == b'{"a":"xxxxxxxxxx"}\n{"b":2}'
    sizes = [len(reference_dumps(r).encode("utf-8")) for r in (records[1], records[3])]
    assert [d["record"] for d in dead] == [{"bytes": sizes[0]}, {"bytes": sizes[1]}]
    assert {d["transform"] for d in dead} == {"FormatJSONL"}
