"""atheris harness: instance_blob (``targets.TARGETS["instance_blob"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "instance_blob"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
