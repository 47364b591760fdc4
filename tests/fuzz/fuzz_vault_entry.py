"""atheris harness: vault_entry (``targets.TARGETS["vault_entry"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "vault_entry"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
