"""Issue 15 part 2: the same jobs on workers that share no directory with the launcher.

The launcher (the CLI in its own process, cwd and HOME) and the workers (forked by
``multi_processing``, or started by the PortableRunner's embedded job server through a boot
script that moves into another directory and HOME: ``cluster_helpers``) read and write only
the loopback OSS server, with keys from the kms-emulator (trusted by ``KMSBEAM_KEY_SOURCES``,
never found in data). encrypt, inspect, decrypt, rotate, export, cat and decrypt of the
export give exact results, and after every job no file is left in any working directory or
HOME. A launcher-relative path must reach the workers as the launcher's file: a decoy of the
same name in the workers' directory holds other records, so a leaked relative path fails.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from kmsbeam.oss import oss_client

from kmsbeam.formats.envelope import FIELD_V1, parse
from kmsbeam.keys.registry import wrapped_key_version

from tests.oss.conftest import bucket, oss_server  # noqa: F401  (fixtures)
from tests.pipelines.cluster_helpers import MODES, Dirs, canonical, kmsbeam, objects, records
from tests.pipelines.conftest import EXAMPLES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from emulator_key import emulator_key  # noqa: E402

pytestmark = pytest.mark.slow  # each case runs ~10 pipelines in fresh processes


@pytest.fixture()
def kms(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    """The emulator (one Alibaba account for KMS and OSS) and its key URI."""
    with emulator_key(tmp_path / "kms", monkeypatch, "alias/pii", same_account=True) as found:
        yield found


def _version(value: str) -> str:
    return wrapped_key_version(parse(value, FIELD_V1).wrapped)


def _ok(done: Any) -> str:
    assert done.code == 0, done.err[-3000:]
    return str(done.out)


@pytest.mark.parametrize("mode", MODES)
def test_jobs_on_oss_with_workers_elsewhere(mode: str, kms: tuple[Any, str], bucket: str, tmp_path: Path) -> None:
    server, key = kms
    dirs = Dirs(tmp_path / "cluster")
    lake = f"oss://{bucket}"
    raw = (EXAMPLES / "customers.jsonl").read_bytes()
    client = oss_client()
    client.put(f"{lake}/raw/customers.jsonl", raw)

    _ok(kmsbeam(dirs, mode, "encrypt", f"{lake}/raw/*.jsonl", f"{lake}/enc/", "--fields", "ssn,email",
                "--key", key))  # fmt: skip
    dirs.check_clean()
    enc = objects(f"{lake}/enc/")
    assert "_kmsbeam.json" in enc and any(n.startswith("part-") for n in enc)
    encrypted = records(f"{lake}/enc/")
    assert len(encrypted) == 1000 and all("930-55-5208" not in r for r in encrypted)

    _ok(kmsbeam(dirs, mode, "decrypt", f"{lake}/enc/", f"{lake}/plain/"))
    dirs.check_clean()
    assert records(f"{lake}/plain/") == canonical(raw.decode())

    engine = server.engine
    engine.update_alias("alias/pii", engine.create_key("CMK-B").key_id)
    _ok(kmsbeam(dirs, mode, "rotate", f"{lake}/enc/", f"{lake}/rot/", "--verify"))  # scratch on OSS
    dirs.check_clean()
    rotation = json.loads(client.get(f"{lake}/rot/_kmsbeam_rotation.json"))
    assert rotation["data_keys_moved"] >= 1 and rotation["counts"]["records"] == 1000
    assert rotation["verify"]["records_decrypted"] == 1000 and rotation["verify"]["dead_letters"] == 0
    target = rotation["target_version"]  # CMK-B's current version, and every value's now
    assert {_version(json.loads(r)["ssn"]) for r in records(f"{lake}/rot/")} == {target}
    assert target not in {_version(json.loads(r)["ssn"]) for r in encrypted}
    left = [n for n in objects(f"{lake}/rot/") if "journal" in n or "_rotation_keys" in n
            or "_kmsbeam_verify" in n or n.endswith(".lock")]  # fmt: skip
    assert not left
    _ok(kmsbeam(dirs, mode, "decrypt", f"{lake}/rot/", f"{lake}/plain-rot/"))
    dirs.check_clean()
    assert records(f"{lake}/plain-rot/") == canonical(raw.decode())

    _ok(kmsbeam(dirs, mode, "export", f"{lake}/raw/", f"{lake}/exp/", "--key", key))
    dirs.check_clean()
    assert objects(f"{lake}/exp/")["customers.jsonl.kmsb"] != raw
    _ok(kmsbeam(dirs, mode, "decrypt", f"{lake}/exp/", f"{lake}/restored/"))
    dirs.check_clean()
    assert objects(f"{lake}/restored/")["customers.jsonl"] == raw
    cat = kmsbeam(dirs, None, "cat", f"{lake}/exp/customers.jsonl.kmsb")
    assert cat.code == 0 and cat.out.encode() == raw, cat.err
    dirs.check_clean()

    # inspect a Parquet dataset written on the workers
    table = pa.Table.from_pylist([{"id": i, "ssn": f"123-45-{i:04d}"} for i in range(200)])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    client.put(f"{lake}/rawpq/in.parquet", sink.getvalue().to_pybytes())
    _ok(kmsbeam(dirs, mode, "encrypt", f"{lake}/rawpq/in.parquet", f"{lake}/encpq/", "--parquet-mode",
                "cells", "--columns", "ssn", "--key", key))  # fmt: skip
    dirs.check_clean()
    report = [json.loads(line) for line in _ok(kmsbeam(dirs, None, "inspect", f"{lake}/encpq/", "--json")).splitlines()]
    dirs.check_clean()
    assert report and all("error" not in r for r in report)
    versions = [c["key_versions"] for r in report for c in r["columns"] if c.get("key_versions")]
    assert versions == [[target]]  # the ssn cells, under CMK-B (after the move)
    _ok(kmsbeam(dirs, mode, "decrypt", f"{lake}/encpq/", f"{lake}/plainpq/"))
    dirs.check_clean()
    back = [pq.read_table(pa.BufferReader(data)) for name, data in objects(f"{lake}/plainpq/").items()
            if name.startswith("part-")]  # fmt: skip
    assert sorted(pa.concat_tables(back).to_pylist(), key=lambda r: r["id"]) == table.to_pylist()
    if mode == "portable":
        assert dirs.workers_started() >= 1  # the boot script started the workers


@pytest.mark.parametrize("mode", MODES)
def test_a_launcher_relative_path_is_the_launchers_file(mode: str, kms: tuple[Any, str], bucket: str,
                                                       tmp_path: Path) -> None:  # fmt: skip
    _, key = kms
    dirs = Dirs(tmp_path / "cluster")
    mine = "".join(json.dumps({"id": i, "ssn": f"111-11-{i:04d}"}) + "\n" for i in range(300))
    decoy = "".join(json.dumps({"id": i, "ssn": f"999-99-{i:04d}"}) + "\n" for i in range(7))
    (dirs.launcher_cwd / "in.jsonl").write_text(mine)
    (dirs.worker_cwd / "in.jsonl").write_text(decoy)  # read only if a relative path leaked
    dirs.allowed |= {dirs.launcher_cwd / "in.jsonl", dirs.worker_cwd / "in.jsonl", dirs.launcher_cwd / "enc"}
    _ok(kmsbeam(dirs, mode, "encrypt", "in.jsonl", "enc", "--fields", "ssn", "--key", key))
    dirs.check_clean()  # the output is the launcher's ./enc, nothing in the workers' directory
    assert any(p.name.startswith("part-") for p in (dirs.launcher_cwd / "enc").iterdir())
    _ok(kmsbeam(dirs, mode, "decrypt", "enc", f"oss://{bucket}/plain/"))
    dirs.check_clean()
    assert records(f"oss://{bucket}/plain/") == canonical(mine)
    if mode == "portable":
        assert dirs.workers_started() >= 1


LEAKY = """
import sys
import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
with beam.Pipeline(options=PipelineOptions(sys.argv[1:])) as p:
    p | beam.Create(["x"]) | beam.io.WriteToText("leaked")  # a relative path, as a bug would pass it
"""


@pytest.mark.parametrize("mode", MODES)
def test_the_harness_catches_a_leaked_relative_path(mode: str, tmp_path: Path) -> None:
    """The negative control: a pipeline handing a relative path to its workers leaves a file
    in a checked directory (the launcher's cwd on multi_processing, the workers' on portable),
    and ``check_clean`` fails."""
    import os
    import subprocess

    dirs = Dirs(tmp_path / "cluster")
    env = dict(os.environ, HOME=str(dirs.launcher_home))
    done = subprocess.run([sys.executable, "-c", LEAKY, *dirs.runner_args(mode)], cwd=dirs.launcher_cwd,
                          env=env, capture_output=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    with pytest.raises(AssertionError, match="leaked"):
        dirs.check_clean()
    where = dirs.worker_cwd if mode == "portable" else dirs.launcher_cwd  # the workers' cwd
    assert [p.name for p in where.iterdir()] == ["leaked-00000-of-00001"]
