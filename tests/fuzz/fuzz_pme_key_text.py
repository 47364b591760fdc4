"""atheris harness: pme_key_text (``targets.TARGETS["pme_key_text"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "pme_key_text"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
