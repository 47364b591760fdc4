"""The shape every transform shares: key first, checked options, dead letters by a new transform,
and an ``expand()`` that calls no key source."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import apache_beam as beam
import pyarrow as pa
import pytest
from apache_beam.pvalue import PCollection
from apache_beam.testing.util import assert_that, equal_to

from kmsbeam import ConfigurationError, KeyNotFoundError
from kmsbeam.keys.local import LocalKeySource
from kmsbeam.transforms import (
    DecryptCells,
    DecryptFields,
    DecryptObjects,
    DecryptRecords,
    EncryptCells,
    EncryptFields,
    EncryptObjects,
    EncryptRecords,
    ReadEncryptedParquet,
    ReencryptFields,
    ReencryptRecords,
    RewrapDataKeys,
    WriteEncryptedParquet,
    create_local_keys,
)
from tests.transforms.test_transforms import Pipeline

KEY = "local:alias/skeleton"
NEW = "local:alias/skeleton-new"  # never created: no transform may create it
DOWN = "kms-emulator://127.0.0.1:1/alias/down"  # nothing listens there: any call would fail
SCHEMA = pa.schema([("id", pa.int64()), ("ssn", pa.string())])

KEY_FIRST = {"key", "keys", "footer_key", "from_key", "to_key"}
PAIRS = [(EncryptFields, DecryptFields), (EncryptRecords, DecryptRecords), (EncryptCells, DecryptCells),
         (EncryptObjects, DecryptObjects), (WriteEncryptedParquet, ReadEncryptedParquet),
         (ReencryptFields, ReencryptRecords)]  # fmt: skip


def positional(cls: type) -> list[str]:
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    return [p.name for p in inspect.signature(cls).parameters.values() if p.kind in kinds]


@pytest.mark.parametrize(("enc", "dec"), PAIRS, ids=[e.__name__ for e, _ in PAIRS])
def test_the_key_comes_first_and_both_sides_of_a_format_take_the_same_arguments(enc: type, dec: type) -> None:
    for cls in (enc, dec, RewrapDataKeys):
        assert positional(cls)[0] in KEY_FIRST, f"{cls.__name__} takes its key first"
    if enc is WriteEncryptedParquet:  # the writer's key is the footer's; it also needs a schema
        assert positional(enc) == ["footer_key", "file_path_prefix", "schema"]
        assert positional(dec) == ["keys", "file_pattern"]
    elif enc is ReencryptFields:
        assert positional(enc) == ["from_key", "to_key", "fields"] and positional(dec) == ["from_key", "to_key"]
    else:
        assert positional(enc) == positional(dec)
    assert positional(RewrapDataKeys) == ["to_key", "fields"]


def test_rewrap_requires_its_target_key() -> None:
    with pytest.raises(TypeError):
        RewrapDataKeys()  # type: ignore[call-arg]
    with pytest.raises(ConfigurationError):
        RewrapDataKeys("", ["ssn"])


@pytest.mark.parametrize("make", [
    lambda: EncryptFields(KEY, ["ssn"], encoding="txt"),  # type: ignore[arg-type]
    lambda: EncryptRecords(KEY, encoding="base64"),  # type: ignore[arg-type]
    lambda: ReencryptFields(KEY, NEW, ["ssn"], encoding="TEXT"),  # type: ignore[arg-type]
    lambda: ReencryptRecords(KEY, NEW, encoding=None),  # type: ignore[arg-type]
    lambda: RewrapDataKeys(KEY, ["ssn"], mode="row"),  # type: ignore[arg-type]
])  # fmt: skip
def test_invalid_modes_and_encodings_fail_at_construction(make: Callable[[], Any]) -> None:
    with pytest.raises(ConfigurationError, match="must be one of"):
        make()


def every_transform(tmp_path: Path, key: str) -> list[tuple[Any, Any]]:
    """(transform, input) for every public transform under ``key``."""
    records = [{"id": 1, "ssn": "1"}]
    table = pa.Table.from_pylist(records, schema=SCHEMA)
    return [
        (EncryptFields(key, ["ssn"]), records), (DecryptFields(key, ["ssn"]), records),
        (EncryptRecords(key), records), (DecryptRecords(key), records),
        (EncryptCells(key, ["ssn"]), [table]), (DecryptCells(key, ["ssn"]), [table]),
        (EncryptObjects(key, str(tmp_path / "enc")), [str(tmp_path / "x")]),
        (DecryptObjects(key, str(tmp_path / "dec")), [str(tmp_path / "x.kmsb")]),
        (WriteEncryptedParquet(key, str(tmp_path / "pme"), SCHEMA, column_keys={"ssn": key}), records),
        (RewrapDataKeys(key, ["ssn"]), records), (ReencryptFields(key, key, ["ssn"]), records),
        (ReencryptRecords(key, key), records),
    ]  # fmt: skip


@pytest.mark.parametrize("key", [NEW, DOWN])
def test_building_a_pipeline_calls_no_key_source(tmp_path: Path, key: str) -> None:
    """A key that does not exist stays missing (nothing is created), and a KMS nobody answers
    is never asked (a call would fail), for every transform."""
    p = Pipeline()
    for i, (transform, inputs) in enumerate(every_transform(tmp_path, key)):
        _ = p | f"In{i}" >> beam.Create(inputs) | f"T{i}" >> transform
        if hasattr(transform, "with_dead_letters"):  # every transform but the Parquet writer
            _ = p | f"InDead{i}" >> beam.Create(inputs) | f"D{i}" >> transform.with_dead_letters()
    _ = p | "Read" >> ReadEncryptedParquet([key], str(tmp_path / "*.parquet"))
    with pytest.raises(KeyNotFoundError):
        LocalKeySource(NEW)  # not created by any expand()


def test_with_dead_letters_is_a_new_transform_and_leaves_the_original_as_it_was(tmp_path: Path) -> None:
    for transform, _ in [*every_transform(tmp_path, KEY), (ReadEncryptedParquet((), "x"), None)]:
        if isinstance(transform, WriteEncryptedParquet):  # a sink: no dead letters
            continue
        shown = transform.display_data()
        other = transform.with_dead_letters()
        assert other is not transform and type(other) is type(transform), type(transform).__name__
        assert other.display_data() == shown == transform.display_data()
    create_local_keys(KEY)
    plain = EncryptFields(KEY, ["ssn"])
    dead_lettered = plain.with_dead_letters()
    with Pipeline() as p:
        records = p | beam.Create([{"id": 1, "ssn": "1"}, {"id": 2}])
        good, dead = records | "WithDead" >> dead_lettered
        assert_that(good | beam.Map(lambda r: r["id"]), equal_to([1]), label="good")
        assert_that(dead | beam.Map(lambda d: (d["record"]["id"], d["reason"])),
                    equal_to([(2, "missing field: ssn")]), label="dead")  # fmt: skip
        alone = p | "Good" >> beam.Create([{"id": 3, "ssn": "3"}]) | "Plain" >> plain
        assert isinstance(alone, PCollection), "the original still returns one output"
    with pytest.raises(Exception, match="EncryptFields: missing field: ssn"):
        with Pipeline() as p:  # ... and still fails the pipeline on a bad record
            _ = p | beam.Create([{"id": 2}]) | plain


def test_display_data_comes_from_the_base() -> None:
    shown = DecryptFields(KEY, ["ssn"], kms_qps=5, key_cache_ttl=7, require_keys=[KEY]).display_data()
    assert shown["key"] == KEY and shown["kms_qps"] == 5 and shown["key_cache_ttl"] == 7.0
    assert shown["require_keys"] == KEY and shown["fields"] == "ssn"
    assert RewrapDataKeys(DOWN, ["ssn"], kms_qps=3).display_data()["kms_qps"] == 3


def test_create_local_keys_creates_each_missing_local_key_once() -> None:
    assert create_local_keys(NEW, NEW, DOWN) == [NEW]  # a KMS key is never created
    LocalKeySource(NEW)  # exists now
    assert create_local_keys(NEW) == []
