"""atheris harness: emulator_signed (``targets.TARGETS["emulator_signed"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "emulator_signed"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
