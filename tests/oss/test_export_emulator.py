"""`kmsbeam export` to OSS and back with a kms-emulator:// key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from kmsbeam.oss import LoopbackOssServer
from kmsbeam.pipelines.cli import main

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from emulator_key import emulator_key  # noqa: E402


def test_export_and_decrypt_with_an_emulator_key(oss_server: LoopbackOssServer, bucket: str, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    src = tmp_path / "src"
    src.mkdir()
    (src / "part-00000.jsonl").write_bytes(b"".join(b'{"id": %d}\n' % i for i in range(5000)))
    with emulator_key(tmp_path / "kms", monkeypatch, "alias/export", same_account=True) as (_, key):
        dest = f"oss://{bucket}/exports/emulator/"
        assert main(["export", str(src) + "/", dest, "--key", key]) == 0
        restored = tmp_path / "restored"
        assert main(["decrypt", dest, str(restored)]) == 0
        assert (restored / "part-00000.jsonl").read_bytes() == (src / "part-00000.jsonl").read_bytes()
