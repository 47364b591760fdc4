"""atheris harness: envelope_text_many (``targets.TARGETS["envelope_text_many"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "envelope_text_many"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
