"""atheris harness: alikms_blob (``targets.TARGETS["alikms_blob"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "alikms_blob"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
