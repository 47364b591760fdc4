"""Helpers for the CLI tests: run ``kmsbeam`` in-process and read its output shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from kmsbeam.pipelines.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@dataclass
class Run:
    code: int
    out: str
    err: str


@pytest.fixture()
def cli(capsys: pytest.CaptureFixture[str]):  # type: ignore[no-untyped-def]
    """``cli("encrypt", IN, OUT, "--fields", "ssn")`` -> Run(code, stdout, stderr)."""

    def run(*argv: object) -> Run:
        capsys.readouterr()
        code = main([str(a) for a in argv])
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


@pytest.fixture()
def customers() -> Path:
    return EXAMPLES / "customers.jsonl"


def shard_lines(directory: Path, pattern: str = "part-*") -> list[str]:
    """All lines of the shards in ``directory`` (text formats), in no particular order."""
    lines: list[str] = []
    for shard in sorted(directory.glob(pattern)):
        lines += shard.read_text(encoding="utf-8").splitlines()
    return lines


def table_value(table: str, row: str) -> str:
    """The value of one row of the summary table (``  data keys generated   1``)."""
    for line in table.splitlines():
        if line.startswith("  ") and line.strip().startswith(row + "  "):
            return line.strip()[len(row):].strip()
    raise AssertionError(f"no row {row!r} in:\n{table}")
