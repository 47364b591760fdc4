"""Smoke test of ``python -m benchmarks.vault`` (issue 18's figures) at a tiny size, on local disk
and on the loopback OSS server: every row, the counts, and ``vault rotate``'s zero data bytes.

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

from benchmarks import _children, vault  # noqa: E402
from benchmarks._vault_rows import JOBS  # noqa: E402

LOAD = re.compile(r"\d+\.\d\d/\d+\.\d\d/\d+\.\d\d")  # min/mean/max
ENV = ("KMSBEAM_HOME", "KMSBEAM_OSS_ENDPOINT", "KMSBEAM_OSS_REGION", "ALIBABA_CLOUD_ACCESS_KEY_ID",
       "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "KMSBEAM_KEY_SOURCES")  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("extra", [["--oss", "--emulator"]], ids=["oss-emulator"])  # local: same code
def test_every_row_and_vault_rotate_writes_no_data_byte(extra: list[str], tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    started = len(_children.STARTED)
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        code = vault.main(["--records", "1500", "--keys", "3", "--repeat", "1", "--json", str(tmp_path / "v.json"),
                           *extra])  # fmt: skip
    assert code == 0
    lines = out.getvalue().splitlines()
    table = lines[next(i for i, line in enumerate(lines) if line.startswith("job ")) :]
    rows = {line.split("  ")[0]: line for line in table if LOAD.search(line)}
    assert list(rows) == [*JOBS, *(name for name, *_ in vault.RATIOS)]
    assert ">= 100" in rows["dataset rotate / vault rotate"]
    assert any(line.startswith("output bytes: plaintext") and "v2/v1" in line for line in lines)

    runs = json.loads((tmp_path / "v.json").read_text())["jobs"]
    (rotated,) = runs["vault rotate"]["runs"]
    (encrypted,) = runs["encrypt v2"]["runs"]
    assert rotated["vault entries"] == 3 == int(runs["encrypt v1"]["runs"][0]["data keys generated"])
    assert rotated["data written"] == 0 and rotated["data read"] == 0  # not one data file touched
    assert 0 < rotated["vault written"] < 3 * 1024  # three new entries, nothing else
    assert encrypted["vault written"] > 0 and encrypted["data written"] > 0
    calls = rotated.get("audit calls", rotated["summary calls"])
    assert calls.get("ReEncrypt", calls.get("rewrap")) == 3  # one rewrap per data key
    assert "GenerateDataKey" not in calls and "Decrypt" not in calls
    assert rotated["data bytes read / written"] == "0 / 0"
    if extra:  # the audit log counted them, and the bytes went over HTTP
        assert "audit calls" in rotated and 0 < rotated["http in"] < 3 * 1024
    cells = rows["vault rotate"].split()
    assert cells[cells.index("rewrap" if not extra else "ReEncrypt") + 1] == "3"
    new = _children.STARTED[started:]
    assert len(new) >= len(JOBS) and all(not Path(f"/proc/{pid}").exists() for pid in new)
