"""atheris harness: envelope_v2 (``targets.TARGETS["envelope_v2"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "envelope_v2"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
