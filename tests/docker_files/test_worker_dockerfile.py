"""The Beam worker image's Dockerfile, checked without Docker (none on the CI machine).

It must build on Beam's own Python SDK container of the Beam version kmsbeam is tested with,
install through ``.ci/install`` (the script CI runs) in its image mode, copy every source
folder the package maps, and keep Beam's entrypoint.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "docker" / "worker" / "Dockerfile"
INSTALL = ROOT / ".ci" / "install"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            found.append((word.upper(), " ".join(rest.split())))
    return found


def test_base_is_the_beam_sdk_image_of_the_installed_beam_and_python() -> None:
    froms = [args for word, args in instructions() if word == "FROM"]
    assert len(froms) == 1
    image, _, tag = froms[0].partition(":")
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    assert image == f"apache/beam_python{py}_sdk", froms[0]
    assert tag == version("apache-beam"), f"the image pins Beam {tag}, this environment has {version('apache-beam')}"


def test_installs_through_the_ci_install_script_in_image_mode() -> None:
    runs = [args for word, args in instructions() if word == "RUN"]
    install = [r for r in runs if ".ci/install" in r]
    assert len(install) == 1, runs
    assert "KMSBEAM_INSTALL_MODE=image" in install[0]
    assert not any(re.search(r"pip3? install", r) for r in runs), "install only through .ci/install"
    assert not any(word in ("ENTRYPOINT", "CMD") for word, _ in instructions())  # Beam's boot stays


def test_copies_every_source_folder_the_package_maps() -> None:
    copied = {p.rstrip("/") for word, args in instructions() if word == "COPY" for p in args.split()[:-1]}
    package_dirs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    top = {d.split("/")[0] for d in package_dirs.values()}
    assert top <= copied, top - copied
    assert {"pyproject.toml", "README.md", ".ci"} <= copied


def test_install_script_parses_and_keeps_the_ci_default() -> None:
    subprocess.run(["bash", "-n", str(INSTALL)], check=True)
    text = INSTALL.read_text(encoding="utf-8")
    assert 'mode="${KMSBEAM_INSTALL_MODE:-dev}"' in text
    assert "-e '.[test,bench]'" in text  # what CI (.ci/run) installs by default
    assert "softhsm2 opensc" in text and "apt-get update" in text
    bad = subprocess.run(["bash", str(INSTALL)], env={"PATH": "/usr/bin:/bin", "KMSBEAM_INSTALL_MODE": "nope"},
                         capture_output=True, text=True)  # fmt: skip
    assert bad.returncode == 2 and "dev or image" in bad.stderr
