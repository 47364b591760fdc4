"""Smoke test of ``python -m benchmarks.instance_gateway`` (issue 20's figures) at a tiny size: every
row in order, the audit log's counts matching the calls exactly, the decrypted jobs equal to their
input, the command in the footer, and every child (the emulator, the ClientKey issue, the direct
SDK loop, the jobs) and kmsbeam's instance-SDK helper gone.

Counts and shape only: timings are never asserted (they belong to the benchmark's output).
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # benchmarks/ is not installed

from benchmarks import _children, instance_gateway  # noqa: E402
from benchmarks._instance_rows import helper_pids  # noqa: E402

LOAD = re.compile(r"\d+\.\d\d/\d+\.\d\d/\d+\.\d\d")  # min/mean/max
ENV = ("KMSBEAM_HOME", "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN",
       "KMSBEAM_KMS_CLIENT_KEY_FILE", "KMSBEAM_KMS_CLIENT_KEY", "KMSBEAM_KMS_CLIENT_KEY_PASSWORD",
       "KMSBEAM_KMS_CLIENT_KEY_PASSWORD_FILE", "KMSBEAM_KMS_INSTANCE_CA", "KMSBEAM_KEY_SOURCES")  # fmt: skip


@pytest.mark.slow  # ~30 s: four whole jobs as child processes
def test_every_row_with_exact_counts_and_no_child_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from kmsbeam.alikms import sdk_python

    sdk_python()  # a missing SDK fails here, saying how to install it (CI installs it)
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    started = len(_children.STARTED)
    out = io.StringIO()
    argv = ["--calls", "5", "--records", "200", "--json", str(tmp_path / "i.json")]
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert instance_gateway.main(argv) == 0
    lines = out.getvalue().splitlines()
    rows = {line.split("  ")[0]: line for line in lines if LOAD.search(line) and not line.startswith("started")}
    assert list(rows) == [*instance_gateway.CALL_ROWS, *instance_gateway.JOB_ROWS]
    assert lines[-1] == "command: python -m benchmarks.instance_gateway " + " ".join(argv)

    res = json.loads((tmp_path / "i.json").read_text())
    for name, row in res["calls"].items():
        action = name.split(", ")[0]
        assert row["calls"] == row["good"] == 5
        assert row["audit"] == {action: 5}  # exactly the timed calls, no retry, no error
        assert f"{action} 5" in rows[name]
    jobs = res["jobs"]
    for name, row in jobs.items():
        assert row["records"] == 200 and not any(k.startswith("error") for k in row["audit"])
    assert jobs["encrypt, alibaba-kms-instance://"]["audit"].get("AdvanceGenerateDataKey", 0) >= 1
    assert jobs["decrypt, alibaba-kms-instance://"]["audit"].get("AdvanceDecrypt", 0) >= 1
    assert jobs["encrypt, kms-emulator://"]["audit"].get("GenerateDataKey", 0) >= 1
    assert jobs["decrypt, kms-emulator://"]["audit"].get("Decrypt", 0) >= 1
    for name in ("decrypt, alibaba-kms-instance://", "decrypt, kms-emulator://"):
        assert jobs[name]["check"] == jobs[name]["digest"] and jobs[name]["check"][0] == 200
        assert "checked: 200 records, hash equal" in rows[name]
    assert not any(k.startswith(("Advance", "error")) for k in jobs["encrypt, kms-emulator://"]["audit"])

    new = _children.STARTED[started:]
    assert len(new) == 7  # emulator, client-key, direct SDK loop, four jobs
    assert all(not Path(f"/proc/{pid}").exists() for pid in new)
    assert res["helpers left"] == [] and helper_pids() == []
