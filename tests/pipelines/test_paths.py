"""kmsbeam.pipelines.paths on local paths: absolute paths, URLs checked, never pathlib."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from kmsbeam import ConfigurationError
from kmsbeam.pipelines import paths


def test_local_paths_are_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert paths.normalize("out") == str(tmp_path / "out")
    assert paths.normalize("in/*.jsonl") == str(tmp_path / "in" / "*.jsonl")
    assert paths.normalize("out/").endswith("/out/")


def test_urls_keep_both_slashes() -> None:
    assert paths.normalize("oss://b/enc/") == "oss://b/enc/"
    assert paths.join("oss://b/enc/", "_kmsbeam.json") == "oss://b/enc/_kmsbeam.json"
    assert paths.join("oss://b", "x", "y") == "oss://b/x/y"
    assert paths.parent("oss://b/enc/part-0") == "oss://b/enc"
    assert paths.parent("oss://b/x") == "oss://b"
    assert paths.basename("oss://b/enc/part-0") == "part-0"
    assert paths.basename("oss://b/enc/") == "enc"
    assert paths.scheme("OSS://b/x") == "oss" and paths.scheme("/tmp/x") is None


@pytest.mark.parametrize("url", ["nosuch://bucket/x", "gcsx://b/k/*.jsonl"])
def test_unknown_scheme_is_one_sentence(url: str) -> None:
    with pytest.raises(ConfigurationError, match=r"no filesystem handles \w+:// paths \(the input\)"):
        paths.normalize(url, "the input")


def test_a_url_that_lost_a_slash_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="one slash"):
        paths.normalize("oss:/bucket/enc", "the output")


def test_local_files(tmp_path: Path) -> None:
    target = paths.join(str(tmp_path), "a", "b", "x.bin")
    paths.write_bytes(target, b"data")
    assert paths.read_bytes(target) == b"data" and paths.exists(target) and paths.size(target) == 4
    assert paths.is_dir(str(tmp_path / "a")) and not paths.is_dir(target)
    assert paths.list_dir(str(tmp_path)) == [target]
    assert paths.match(str(tmp_path / "a" / "*")) == []  # b is a directory, not a file
    assert paths.list_dir(str(tmp_path / "missing")) == []
    paths.delete([target, target + ".missing"])
    assert not os.path.exists(target)
    paths.remove_tree(str(tmp_path / "a"))
    assert not (tmp_path / "a").exists()


def test_manifest_kind_tells_datasets_from_exports(tmp_path: Path) -> None:
    from kmsbeam.pipelines.manifest import MANIFEST_NAME, Manifest, manifest_kind

    dataset, export, empty, broken = (tmp_path / n for n in ("ds", "exp", "empty", "broken"))
    for d in (dataset, export, empty, broken):
        d.mkdir()
    Manifest(mode="fields", fields=["ssn"], key="local:alias/k", format="jsonl").write(str(dataset))
    (export / MANIFEST_NAME).write_text('{"kmsbeam_export": 1, "key": "local:alias/k"}')
    (broken / MANIFEST_NAME).write_text('{"kmsbeam_dat')
    assert manifest_kind(str(dataset)) == "dataset"
    assert manifest_kind(str(export)) == "export"
    assert manifest_kind(str(empty)) is None
    assert manifest_kind(str(broken)) == "dataset"  # decrypt then says what is wrong with it
    assert manifest_kind(str(dataset / MANIFEST_NAME)) is None and manifest_kind(str(tmp_path / "*")) is None
    assert Manifest.read(str(dataset)) == Manifest.read(dataset)  # str or Path
    assert Manifest.read(str(empty)) is None
