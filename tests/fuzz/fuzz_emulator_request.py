"""atheris harness: emulator_request (``targets.TARGETS["emulator_request"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "emulator_request"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
