"""atheris harness: emulator_http (``targets.TARGETS["emulator_http"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "emulator_http"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
