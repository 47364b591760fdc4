"""atheris harness: object_metadata (``targets.TARGETS["object_metadata"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "object_metadata"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
