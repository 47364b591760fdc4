"""A real shared library whose constructor leaves a marker file: the proof that data made
kmsbeam load a PKCS#11 module (``dlopen`` runs constructors before any PKCS#11 call)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

_SOURCE = r"""
#include <stdio.h>
__attribute__((constructor)) static void kmsbeam_marker(void) {
    FILE *f = fopen(MARKER, "w");
    if (f) { fputs("loaded\n", f); fclose(f); }
}
int C_GetFunctionList(void **list) { (void)list; return 5; }
"""


def build_marker_module(directory: Path, marker: Path) -> Path:
    """Compile ``directory/libevil.so``; loading it writes ``marker``."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is not installed")
    src = directory / "evil.c"
    src.write_text(_SOURCE, encoding="utf-8")
    out = directory / "libevil.so"
    define = f'-DMARKER="{marker}"'
    subprocess.run(["gcc", "-shared", "-fPIC", define, "-o", str(out), str(src)], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    src.unlink()
    return out


def evil_uri(module: Path, token: str = "etl", obj: str = "kek") -> str:
    return f"pkcs11:token={token};object={obj}?module-path={module}&pin-source=env:HOME"
