"""Smoke test of ``python -m benchmarks.streaming`` (issue 19's figures) at a tiny size: both rows
of the KMS-calls table with their audit-log counts, the nonce check with no duplicate, the
command in the footer, and the emulator child stopped.

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

from benchmarks import _children, streaming  # noqa: E402

LOAD = re.compile(r"\d+\.\d\d/\d+\.\d\d/\d+\.\d\d")  # min/mean/max
ENV = ("KMSBEAM_HOME", "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET",
       "ALIBABA_CLOUD_SECURITY_TOKEN")  # fmt: skip


def test_both_sides_and_the_nonce_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    started = len(_children.STARTED)
    out = io.StringIO()
    argv = ["--records", "24", "--nonce-values", "20000", "--nonce-max-records", "3000",
            "--json", str(tmp_path / "s.json")]  # fmt: skip
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        assert streaming.main(argv) == 0
    lines = out.getvalue().splitlines()
    rows = {line.split("  ")[0]: line for line in lines if LOAD.search(line) and not line.startswith("Bundle")}
    assert list(rows) == [*streaming.SIDES, "2 x EncryptFields.batched(), one key"]
    assert lines[-1] == "command: python -m benchmarks.streaming " + " ".join(argv)

    res = json.loads((tmp_path / "s.json").read_text())
    per, reuse = (res["sides"][name] for name in streaming.SIDES)
    assert per["GenerateDataKey"] == per["Decrypt"] == 24  # one data key per 1-record bundle
    assert 1 <= reuse["GenerateDataKey"] <= 2 and 1 <= reuse["Decrypt"] <= 2  # across bundles
    assert "3,600,000" in rows["per bundle"].split()  # 2 calls a record: 3.6 M of each an hour
    nonces = res["nonces"]
    assert nonces["values"] == 20000 and nonces["duplicates"] == 0
    assert nonces["keys"] == nonces["GenerateDataKey"] >= 7  # the keys rotated: 20,000 / 3,000
    assert nonces["most per key"] <= 3000
    assert nonces["shared keys"] >= 1  # a data key passed from one transform to the other (the shelf)
    assert rows["2 x EncryptFields.batched(), one key"].split()[-5] == "0"  # duplicate (K, C)
    new = _children.STARTED[started:]
    assert len(new) == 1 and all(not Path(f"/proc/{pid}").exists() for pid in new)  # the emulator


def test_the_nonce_check_with_keys_spent_inside_a_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """max_records 700 < the 1,000-record lists: every list is split between two data keys."""
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    argv = ["--records", "0", "--nonce-values", "20000", "--nonce-max-records", "700",
            "--json", str(tmp_path / "n.json")]  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        assert streaming.main(argv) == 0
    res = json.loads((tmp_path / "n.json").read_text())
    assert res["sides"] == {}
    nonces = res["nonces"]
    assert nonces["values"] == 20000 and nonces["duplicates"] == 0 and nonces["per list"] == 1000
    assert nonces["keys"] == nonces["GenerateDataKey"] >= 29 and nonces["most per key"] <= 700
