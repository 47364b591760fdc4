"""atheris harness: parquet_cells_metadata (``targets.TARGETS["parquet_cells_metadata"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "parquet_cells_metadata"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
