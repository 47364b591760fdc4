"""Issue 18 the way a cluster runs: the dataset and its key vault on ``oss://`` (the loopback
OSS server), keys from the emulator, workers in other directories (multi_processing and the
PortableRunner's subprocess workers). Encrypting workers write the vault entries; decrypting
workers read them; ``vault rotate`` rewrites only the vault; nothing lands on any local disk.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kmsbeam.oss import oss_client

from tests.oss.conftest import bucket, oss_server  # noqa: F401  (fixtures)
from tests.pipelines.cluster_helpers import MODES, Dirs, canonical, kmsbeam, objects, records
from tests.pipelines.conftest import EXAMPLES

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "emulator"))
from emulator_key import emulator_key  # noqa: E402

pytestmark = pytest.mark.slow  # a handful of pipelines in fresh processes per case


@pytest.fixture()
def kms(bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, str]]:
    with emulator_key(tmp_path / "kms", monkeypatch, "alias/pii", same_account=True) as found:
        yield found


def _ok(done: Any) -> str:
    assert done.code == 0, done.err[-3000:] + done.out[-2000:]
    return str(done.out)


def _events(server: Any) -> list[str]:
    return [json.loads(line)["eventName"] for line in server.audit.path.read_text().splitlines()]


@pytest.mark.parametrize("mode", MODES[1:])  # one runner (portable); test_cluster_shaped runs both
def test_a_vault_on_oss_with_workers_elsewhere(mode: str, kms: tuple[Any, str], bucket: str, tmp_path: Path) -> None:
    server, key = kms
    dirs = Dirs(tmp_path / "cluster")
    lake = f"oss://{bucket}"
    raw = (EXAMPLES / "customers.jsonl").read_bytes()
    oss_client().put(f"{lake}/raw/customers.jsonl", raw)

    _ok(kmsbeam(dirs, mode, "encrypt", f"{lake}/raw/*.jsonl", f"{lake}/enc/", "--fields", "ssn,email",
                "--key", key, "--key-vault", f"{lake}/_keys/", "--max-records-per-key", "250"))  # fmt: skip
    dirs.check_clean()
    vault = objects(f"{lake}/_keys/")
    entries = sorted(n for n in vault if n.endswith("/00000001.json"))
    assert "_kmsbeam_vault.json" in vault
    assert len(entries) == _events(server).count("GenerateDataKey") >= 4
    assert json.loads(objects(f"{lake}/enc/")["_kmsbeam.json"])["key_vault"] == f"{lake}/_keys"

    _ok(kmsbeam(dirs, mode, "decrypt", f"{lake}/enc/", f"{lake}/plain/"))
    dirs.check_clean()
    assert records(f"{lake}/plain/") == canonical(raw.decode())

    dataset = objects(f"{lake}/enc/")
    server.engine.create_alias("alias/pii-2", server.engine.create_key("pii-2").key_id)
    before = len(_events(server))
    out = _ok(kmsbeam(dirs, None, "vault", "rotate", f"{lake}/_keys/", "--to-key",
                      key.replace("alias/pii", "alias/pii-2")))  # fmt: skip
    dirs.check_clean()
    assert _events(server)[before:].count("ReEncrypt") == len(entries), out
    assert objects(f"{lake}/enc/") == dataset  # no data object rewritten
    assert len([n for n in objects(f"{lake}/_keys/") if n.endswith("/00000002.json")]) == len(entries)
    _ok(kmsbeam(dirs, None, "vault", "check", f"{lake}/enc/"))
    _ok(kmsbeam(dirs, mode, "decrypt", f"{lake}/enc/", f"{lake}/plain2/"))
    dirs.check_clean()
    assert records(f"{lake}/plain2/") == canonical(raw.decode())
