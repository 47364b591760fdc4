"""A private SoftHSM2 for the PKCS#11 tests: its own config and token directory in tmp.

``SOFTHSM2_CONF`` is set here, once per test session, before anything in this process calls
``pkcs11.lib()`` (SoftHSM reads it at C_Initialize). The tokens are listed in
``pkcs11_helpers``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from pkcs11_helpers import MODULE, PIN, PIN_B, PIN_ENV, PIN_ENV_B, SO_PIN, Hsm, free_slot, softhsm


@pytest.fixture(scope="session", autouse=True)
def hsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hsm]:
    if shutil.which("softhsm2-util") is None or not Path(MODULE).exists():
        pytest.skip("SoftHSM2 is not installed (apt-get install softhsm2 opensc)")
    root = tmp_path_factory.mktemp("softhsm")
    tokendir = root / "tokens"
    tokendir.mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(f"directories.tokendir = {tokendir}\nobjectstore.backend = file\nlog.level = ERROR\n")
    saved = {k: os.environ.get(k) for k in ("SOFTHSM2_CONF", PIN_ENV, PIN_ENV_B)}
    os.environ.update({"SOFTHSM2_CONF": str(conf), PIN_ENV: PIN, PIN_ENV_B: PIN_B})
    env = dict(os.environ)
    for label, pin in (("etl", PIN), ("second", PIN_B)):
        softhsm(env, "--init-token", "--free", "--label", label, "--so-pin", SO_PIN, "--pin", pin)
    subprocess.run(["pkcs11-tool", "--module", MODULE, "--slot", str(free_slot(env)), "--init-token",
                    "--label", "nopin", "--so-pin", SO_PIN], capture_output=True, env=env, check=True)  # fmt: skip
    import pkcs11

    from kmsbeam.pkcs11 import _library

    loaded = pkcs11._loaded.get(MODULE)
    if loaded is not None:  # someone loaded SoftHSM before us: make it read our config
        loaded.reinitialize()
        _library.reinitialize(MODULE)
    yield Hsm(conf, tokendir, free_slot(env), env)
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture()
def kek(hsm: Hsm) -> str:
    """The URI of a fresh KEK made by ``create_kek`` on token etl."""
    return hsm.new_kek()
