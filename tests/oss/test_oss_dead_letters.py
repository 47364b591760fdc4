"""Dead letters and staged output on oss:// (the loopback OSS server): sealed on OSS, nothing of
the staging left behind, ``kmsbeam dead-letters show`` reading them from OSS."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kmsbeam.oss import LoopbackOssServer
from kmsbeam.pipelines.cli import main

KEY = "local:alias/oss-dead-letters"
RECORDS = [{"id": i, "ssn": f"{i:03d}-45-6789", "email": f"u{i}@example.com"} for i in range(60)]


def _run(capsys: pytest.CaptureFixture[str], *argv: object) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_sealed_dead_letters_and_overwrite_on_oss(oss_server: LoopbackOssServer, bucket: str,
                                                  capsys: pytest.CaptureFixture[str], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    from kmsbeam.pipelines import paths

    monkeypatch.chdir(tmp_path)
    rows = [dict(r) for r in RECORDS]
    for row in rows[::20]:
        row.pop("ssn")  # 3 dead letters
    paths.write_bytes(f"oss://{bucket}/raw/x.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    out = f"oss://{bucket}/enc/"
    code, _, err = _run(capsys, "encrypt", f"oss://{bucket}/raw/x.jsonl", out, "--fields", "ssn", "--key", KEY)
    assert code == 3 and "3 of 60 records" in err, err
    objects = {k: v for k, v in oss_server.objects(bucket).items() if k.startswith("enc/")}
    assert not any(".kmsbeam-staging-" in k or "beam-temp" in k for k in objects), sorted(objects)
    dead = [k for k in objects if k.startswith("enc/_dead_letters/part-")]
    assert dead and "enc/_dead_letters/_kmsbeam_dead_letters.json" in objects
    assert not any(f"u{i}@example.com".encode() in objects[k] for k in dead for i in range(0, 60, 20))
    code, shown, err = _run(capsys, "dead-letters", "show", out + "_dead_letters", "--records", "--allow-pipe")
    assert code == 0 and "3  missing field: ssn" in shown, err
    opened = sorted(json.loads(x)["record"]["id"] for x in shown.splitlines() if x.startswith("{"))
    assert opened == [0, 20, 40]
    before = {k for k in oss_server.objects(bucket) if k.startswith("enc/part-")}
    code, _, err = _run(capsys, "encrypt", f"oss://{bucket}/raw/x.jsonl", out, "--fields", "email",
                        "--key", KEY, "--overwrite")  # fmt: skip
    assert code == 0, err
    after = {k: v for k, v in oss_server.objects(bucket).items() if k.startswith("enc/")}
    assert not any(k.startswith("enc/_dead_letters/") for k in after)  # the old dead letters went
    assert {k for k in after if k.startswith("enc/part-")} == before  # replaced in place
    assert json.loads(after["enc/_kmsbeam.json"])["fields"] == ["email"]
    assert not any(".kmsbeam-staging-" in k for k in after) and list(tmp_path.iterdir()) == []
