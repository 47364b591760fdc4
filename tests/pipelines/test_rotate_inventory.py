"""``kmsbeam rotate``'s report and rotation manifest name the data keys the rewrap step saw
(``kmsbeam.rotation.inventory``): exact counts on a dataset of several data keys and master key
versions, with a dead record, on in_memory and multi_processing; no step reads the values again."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam.formats.envelope import FIELD_V1, parse
from kmsbeam.keys.registry import wrapped_key_version
from kmsbeam.rotation.inventory import merge_rows
from kmsbeam.transforms import EncryptFields, RewrapDataKeys

FIELDS = ["ssn", "email"]
RUNNERS = {
    "in_memory": [],
    "multi_processing": ["--direct_running_mode", "multi_processing", "--direct_num_workers", "2"],
}


def _lines(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for p in sorted(directory.glob("part-*"))
            for line in p.read_text(encoding="utf-8").splitlines()]  # fmt: skip


def _row(table: str, name: str) -> str:
    """The value of the row ``name`` of a summary table."""
    found = [line.split()[-1] for line in table.splitlines() if line.strip().startswith(name + " ")
             and line.strip()[len(name):].strip().replace(",", "").isdigit()]  # fmt: skip
    assert len(found) == 1, table
    return found[0]


def _head(value: str) -> tuple[str, str]:
    parsed = parse(value, FIELD_V1)
    return parsed.commitment.hex(), wrapped_key_version(parsed.wrapped)


@pytest.fixture()
def mixed(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[dict[str, Any]]]:
    """A fields dataset of four shards: under alias/old version 1, under its version 2, under
    alias/new (the target: already rotated), and one record whose email is not a value."""
    monkeypatch.setenv("KMSBEAM_HOME", str(tmp_path / "home"))
    plain = tmp_path / "plain.jsonl"
    plain.write_text("".join(json.dumps({"id": i, "ssn": f"{i:09d}", "email": f"u{i}@example.com"}) + "\n"
                             for i in range(120)), encoding="utf-8")  # fmt: skip
    assert cli("keys", "create", "--alias", "new").code == 0
    encs = []
    for n, key in enumerate(["local:alias/old", "local:alias/old", "local:alias/new", "local:alias/old"]):
        if n == 1:
            assert cli("keys", "rotate", "alias/old").code == 0  # a second master key version
        enc = tmp_path / f"enc{n}"
        assert cli("encrypt", plain, enc, "--fields", ",".join(FIELDS), "--key", key,
                   "--max-records-per-key", "40", "-q").code == 0  # fmt: skip
        encs.append(enc)
    data = tmp_path / "data"
    data.mkdir()
    shutil.copy(encs[0] / "_kmsbeam.json", data / "_kmsbeam.json")
    for n, enc in enumerate(encs[:3]):
        (data / f"part-{n:05d}-of-00004.jsonl").write_text(
            "".join(p.read_text(encoding="utf-8") for p in sorted(enc.glob("part-*"))), encoding="utf-8")
    dead = _lines(encs[3])[0]  # its ssn's data key is in no other record
    dead["email"] = "not-a-value"
    (data / "part-00003-of-00004.jsonl").write_text(json.dumps(dead) + "\n", encoding="utf-8")
    return data, _lines(data)


@pytest.mark.parametrize("runner", [pytest.param("in_memory"),
                                    pytest.param("multi_processing", marks=pytest.mark.slow)])  # fmt: skip
def test_the_report_counts_every_data_key_exactly(cli: Any, mixed: tuple[Path, list[dict[str, Any]]],
                                                   tmp_path: Path, runner: str) -> None:  # fmt: skip
    data, records = mixed
    good = [r for r in records if r["email"] != "not-a-value"]
    before = {_head(r[f]) for r in records for f in FIELDS if r[f] != "not-a-value"}
    kept = {_head(r[f]) for r in good for f in FIELDS}
    versions = Counter(v for _, v in before)
    assert len(versions) == 3 and len(before) == len(kept) + 1  # three versions; one key only in the dead record

    dry = cli("rotate", data, tmp_path / "dry", "--to-key", "local:alias/new", "--dry-run")
    assert dry.code == 0, dry.err
    out = tmp_path / "rot"
    r = cli("rotate", data, out, "--to-key", "local:alias/new", "--max-dead-letters", "1", *RUNNERS[runner])
    assert r.code == 0, r.err
    rotation = json.loads((out / "_kmsbeam_rotation.json").read_text())
    target = rotation["target_version"]
    moved = sorted((k, v) for k, v in kept if v != target)
    assert rotation["source_versions"] == dict(versions)
    assert rotation["data_keys"] == [{"commitment": k, "from": v, "to": target} for k, v in moved]
    assert rotation["data_keys_moved"] == len(moved) and rotation["data_keys_new"] == 0
    counts = rotation["counts"]
    assert counts["records"] == len(records) and counts["records_written"] == len(good)
    assert counts["dead_letters"] == 1
    assert counts["values_skipped"] == sum(1 for r in good for f in FIELDS if _head(r[f])[1] == target)
    assert counts["values_rewrapped"] == 1 + sum(1 for r in good for f in FIELDS if _head(r[f])[1] != target)
    assert _row(r.out, "data keys moved") == f"{len(moved):,}"
    assert _row(dry.out, "values") == f"{2 * len(records) - 1:,}" and _row(dry.out, "data keys") == f"{len(before):,}"
    assert _row(dry.out, "data keys to move") == f"{sum(1 for _, v in before if v != target):,}"
    rotated = {_head(r[f]) for r in _lines(out) for f in FIELDS}
    assert rotated == {(k, target) for k, _ in kept}
    assert not (out / "_rotation_keys").exists()


def test_a_rewrap_job_reads_no_value_twice(mixed: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    """The rewrap job's graph: the key rows come from the rewrap step (no inventory of input
    and output values, no Distinct); a re-encryption still names its new keys from values."""
    import argparse

    from kmsbeam.pipelines.rotate.cmd import add_rotate_parser
    from kmsbeam.pipelines.rotate.job import rotator_for
    from kmsbeam.pipelines.rotate.records import _build

    parser = argparse.ArgumentParser()
    add_rotate_parser(parser.add_subparsers())
    names = {}
    for extra in ([], ["--reencrypt"]):
        args = parser.parse_args(["rotate", str(mixed[0]), str(tmp_path / "out"), "--to-key", "local:alias/new", *extra])
        rotator: Any = rotator_for(args, [])
        p = beam.Pipeline()
        _build(p, rotator.plan, rotator.to_key, rotator.version, args)
        names[bool(extra)] = [t.unique_name for t in p.to_runner_api().components.transforms.values()]
    assert not [n for n in names[False] if "Distinct" in n or "Keys_" in n], names[False]
    assert not [n for n in names[False] + names[True] if "OnePerElement" in n or "/Batch" in n]  # lists end to end
    assert [n for n in names[False] if n.startswith("Rotate/") and n.endswith("WriteKeys")]
    assert [n for n in names[True] if "Distinct" in n]


def test_the_rewrap_step_writes_a_few_rows_per_bundle(mixed: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    data, records = mixed
    good = [r for r in records if r["email"] != "not-a-value"]
    prefix = tmp_path / "keys" / "rows"
    with beam.Pipeline() as p:
        _ = (p | beam.Create(records)
             | RewrapDataKeys("local:alias/new", FIELDS, key_inventory=str(prefix)).with_dead_letters())  # fmt: skip
    lines = [line for f in sorted(prefix.parent.glob("rows-*.jsonl")) for line in f.read_text().splitlines()]
    before, after = merge_rows(lines)
    assert set(before.items()) == {_head(r[f]) for r in records for f in FIELDS if r[f] != "not-a-value"}
    assert len(set(after.values())) == 1 and len(set(before.values())) == 3  # all under the target now
    assert set(after) == {_head(r[f])[0] for r in good for f in FIELDS}
    assert len(lines) < len(records)  # rows per bundle and data key, not per value


def test_a_batched_rewrap_takes_and_gives_lists(mixed: tuple[Path, list[dict[str, Any]]]) -> None:
    _, records = mixed
    with beam.Pipeline() as p:
        good, dead = (p | beam.Create([records[:100], records[100:]])
                      | RewrapDataKeys("local:alias/new", FIELDS).batched().with_dead_letters())  # fmt: skip
        sizes = good | "Sizes" >> beam.Map(len)
        bad = dead | "Ids" >> beam.Map(lambda letter: letter["record"]["id"])
        assert_that(sizes, equal_to([100, len(records) - 101]), label="lists")
        assert_that(bad, equal_to([records[-1]["id"]]), label="dead")


def test_binary_values_are_named_by_their_headers(mixed: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    plain = [{"id": i, "ssn": f"{i:09d}"} for i in range(50)]
    prefix, out = tmp_path / "bin" / "rows", tmp_path / "bin" / "values"
    with beam.Pipeline() as p:
        _ = (p | beam.Create(plain) | EncryptFields("local:alias/old", ["ssn"], encoding="bytes")
             | RewrapDataKeys("local:alias/new", ["ssn"], key_inventory=str(prefix))
             | beam.Map(lambda r: bytes(r["ssn"]).hex()) | beam.io.WriteToText(str(out)))  # fmt: skip
    before, after = merge_rows(line for f in sorted(prefix.parent.glob("rows-*.jsonl"))
                               for line in f.read_text().splitlines())  # fmt: skip
    values = [bytes.fromhex(line) for f in sorted(out.parent.glob("values-*")) for line in f.read_text().splitlines()]
    assert len(values) == 50 and before and set(before) == set(after)
    heads = set()
    for value in values:
        parsed = parse(value, FIELD_V1)
        heads.add((parsed.commitment.hex(), wrapped_key_version(parsed.wrapped)))
    assert heads == set(after.items()) and not set(before.values()) & set(after.values())
