"""Issue 15 part 1 for ``kmsbeam export`` and ``kmsbeam cat``: launcher-relative paths are made
absolute, an unknown scheme is one sentence (exit 2) and never a local folder named after it,
and an export restores into any filesystem."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from kmsbeam.oss import oss_client
from kmsbeam.pipelines.cli import main


@pytest.fixture()
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cwd = tmp_path / "cwd"
    (cwd / "src" / "sub").mkdir(parents=True)
    monkeypatch.chdir(cwd)
    return cwd


def test_a_relative_input_exports_and_restores_through_oss(
    bucket: str, workdir: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    (workdir / "src" / "a.jsonl").write_bytes(b'{"id": 1}\n')
    (workdir / "src" / "sub" / "b.csv").write_bytes(b"id\n2\n")
    dest = f"oss://{bucket}/exp/"
    assert main(["export", "src", dest, "-q"]) == 0
    names = sorted(i.url[len(dest):] for i in oss_client().list(dest))
    assert names == ["_kmsbeam.json", "a.jsonl.kmsb", "sub/b.csv.kmsb"]
    assert main(["decrypt", dest, f"oss://{bucket}/back/", "-q"]) == 0  # OSS to OSS
    assert oss_client().get(f"oss://{bucket}/back/sub/b.csv") == b"id\n2\n"
    capsysbinary.readouterr()
    assert main(["cat", dest + "a.jsonl.kmsb"]) == 0
    assert capsysbinary.readouterr().out == b'{"id": 1}\n'
    assert sorted(os.listdir(workdir)) == ["src"]  # no ./oss: folder


def test_unknown_schemes_are_refused_and_write_nothing(
    bucket: str, workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (workdir / "src" / "a.jsonl").write_bytes(b'{"id": 1}\n')
    for argv in (["export", "src", "nosuch://b/exp/"], ["export", "nosuch://b/in/", f"oss://{bucket}/x/"],
                 ["cat", "nosuch://b/a.kmsb"], ["decrypt", f"oss://{bucket}/x/", "nosuch://b/out/"]):  # fmt: skip
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert "no filesystem handles nosuch://" in err and err.count("\n") == 1, err
    assert sorted(os.listdir(workdir)) == ["src"]
    assert not list(oss_client().list(f"oss://{bucket}/"))
