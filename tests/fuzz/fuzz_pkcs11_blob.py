"""atheris harness: pkcs11_blob (``targets.TARGETS["pkcs11_blob"]``; see ``fuzzmain``)."""

from __future__ import annotations

import fuzzmain

NAME = "pkcs11_blob"


def TestOneInput(data: bytes) -> None:  # noqa: N802 (the name libFuzzer harnesses use)
    fuzzmain.target(NAME).check(data)


if __name__ == "__main__":
    fuzzmain.run(NAME)
