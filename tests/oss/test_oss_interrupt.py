"""Ctrl-C mid-write with OUTPUT on oss://: a real ``kmsbeam decrypt`` subprocess, writing to the
loopback OSS server over HTTP, gets SIGINT while shards are being uploaded; it exits 130 with
one sentence and the output prefix holds exactly what it held before (no staged plaintext), and
no multipart upload of the job is left on the store. Where the SIGINT lands decides which writer
state it interrupts, so the discard step is also checked on its own against the hardest case:
uploads whose ids only the store knows (a writer interrupted while starting its upload)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from typing import Any

import oss2
import pytest

from kmsbeam.oss import LoopbackOssServer
from kmsbeam.pipelines.cleanup import Staging
from kmsbeam.pipelines.spec import JobSpec, Plan

ROOT = Path(__file__).resolve().parents[2]


def _kmsbeam(home: Path, *argv: object) -> subprocess.Popen[str]:
    env = {**os.environ, "KMSBEAM_HOME": str(home)}  # the bucket fixture put the OSS settings here
    return subprocess.Popen([sys.executable, "-m", "kmsbeam.pipelines", *map(str, argv)], cwd=ROOT,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


@pytest.mark.slow
def test_sigint_mid_upload_leaves_the_oss_prefix_as_it_was(
    oss_server: LoopbackOssServer, bucket: str, tmp_path: Path
) -> None:
    home, source = tmp_path / "home", tmp_path / "big.jsonl"
    with source.open("w") as f:
        for i in range(60_000):
            f.write(json.dumps({"id": i, "ssn": f"900-{i % 100:02d}-{i:06d}", "note": "x" * 100}) + "\n")
    proc = _kmsbeam(home, "encrypt", source, tmp_path / "enc", "--fields", "ssn", "-q")
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    oss_server.objects(bucket)  # the bucket exists and is empty but for what we put
    before = {"plain/keep.txt": b"not kmsbeam's"}
    env = oss_server.environ()
    raw = oss2.Bucket(oss2.Auth(env["ALIBABA_CLOUD_ACCESS_KEY_ID"], env["ALIBABA_CLOUD_ACCESS_KEY_SECRET"]),
                      oss_server.endpoint, bucket)  # fmt: skip
    raw.put_object("plain/keep.txt", before["plain/keep.txt"])

    proc = _kmsbeam(home, "decrypt", tmp_path / "enc", f"oss://{bucket}/plain/", "-q", "--overwrite")
    deadline = time.monotonic() + 120  # liveness bound, not a timing assertion
    writing = False
    while proc.poll() is None and time.monotonic() < deadline:
        staged = [k for k in oss_server.objects(bucket) if ".kmsbeam-staging-" in k]
        uploading = [u for u in oss_server.uploads() if u[0] == bucket and ".kmsbeam-staging-" in u[1]]
        if staged or uploading:
            writing = True
            break
        time.sleep(0.01)  # polling for the condition, not waiting for a time
    assert writing and proc.poll() is None, "the job ended before a shard was being uploaded"
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert stderr.strip().splitlines() == ["kmsbeam: error: interrupted; everything the job had written was removed"]
    assert {k: v for k, v in oss_server.objects(bucket).items() if k.startswith("plain/")} == before
    # no unfinished multipart upload keeps plaintext parts on the server either
    assert [u for u in oss_server.uploads() if u[0] == bucket] == []


def test_discard_aborts_every_upload_under_the_staging_prefixes_and_no_other(
    oss_server: LoopbackOssServer, bucket: str, raw_bucket: Any
) -> None:
    out, dead = f"oss://{bucket}/plain", f"oss://{bucket}/dl"
    plan = Plan(JobSpec("decrypt", "unused", out), [], "", None, out, dead)  # type: ignore[arg-type]
    staging = Staging.begin(plan)
    b = raw_bucket(bucket)
    base = f"oss://{bucket}/"
    theirs = [b.init_multipart_upload(k).upload_id for k in ("plain/other", "plain/.kmsbeam-staging-x/p")]
    staged = [f"{staging.stage_out[len(base):]}/part-0", f"{staging.stage_out[len(base):]}/beam-temp-1/x",
              f"{staging.stage_dead[len(base):]}/part-0"]  # fmt: skip
    for key in staged:  # no writer holds these ids: only the store can tell they exist
        upload = b.init_multipart_upload(key).upload_id
        b.upload_part(key, upload, 1, b"plaintext")
    b.init_multipart_upload(staged[0])  # a second, empty one for the same object
    staging.discard()
    assert sorted(u.upload_id for u in oss2.MultipartUploadIterator(b)) == sorted(theirs)
    assert plan.out_dir == out and plan.dead_dir == dead
