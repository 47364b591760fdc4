"""What the README says about the quickstart, the OSS cat example and plaintext-footer PME
files is what the code does."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kmsbeam.oss import LoopbackOssServer, clear_clients
from tests.pipelines.conftest import EXAMPLES, shard_lines

ROOT = EXAMPLES.parent
README = (ROOT / "README.md").read_text("utf-8")


def test_quickstart_paths_in_the_readme_are_the_scripts() -> None:
    script = (EXAMPLES / "quickstart.sh").read_text("utf-8")
    enc = re.search(r"^enc=(\S+)$", script, re.M)
    plain = re.search(r"^plain=(\S+)$", script, re.M)
    assert enc and plain
    quickstart = README.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    assert f"into `{enc.group(1)}`" in quickstart and f"into `{plain.group(1)}`" in quickstart


@pytest.fixture()
def oss_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackOssServer]:
    with LoopbackOssServer(buckets=["bucket"]) as server:
        for var, value in server.environ().items():
            monkeypatch.setenv(var, value)
        monkeypatch.delenv("ALIBABA_CLOUD_SECURITY_TOKEN", raising=False)
        clear_clients()
        yield server
        clear_clients()


def test_the_readme_cat_example_names_an_object_export_writes(cli, tmp_path: Path, oss_env: LoopbackOssServer) -> None:  # type: ignore[no-untyped-def]
    export = re.search(r"^kmsbeam export out/enc/ (oss://\S+/) ", README, re.M)
    cats = re.findall(r"^kmsbeam cat (oss://\S+) \| head$", README, re.M)
    assert export and len(cats) == 2 and len(set(cats)) == 1  # the CLI section and the OSS section agree
    dest, obj = export.group(1), cats[0]
    assert obj.startswith(dest)
    enc = tmp_path / "out" / "enc"
    assert cli("encrypt", EXAMPLES / "customers.jsonl", enc, "--fields", "ssn", "-q").code == 0
    r = cli("export", f"{enc}/", dest, "--key", "local:alias/export", "-q")
    assert r.code == 0, r.err
    shown = cli("cat", obj)
    assert shown.code == 0, shown.err
    assert sorted(shown.out.splitlines()) == sorted(shard_lines(enc))


def test_a_plaintext_footer_shows_schema_rows_and_plaintext_columns_only(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    source = tmp_path / "events.parquet"
    pq.write_table(pa.table({"id": [1, 2, 3], "ssn": ["a", "b", "c"], "name": ["x", "y", "z"]}), source)
    for footer in ("plain", "encrypted"):
        flags = ["--plaintext-footer"] if footer == "plain" else []
        r = cli("encrypt", source, tmp_path / footer, "--parquet-mode", "pme", "--columns", "ssn", "-q", *flags)
        assert r.code == 0, r.err
    plain = next((tmp_path / "plain").glob("part-*.parquet"))
    f = pq.ParquetFile(plain)
    assert f.schema_arrow.names == ["id", "ssn", "name"] and f.metadata.num_rows == 3
    batch = next(f.iter_batches(columns=["id", "name"]))
    assert batch.to_pydict() == {"id": [1, 2, 3], "name": ["x", "y", "z"]}
    assert f.read(columns=["name"]).to_pydict() == {"name": ["x", "y", "z"]}
    # what the README says fails, even for plaintext columns only
    for read in (lambda: pq.read_table(plain), lambda: pq.read_table(plain, columns=["id", "name"]),
                 lambda: f.read(columns=["id", "name"])):  # fmt: skip
        with pytest.raises(OSError, match="Cannot decrypt ColumnMetadata"):
            read()
    with pytest.raises(OSError):
        f.read(columns=["ssn"])  # the encrypted column stays unreadable
    with pytest.raises(OSError):
        pq.ParquetFile(next((tmp_path / "encrypted").glob("part-*.parquet")))  # nothing without keys
