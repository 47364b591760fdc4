"""atheris harness: jsonl_lines (``targets.TARGETS["jsonl_lines"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "jsonl_lines"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
