"""Parquet PME and cell columns with a kms-emulator:// key (the official SDK over HTTP)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmsbeam.formats.parquet import crypto_factory
from tests.parquet.conftest import events

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from emulator_key import SECRET, emulator_key  # noqa: E402


@pytest.mark.parametrize("mode", ["pme", "cells"])
def test_parquet_round_trip_through_the_emulator(cli: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    crypto_factory().remove_cache_entries_for_all_tokens()
    source = tmp_path / "events.parquet"
    pq.write_table(events(1500), source, row_group_size=600)
    with emulator_key(tmp_path / "kms", monkeypatch) as (server, key):
        enc, plain = tmp_path / "enc", tmp_path / "plain"
        r = cli("encrypt", source, enc, "--columns", "ssn,contact.email", "--key", key, "--parquet-mode", mode)
        assert r.code == 0, r.err
        assert SECRET not in r.out + r.err + (enc / "_kmsbeam.json").read_text()
        r = cli("decrypt", enc, plain)
        assert r.code == 0, r.err
        got = pa.concat_tables(pq.read_table(f) for f in sorted(plain.glob("part-*.parquet")))
        assert got.sort_by("id").equals(events(1500))
        actions = [json.loads(x)["eventName"] for x in server.audit.path.read_text().splitlines()]
        assert actions.count("GenerateDataKey") >= 1 and actions.count("Decrypt") >= 1
