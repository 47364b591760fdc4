"""`kmsbeam rotate oss://.../ --in-place`: metadata-only rewrap of an export, on the emulator."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from kmsbeam.oss import LoopbackOssServer, oss_client
from kmsbeam.pipelines.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from emulator_key import emulator_key  # noqa: E402


def test_in_place_rotation_moves_no_object_bytes(oss_server: LoopbackOssServer, bucket: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    for n in range(3):
        (src / f"part-{n}.jsonl").write_bytes(b"".join(b'{"id": %d}\n' % i for i in range(2000 + n)))
    with emulator_key(tmp_path / "kms", monkeypatch, "alias/export", same_account=True) as (kms, key):
        dest = f"oss://{bucket}/exports/rot/"
        assert main(["export", str(src) + "/", dest, "--key", key]) == 0
        client = oss_client()
        names = [f"part-{n}.jsonl.kmsb" for n in range(3)]
        data = {n: client.get(dest + n) for n in names}
        engine = kms.engine
        cmk_a = engine.describe_key("alias/export").key_id
        engine.update_alias("alias/export", engine.create_key("CMK-B").key_id)

        before = oss_server.requests.copy()
        assert main(["rotate", dest, "--in-place"]) == 0
        made = oss_server.requests - before
        assert made["copy"] == 3 and made["put"] == 3  # 3 metadata copies; two manifests, the lock
        assert made["delete"] == 1  # the rotation lock, released
        assert made["get"] <= 2 and not made["upload_part"]  # reading the export manifest only
        engine.disable_key(cmk_a)
        engine.schedule_key_deletion(cmk_a, 7)
        assert {n: client.get(dest + n) for n in names} == data  # every byte as it was
        rotation = json.loads(client.get(dest + "_kmsbeam_rotation.json"))
        assert rotation["counts"]["rewrapped"] == 3 and rotation["counts"]["kms_calls_rewrap"] == 3
        restored = tmp_path / "restored"
        assert main(["decrypt", dest, str(restored)]) == 0
        for n in range(3):
            name = f"part-{n}.jsonl"
            assert (restored / name).read_bytes() == (src / name).read_bytes()

        before = oss_server.requests.copy()  # a second run: nothing to move
        assert main(["rotate", dest, "--in-place"]) == 0
        rotation = json.loads(client.get(dest + "_kmsbeam_rotation.json"))
        assert rotation["counts"]["skipped"] == 3 and rotation["counts"]["kms_calls_rewrap"] == 0
        assert (oss_server.requests - before)["copy"] == 0


def test_objects_that_cannot_be_rewrapped_are_counted_and_listed(
    oss_server: LoopbackOssServer, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for n in range(2):
        (src / f"part-{n}.jsonl").write_bytes(b'{"id": 1}\n' * (100 + n))
    with emulator_key(tmp_path / "kms", monkeypatch, "alias/export", same_account=True) as (kms, key):
        dest = f"oss://{bucket}/exports/bad/"
        assert main(["export", str(src) + "/", dest, "--key", key]) == 0
        engine = kms.engine
        cmk_a = engine.describe_key("alias/export").key_id
        engine.disable_key(cmk_a)
        assert main(["rotate", dest, "--in-place"]) == 2  # the target itself is disabled
        assert not oss_client().exists(dest + "_kmsbeam_rotation.json")
        engine.update_alias("alias/export", engine.create_key("CMK-B").key_id)
        assert main(["rotate", dest, "--in-place"]) == 1  # the old key cannot be used any more
        rotation = json.loads(oss_client().get(dest + "_kmsbeam_rotation.json"))
        assert rotation["counts"]["failed"] == 2 and rotation["counts"]["rewrapped"] == 0
        assert all(f["reason"].startswith("key disabled") for f in rotation["failures"])


def test_trusting_the_manifest_and_verifying_a_sample(oss_server: LoopbackOssServer, bucket: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    for n in range(4):
        (src / f"part-{n}.jsonl").write_bytes(b'{"id": %d}\n' % n * 500)
    with emulator_key(tmp_path / "kms", monkeypatch, "alias/export", same_account=True) as (kms, key):
        dest = f"oss://{bucket}/exports/trust/"
        assert main(["export", str(src) + "/", dest, "--key", key]) == 0
        kms.engine.update_alias("alias/export", kms.engine.create_key("CMK-B").key_id)
        assert main(["rotate", dest, "--in-place"]) == 0

        def audited() -> int:
            return len(kms.audit.path.read_text().splitlines())

        client = oss_client()
        seen = audited()
        assert main(["rotate", dest, "--in-place", "--trust-manifest"]) == 0
        assert audited() == seen  # the target's version from the rotation manifest: no KMS call
        assert json.loads(client.get(dest + "_kmsbeam_rotation.json"))["counts"]["skipped"] == 4
        assert main(["rotate", dest, "--in-place", "--verify-sample", "0.5"]) == 0
        verify = json.loads(client.get(dest + "_kmsbeam_rotation.json"))["verify"]
        assert verify["objects_sampled"] == verify["objects_decrypted"] == 2 and verify["failed"] == 0
        assert verify["bytes_read"] > 0
