"""The console entry in a real subprocess: ``python -m kmsbeam.pipelines``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import kmsbeam


def _kmsbeam(*args: object, home: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KMSBEAM_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "kmsbeam.pipelines", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=300, check=False)  # fmt: skip


def test_module_entry_round_trip_with_clean_output(customers: Path, tmp_path: Path, kms_home: Path) -> None:
    version = _kmsbeam("--version", home=kms_home)
    assert version.returncode == 0 and version.stdout.strip() == f"kmsbeam {kmsbeam.__version__}"
    enc = _kmsbeam("encrypt", customers, tmp_path / "enc", "--fields", "ssn,email,phone",
                   home=kms_home)  # fmt: skip
    assert enc.returncode == 0, enc.stderr
    # stderr: only the one-line key notice (no Beam log noise such as "apitools not found")
    notice = (f"kmsbeam: created key alias/kmsbeam-default in the local keystore {kms_home} "
              "(back it up: data encrypted with it cannot be decrypted without it)")  # fmt: skip
    assert enc.stderr.splitlines() == [notice]
    assert "records in" in enc.stdout
    dec = _kmsbeam("decrypt", tmp_path / "enc", tmp_path / "plain", home=kms_home)
    assert dec.returncode == 0 and dec.stderr == ""
    plain = min((tmp_path / "plain").glob("part-*")).read_text("utf-8").splitlines()
    assert sorted(plain) == sorted(customers.read_text("utf-8").splitlines())
    bad = _kmsbeam("decrypt", tmp_path / "missing", tmp_path / "x", home=kms_home)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.splitlines()) == 1


def test_public_names_resolve() -> None:
    from kmsbeam import pipelines

    assert set(pipelines.__all__) == {"JobResult", "JobSpec", "Manifest", "Plan", "main",
                                      "plan_decrypt", "plan_encrypt", "run_plan"}  # fmt: skip
    assert all(getattr(pipelines, name) is not None for name in pipelines.__all__)
