"""Helpers of the PKCS#11 tests: the private SoftHSM2 (see conftest.py) and pkcs11-tool.

Tokens made by the session fixture in conftest.py:

=========  ==========================  ===============================================
label      PIN (environment variable)  used for
=========  ==========================  ===============================================
etl        KMSBEAM_TEST_PIN            almost everything
second      KMSBEAM_TEST_PIN_B          another token: cross-token rotation, other token
nopin      (user PIN not initialised)  the "user PIN not initialised" error
(free)     -                           ``Hsm.free_slot``: an uninitialised token
=========  ==========================  ===============================================
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

MODULE = "/usr/lib/softhsm/libsofthsm2.so"
PIN, PIN_B, SO_PIN = "etl-pin-1234", "b-pin-5678", "so-pin-0000"
PIN_ENV, PIN_ENV_B = "KMSBEAM_TEST_PIN", "KMSBEAM_TEST_PIN_B"
_labels = itertools.count()


@dataclass
class Hsm:
    """The test token directory and helpers to name keys and run OpenSC's pkcs11-tool."""

    conf: Path
    tokendir: Path
    free_slot: int
    env: dict[str, str] = field(default_factory=dict)

    def uri(self, obj: str | None = None, *, token: str = "etl", pin: str = f"env:{PIN_ENV}",
            key_id: bytes | None = None, module: str = MODULE, extra: str = "") -> str:  # fmt: skip
        path = [f"token={token}"]
        if obj is not None:
            path.append(f"object={obj}")
        if key_id is not None:
            path.append("id=" + "".join(f"%{b:02x}" for b in key_id))
        return f"pkcs11:{';'.join(path)}?module-path={module}&pin-source={quote(pin, safe=':/')}{extra}"

    @staticmethod
    def label(prefix: str = "kek") -> str:
        """A KEK label no other test uses (the tokens live for the whole session)."""
        return f"{prefix}-{os.getpid()}-{next(_labels)}"

    def new_kek(self, token: str = "etl", prefix: str = "kek") -> str:
        """Create a fresh KEK with ``create_kek``; its URI."""
        from kmsbeam.pkcs11 import create_kek

        pin = f"env:{PIN_ENV if token == 'etl' else PIN_ENV_B}"
        uri = self.uri(self.label(prefix), token=token, pin=pin)
        create_kek(uri)
        return uri

    def make_key(self, label: str, template: dict[Any, Any], token: str = "etl") -> None:
        """A token AES-256 key with ``template`` over the defaults, through kmsbeam's session
        (a second login from this process would fail: login is per process)."""
        from pkcs11 import KeyType

        from kmsbeam.pkcs11 import Pkcs11Config
        from kmsbeam.pkcs11._session import attach

        session = attach(Pkcs11Config.from_uri(self.uri(label, token=token)))
        session.run(lambda s: s.generate_key(KeyType.AES, 256, label=label, store=True, template=template))

    def tool(self, *args: str, token: str = "etl", pin: str = PIN) -> str:
        """Run pkcs11-tool logged in to ``token``; its stdout and stderr together."""
        cmd = ["pkcs11-tool", "--module", MODULE, "--token-label", token, "--login", "--pin", pin, *args]
        out = subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=30)
        if out.returncode:
            raise AssertionError(f"pkcs11-tool {' '.join(args)} failed: {out.stdout}{out.stderr}")
        return out.stdout + out.stderr

    def objects(self, label: str, token: str = "etl", pin: str = PIN) -> list[str]:
        """pkcs11-tool's description of each secret key object labelled ``label``."""
        text = self.tool("--list-objects", "--type", "secrkey", token=token, pin=pin)
        blocks = re.split(r"(?m)^(?=Secret Key Object)", text)
        return [b for b in blocks if re.search(rf"(?m)^\s*label:\s*{re.escape(label)}\s*$", b)]


def softhsm(env: dict[str, str], *args: str) -> str:
    out = subprocess.run(["softhsm2-util", *args], capture_output=True, text=True, env=env, check=True)
    return out.stdout


def free_slot(env: dict[str, str]) -> int:
    text = softhsm(env, "--show-slots")
    for block in re.split(r"(?m)^(?=Slot \d+)", text):
        m = re.match(r"Slot (\d+)", block)
        if m and re.search(r"Initialized:\s+no", block):
            return int(m.group(1))
    raise AssertionError("SoftHSM offers no free slot")
