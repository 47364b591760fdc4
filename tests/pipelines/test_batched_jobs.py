"""Batched jobs (records in lists of up to 512 from read to write, one write per list): the same
output bytes as one line per record, exact counts with dead letters mixed in, in_memory and
multi_processing, lists that straddle the 512 boundary, a file smaller than one list, empty
input, and the identity hook (``build_pipeline(crypto=...)``)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest

from kmsbeam.pipelines import _fns
from kmsbeam.pipelines.jobs import JobResult, run_plan
from kmsbeam.pipelines.plan import JobSpec, plan_decrypt, plan_encrypt
from kmsbeam.transforms import DEAD_LETTER

MODES = {"in_memory": [], "multi_processing": ["--direct_running_mode", "multi_processing",
                                               "--direct_num_workers", "2"]}  # fmt: skip
FIELDS = ["ssn", "contact.email", "name"]
SLOW = pytest.mark.slow  # two multi_processing jobs: about 20 s


def record(i: int) -> dict[str, Any]:
    return {"id": i, "ssn": f"{i:03d}-45-6789", "name": f"Zoë \"{i}\", Ñ" if i % 7 else None,
            "contact": {"email": f"u{i}@example.com", "tz": "Europe/Zürich"}, "score": i / 4,
            "tags": ["a", i], "ok": i % 2 == 0}  # fmt: skip


def line(r: dict[str, Any]) -> str:
    """The documented JSONL output style: compact, key order kept, UTF-8 as is."""
    return json.dumps(r, ensure_ascii=False, separators=(",", ":"))


BAD_LINES = [b"not json", b"[1, 2]", b'{"id": \xff}', b'{"unterminated": "x']  # 4 dead letters


def jsonl_input(path: Path, n: int) -> str:
    """``n`` good records with the bad lines spread between them (and a blank line, which is
    no record); returns the good lines as the job writes them."""
    good = [line(record(i)) for i in range(n)]
    bad_at = {250 * (k + 1): bad for k, bad in enumerate(BAD_LINES)}  # past the end: at the end
    raw: list[bytes] = []
    for i, text in enumerate(good):
        raw += [bad_at.pop(i)] if i in bad_at else []
        raw.append(text.encode("utf-8"))
    raw += [*bad_at.values(), b"   "]
    path.write_bytes(b"\n".join(raw) + b"\n")
    return "".join(g + "\n" for g in good)


def shards(directory: Path, suffix: str) -> list[str]:
    """The output shards' texts; each ends with a newline and holds no empty line."""
    texts = [p.read_text(encoding="utf-8") for p in sorted(directory.glob(f"part-*{suffix}"))]
    for text in texts:
        assert text == "" or (text.endswith("\n") and "\n\n" not in text)
    return texts


def same_lines(texts: list[str], expected: str, single: bool) -> None:
    """The shards hold exactly ``expected``'s lines (byte for byte, in order when ``single``)."""
    if single:
        assert "".join(texts) == expected
    assert sorted("".join(texts).splitlines()) == sorted(expected.splitlines())
    assert sum(len(t.encode("utf-8")) for t in texts) == len(expected.encode("utf-8"))


def run(action: str, src: Path, out: Path, mode: str, **spec: Any) -> JobResult:
    job = JobSpec(action, str(src), str(out), beam_args=list(MODES[mode]), **spec)
    plan = plan_encrypt(job, notice=lambda text: None) if action == "encrypt" else plan_decrypt(job)
    return run_plan(plan)


@pytest.mark.parametrize(("n", "mode"), [(1100, "in_memory"), (100, "in_memory"),  # 512+512+76; < 512
                                         pytest.param(1100, "multi_processing", marks=SLOW)])  # fmt: skip
def test_jsonl_round_trip_gives_the_same_bytes_and_exact_counts(tmp_path: Path, mode: str, n: int) -> None:
    expected = jsonl_input(tmp_path / "in.jsonl", n)
    enc = run("encrypt", tmp_path / "in.jsonl", tmp_path / "enc", mode, fields=FIELDS)
    assert (enc.records_in, enc.records_out, enc.dead_letters) == (n + 4, n, 4)
    assert sum(enc.reasons.values()) == 4
    assert enc.count("records") == n and enc.count("values_encrypted") == n * 3 - n // 7 - 1
    written = [json.loads(t) for t in "".join(shards(tmp_path / "enc", ".jsonl")).splitlines()]
    cleartext = sorted((r["id"], list(r), r["score"], r["tags"], r["contact"]["tz"]) for r in written)
    assert cleartext == [(i, list(record(i)), i / 4, ["a", i], "Europe/Zürich") for i in range(n)]
    for r in written:  # encrypted: text that is not the value; a None name stays None
        plain = record(r["id"])
        assert isinstance(r["ssn"], str) and r["ssn"] != plain["ssn"]
        assert r["contact"]["email"] != plain["contact"]["email"]
        assert r["name"] is None if plain["name"] is None else r["name"] != plain["name"]
    dec = run("decrypt", tmp_path / "enc", tmp_path / "dec", mode)
    assert (dec.records_in, dec.records_out, dec.dead_letters) == (n, n, 0)
    assert dec.count("values_decrypted") == n * 3 - n // 7 - 1
    same_lines(shards(tmp_path / "dec", ".jsonl"), expected, single=mode == "in_memory")


def csv_text(rows: list[list[str]]) -> str:
    return "".join(_fns.csv_line(r) + "\n" for r in rows)


@pytest.mark.parametrize("mode", ["in_memory", pytest.param("multi_processing", marks=SLOW)])
def test_csv_round_trip_gives_the_same_bytes_and_exact_counts(tmp_path: Path, mode: str) -> None:
    header = ["id", "ssn", "note"]
    rows = [[str(i), f"{i:09d}", f'Zoë, "{i}"\nline two' if i % 5 == 0 else f"plain {i}"] for i in range(600)]
    bad = ["1,2", "x,y,z,w"]  # a column count other than the header's: dead letters
    text = csv_text([header] + rows[:513]) + bad[0] + "\n" + csv_text(rows[513:]) + bad[1] + "\n"
    (tmp_path / "in.csv").write_text(text, encoding="utf-8")
    enc = run("encrypt", tmp_path / "in.csv", tmp_path / "enc", mode, fields=["ssn", "note"])
    assert (enc.records_in, enc.records_out, enc.dead_letters) == (602, 600, 2)
    assert "the row has 2 columns, the header has 3" in str(dict(enc.reasons))
    written = list(csv.reader(io.StringIO("".join(shards(tmp_path / "enc", ".csv")))))
    assert written[0] == header and sorted(int(r[0]) for r in written[1:]) == list(range(600))
    dec = run("decrypt", tmp_path / "enc", tmp_path / "dec", mode)
    assert (dec.records_in, dec.records_out, dec.dead_letters) == (600, 600, 0)
    expected = csv_text([header] + rows)
    texts = shards(tmp_path / "dec", ".csv")
    if mode == "in_memory":
        assert "".join(texts) == expected
    body = "".join(t.split("\n", 1)[1] for t in texts)  # each shard starts with the header
    assert sorted(csv.reader(io.StringIO(body))) == sorted(rows)


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_empty_input_writes_one_empty_shard(tmp_path: Path, fmt: str) -> None:
    (tmp_path / f"in.{fmt}").write_text("id,ssn\n" if fmt == "csv" else "", encoding="utf-8")
    enc = run("encrypt", tmp_path / f"in.{fmt}", tmp_path / "enc", "in_memory", fields=["ssn"])
    assert (enc.records_in, enc.records_out, enc.dead_letters) == (0, 0, 0)
    assert shards(tmp_path / "enc", f".{fmt}") == ["id,ssn\n" if fmt == "csv" else ""]


@pytest.mark.parametrize("mode", list(MODES))
def test_too_large_and_misfit_records_are_exact_dead_letters(tmp_path: Path, mode: str) -> None:
    from apache_beam.testing.util import assert_that, equal_to

    from kmsbeam.pipelines import formats
    from kmsbeam.pipelines.jobs import counters_of, pipeline_options

    good = [{"a": i, "b": "x" * (i % 30)} for i in range(1030)]  # lines of 14 to 46 bytes
    lines = [line(r) for r in good]
    lines[10:10] = ['{"a": "' + "y" * 120 + '"}']  # over 100 bytes: refused by the reader
    (tmp_path / "in.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    fits = [r for r in good if len(line(r)) <= 40]
    options, runner = pipeline_options(list(MODES[mode]))
    p = beam.Pipeline(runner=runner, options=options)
    lists, dead = formats.read_record_batches(p, "jsonl", str(tmp_path / "in.jsonl"), max_bytes=100)
    assert_that(lists | beam.Map(lambda b: len(b) <= 512), equal_to([True] * 3), label="lists")
    assert_that(dead | "Read" >> beam.Map(lambda d: d["reason"]),
                equal_to(["record too large: a line or row holds at most 100 bytes"]), label="read")  # fmt: skip
    too_big = formats.write_record_batches(lists, "jsonl", str(tmp_path / "out" / "part"), max_bytes=40)
    assert_that(too_big | "Big" >> beam.Map(lambda d: d["record"]["bytes"]),
                equal_to([len(line(r)) for r in good if len(line(r)) > 40]), label="written")  # fmt: skip
    result = p.run()
    result.wait_until_finish()
    counts = counters_of(result)
    assert counts["kmsbeam.pipelines/records_read"] == 1031
    assert counts["kmsbeam.pipelines/records_written"] == len(fits)
    same_lines(shards(tmp_path / "out", ".jsonl"), "".join(line(r) + "\n" for r in fits), single=False)


def test_a_record_that_does_not_match_the_csv_header_is_a_dead_letter(tmp_path: Path) -> None:
    from apache_beam.testing.util import assert_that, equal_to

    from kmsbeam.pipelines import formats
    from kmsbeam.pipelines.jobs import counters_of, pipeline_options

    records = [{"id": str(i), "ssn": f"{i:09d}"} for i in range(700)]
    misfits = [{"id": "x"}, {"id": "y", "ssn": "1", "extra": "2"}]
    options, runner = pipeline_options([])
    p = beam.Pipeline(runner=runner, options=options)
    lists = p | beam.Create([records[:500] + misfits[:1], misfits[1:] + records[500:]])
    dead = formats.write_record_batches(lists, "csv", str(tmp_path / "out" / "part"), columns=["id", "ssn"])
    assert_that(dead | beam.Map(lambda d: (d["transform"], d["record"]["id"])),
                equal_to([("FormatCSV", "x"), ("FormatCSV", "y")]))  # fmt: skip
    result = p.run()
    result.wait_until_finish()
    assert counters_of(result)["kmsbeam.pipelines/records_written"] == 700
    texts = shards(tmp_path / "out", ".csv")
    same_lines(texts, "id,ssn\n" + csv_text([[r["id"], r["ssn"]] for r in records]), single=True)


class Identity(beam.PTransform):  # type: ignore[misc]
    """Lists of records in, (the same lists, an empty dead-letter output) out."""

    def expand(self, lists: Any) -> Any:
        out = lists | "Same" >> beam.Map(lambda batch: batch).with_outputs(DEAD_LETTER, main="records")
        return out.records, out[DEAD_LETTER]


def test_the_identity_hook_runs_the_same_job_without_encryption(tmp_path: Path) -> None:
    expected = jsonl_input(tmp_path / "in.jsonl", 600)
    plan = plan_encrypt(JobSpec("encrypt", str(tmp_path / "in.jsonl"), str(tmp_path / "out"), fields=FIELDS),
                        notice=lambda text: None)  # fmt: skip
    result = run_plan(plan, crypto=Identity())
    assert (result.records_in, result.records_out, result.dead_letters) == (604, 600, 4)
    assert result.count("values_encrypted") == 0
    same_lines(shards(tmp_path / "out", ".jsonl"), expected, single=True)
