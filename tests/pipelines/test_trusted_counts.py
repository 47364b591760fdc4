"""The job summary's data keys and KMS calls are kmsbeam's own counts where the workers run in
the launcher's process: right on the BundleBasedDirectRunner, whose Beam metrics keep only a
bundle's counts. Checked against the emulator's audit log, which no runner can under-report."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from kmsbeam.emulator import EmulatorServer


@pytest.fixture()
def emulator(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_ID", "etl")
    monkeypatch.setenv("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "etl-secret")
    with EmulatorServer(tmp_path / "kms", {"etl": "etl-secret"}, rotation_check_seconds=None) as server:
        server.engine.create_alias("alias/pii", server.engine.create_key("pii").key_id)
        yield server


def audit(server: EmulatorServer) -> list[str]:
    return [json.loads(line)["eventName"] for line in server.audit.path.read_text().splitlines()]


def shown(out: str, label: str) -> int:
    found = re.search(rf"^\s*{re.escape(label)}\s+([\d,]+)\s*$", out, re.M)
    assert found, out
    return int(found.group(1).replace(",", ""))


def test_counts_on_the_bundle_based_runner_match_the_audit_log(cli: Any, tmp_path: Path, emulator: EmulatorServer) -> None:
    src = tmp_path / "in"
    src.mkdir()
    for f in range(4):  # one bundle per file at least: one data key each
        (src / f"part-{f}.jsonl").write_text("".join(json.dumps({"id": f * 100 + i, "ssn": f"{i:09d}"}) + "\n"
                                                     for i in range(100)))  # fmt: skip
    key = f"kms-emulator://{emulator.endpoint}/alias/pii"
    runner = ("--runner", "BundleBasedDirectRunner")
    before = audit(emulator).count("GenerateDataKey")
    r = cli("encrypt", f"{src}/*.jsonl", tmp_path / "enc", "--fields", "ssn", "--key", key, *runner)
    assert r.code == 0, r.err + r.out
    made = audit(emulator).count("GenerateDataKey") - before
    assert made >= 1
    assert shown(r.out, "data keys generated") == shown(r.out, "KMS calls: GenerateDataKey") == made
    before = audit(emulator).count("Decrypt")
    r = cli("decrypt", tmp_path / "enc", tmp_path / "plain", "--key", key, *runner)
    assert r.code == 0, r.err + r.out
    assert shown(r.out, "records out") == 400
    assert shown(r.out, "KMS calls: Decrypt") == audit(emulator).count("Decrypt") - before


@pytest.mark.parametrize(("args", "expected"), [
    ([], True),
    (["--direct_running_mode=in_memory"], True),
    (["--direct_running_mode=multi_processing", "--direct_num_workers=2"], False),
    (["--runner=BundleBasedDirectRunner"], True),
    (["--runner=PortableRunner", "--environment_type=LOOPBACK"], True),
    (["--runner=PortableRunner", "--environment_type=PROCESS"], False),
    (["--runner=FlinkRunner"], False),
])  # fmt: skip
def test_which_runners_count_in_this_process(args: list[str], expected: bool) -> None:
    from apache_beam.options.pipeline_options import PipelineOptions

    from kmsbeam.pipelines.runners import in_process

    assert in_process(PipelineOptions(args)) is expected
