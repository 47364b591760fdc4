"""atheris harness: key_uri (``targets.TARGETS["key_uri"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "key_uri"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
