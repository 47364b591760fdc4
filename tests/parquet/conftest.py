"""Fixtures for the Parquet tests: keys in the per-test keystore, tables, a CLI runner."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from kmsbeam import open_key_source

KEYS = {"pii": "local:alias/pii", "pci": "local:alias/pci", "foot": "local:alias/foot"}


@pytest.fixture()
def keys(kms_home: Path) -> dict[str, str]:
    """Three local keys (created), by short name."""
    for uri in KEYS.values():
        open_key_source(uri, create=True)
    return dict(KEYS)


def events(n: int = 1000) -> pa.Table:
    """A small table with a plaintext id, two sensitive strings and a struct."""
    return pa.table({
        "id": pa.array(range(n), pa.int64()),
        "ssn": [f"{i:03d}-45-{i % 10000:04d}" for i in range(n)],
        "card": [f"4111-1111-{i:08d}" if i % 9 else None for i in range(n)],
        "amount": [Decimal(i) / 100 for i in range(n)],
        "when": [dt.datetime(2026, 1, 1) + dt.timedelta(minutes=i) for i in range(n)],
        "contact": [{"email": f"u{i}@example.com", "zip": f"{i % 99999:05d}"} if i % 7 else None
                    for i in range(n)],
    }, schema=pa.schema([
        ("id", pa.int64()), ("ssn", pa.string()), ("card", pa.string()),
        ("amount", pa.decimal128(12, 2)), ("when", pa.timestamp("us")),
        ("contact", pa.struct([("email", pa.string()), ("zip", pa.string())])),
    ]))  # fmt: skip


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    """``cli("encrypt", IN, OUT, ...)`` -> Run(code, stdout, stderr), in this process."""
    from kmsbeam.pipelines.cli import main

    def run(*argv: object) -> Run:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def cli_subprocess(*argv: object, home: Path) -> Run:
    """The CLI in a child process: for anything that might abort a process."""
    import os

    env = {**os.environ, "KMSBEAM_HOME": str(home)}
    out = subprocess.run([sys.executable, "-m", "kmsbeam.pipelines", *map(str, argv)],
                         capture_output=True, text=True, env=env, timeout=120)  # fmt: skip
    return Run(out.returncode, out.stdout, out.stderr)


def table_value(table: str, row: str) -> str:
    """The value of one row of the CLI's summary table (``  data keys generated   1``)."""
    for line in table.splitlines():
        if line.startswith("  ") and line.strip().startswith(row + "  "):
            return line.strip()[len(row) :].strip()
    raise AssertionError(f"no row {row!r} in:\n{table}")
