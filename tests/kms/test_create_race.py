"""Racing ``kmsbeam keys create --alias X`` leaves one key and no orphan (issue 14, item 0f).

Real CLI processes, released together once all are ready (no sleeps): on a plain keystore, and
on the keystore an emulator is serving (checked through the official SDK).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi.models import Config

from kmsbeam.emulator import EmulatorServer
from kmsbeam.kms import KeyStore, KmsEngine

RACERS = 8
RACER = (
    "import sys\n"
    "from kmsbeam.pipelines.cli import main\n"
    "print('ready', flush=True)\n"
    "sys.stdin.read(1)\n"
    "sys.exit(main(['keys', 'create', '--alias', sys.argv[1], '--description', 'racer']))\n"
)


def race(home: Path, alias: str) -> list[tuple[int, str, str]]:
    """Run RACERS ``keys create --alias`` processes at once; (exit code, stdout, stderr) each."""
    env = {**os.environ, "KMSBEAM_HOME": str(home)}
    procs = [subprocess.Popen([sys.executable, "-c", RACER, alias], env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE) for _ in range(RACERS)]  # fmt: skip
    for proc in procs:
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
    for proc in procs:  # go
        assert proc.stdin is not None
        proc.stdin.write("g")
        proc.stdin.flush()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        results.append((proc.returncode, out, err))
    return results


def check_one_winner(results: list[tuple[int, str, str]], alias: str) -> str:
    winners = [out for code, out, _ in results if code == 0]
    assert len(winners) == 1, results
    losers = [err for code, _, err in results if code != 0]
    assert all(code in (0, 2) for code, _, _ in results), results
    for err in losers:
        assert f"the alias alias/{alias} already exists" in err and "Traceback" not in err
    return winners[0].split()[2]  # "created key KEYID with alias ..."


def test_racing_creates_on_a_keystore_leave_one_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    winner = check_one_winner(race(home, "pii"), "pii")
    engine = KmsEngine(KeyStore(home, create=False))
    assert [k.key_id for k in engine.list_keys()] == [winner]  # no orphan, none pending deletion
    assert [(a.alias_name, a.key_id) for a in engine.list_aliases()] == [("alias/pii", winner)]

    again = race(home, "pii")  # the alias exists: nobody creates anything
    assert all(code == 2 for code, _, _ in again)
    assert [k.key_id for k in engine.list_keys()] == [winner]


def test_racing_creates_on_an_emulator_keystore_leave_one_key(tmp_path: Path) -> None:
    data = tmp_path / "kms-data"
    with EmulatorServer(data, {"admin": "admin-secret-1"}, rotation_check_seconds=None) as server:
        client = Client(Config(endpoint=server.endpoint, protocol="http", access_key_id="admin",
                               access_key_secret="admin-secret-1"))  # fmt: skip
        existing = client.create_key(models.CreateKeyRequest(description="before")).body.key_metadata.key_id
        winner = check_one_winner(race(data, "shared"), "shared")
        keys = client.list_keys(models.ListKeysRequest(page_size=100)).body.keys.key
        assert sorted(k.key_id for k in keys) == sorted([existing, winner])
        aliases = client.list_aliases(models.ListAliasesRequest(page_size=100)).body.aliases.alias
        assert [(a.alias_name, a.key_id) for a in aliases] == [("alias/shared", winner)]
        described = client.describe_key(models.DescribeKeyRequest(key_id="alias/shared"))
        assert described.body.key_metadata.key_state == "Enabled"
