"""Least privilege per command: each CLI job runs with exactly the RAM policy docs/PERMISSIONS.md
gives it, one principal per command, against a real emulator; an encrypt-only principal
cannot decrypt anything kmsbeam wrote.

The policies are read from docs/PERMISSIONS.md itself, so the documented policies are the
tested ones. Each command runs as a separate process (as a job would: no data key cached
from another principal's run), with its principal's access key in the environment. The
emulator's audit log shows what each principal called: every action of its policy is used,
and nothing is refused but the optional reads the document lists.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kmsbeam.emulator import AccessKey, EmulatorServer, Policy
from kmsbeam.kms import KeyStore, KmsEngine

from tests.pipelines.conftest import EXAMPLES, shard_lines

DOC = Path(__file__).resolve().parents[2] / "docs" / "PERMISSIONS.md"
CUSTOMERS = EXAMPLES / "customers.jsonl"
OPTIONAL = {"DescribeKey", "ListAliasesByKeyId", "ListKeyVersions"}  # reads a job may be denied
ACCOUNT = "1234567890123456"
SSNS = [json.loads(line)["ssn"] for line in CUSTOMERS.read_text().splitlines()]


def documented_policies() -> dict[str, str]:
    """``name -> JSON text`` of every ``<!-- policy: NAME -->`` block of PERMISSIONS.md."""
    blocks = re.findall(r"<!-- policy: ([\w-]+) -->\n```json\n(.*?)\n```", DOC.read_text(), re.S)
    return dict(blocks)


@dataclass
class Run:
    code: int
    out: str
    err: str
    calls: list[tuple[str, str]]  # (action, outcome or error code) of this run's principal


@dataclass
class World:
    server: EmulatorServer
    home: Path
    tmp: Path
    old_key: str
    new_key: str
    secrets: dict[str, str]

    def uri(self, key: str) -> str:
        return f"kms-emulator://{self.server.endpoint}/{key}"

    def run(self, principal: str, *argv: object) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALIBABA_CLOUD_", "KMSBEAM_"))}
        env.update(ALIBABA_CLOUD_ACCESS_KEY_ID=principal, ALIBABA_CLOUD_ACCESS_KEY_SECRET=self.secrets[principal],
                   KMSBEAM_HOME=str(self.home), KMSBEAM_KEY_SOURCES=self.uri("alias/pii"))  # fmt: skip
        start = len(self.server.audit.path.read_text().splitlines())
        proc = subprocess.run([sys.executable, "-m", "kmsbeam.pipelines", *map(str, argv)], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        records = [json.loads(line) for line in self.server.audit.path.read_text().splitlines()[start:]]
        calls = [(r["eventName"], r.get("errorCode", r["outcome"])) for r in records
                 if (r["userIdentity"] or {}).get("accessKeyId") == principal]  # fmt: skip
        return Run(proc.returncode, proc.stdout, proc.stderr, calls)


def _policy(text: str, world_ids: dict[str, str]) -> Policy:
    for placeholder, value in world_ids.items():
        text = text.replace(placeholder, value)
    return Policy(text)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("least-privilege")
    engine = KmsEngine(KeyStore(tmp / "kms"), region="cn-hangzhou", account=ACCOUNT)
    old, new = engine.create_key("pii").key_id, engine.create_key("pii, next").key_id
    engine.create_alias("alias/pii", old)
    engine.store.close()
    ids = {"ACCOUNT_ID": ACCOUNT, "OLD_KEY_ID": old, "NEW_KEY_ID": new, "KEY_ID": old}
    keys = {name: secrets.token_urlsafe(16) for name in [*documented_policies(), "admin"]}
    access = [AccessKey(n, s, policy=None if n == "admin" else _policy(documented_policies()[n], ids))
              for n, s in keys.items()]  # fmt: skip
    with EmulatorServer(tmp / "kms", access, account=ACCOUNT, rotation_check_seconds=None) as server:
        yield World(server, tmp / "home", tmp, old, new, keys)


def _policy_actions(name: str) -> set[str]:
    document = json.loads(documented_policies()[name])
    return {a.removeprefix("kms:") for s in document["Statement"] for a in s["Action"]}


def _exactly(run: Run, name: str) -> None:
    """The run succeeded, used every action of its policy and was refused only optional reads."""
    assert run.code == 0, run.err[-2000:]
    succeeded = {action for action, outcome in run.calls if outcome == "success"}
    refused = {action for action, outcome in run.calls if outcome != "success"}
    assert succeeded == _policy_actions(name), run.calls
    assert refused <= OPTIONAL, run.calls


@pytest.fixture(scope="module")
def encrypted(world: World) -> tuple[Path, Run]:
    out = world.tmp / "enc"
    return out, world.run("encrypt", "encrypt", CUSTOMERS, out, "--fields", "ssn,email",
                          "--key", world.uri("alias/pii"))  # fmt: skip


@pytest.fixture(scope="module")
def exported(world: World) -> tuple[Path, Run]:
    out = world.tmp / "exp"
    return out, world.run("export", "export", CUSTOMERS, out, "--key", world.uri("alias/pii"))


def test_the_document_has_a_policy_per_command() -> None:
    assert set(documented_policies()) == {"encrypt", "decrypt", "rotate", "rotate-reencrypt", "export", "cat"}
    for text in documented_policies().values():
        Policy(text)  # valid as written, placeholders and all


def test_encrypt_with_its_policy(encrypted: tuple[Path, Run]) -> None:
    out, run = encrypted
    _exactly(run, "encrypt")
    assert not any(ssn in "".join(shard_lines(out)) for ssn in SSNS[:50])


def test_decrypt_with_its_policy(world: World, encrypted: tuple[Path, Run]) -> None:
    plain = world.tmp / "plain"
    run = world.run("decrypt", "decrypt", encrypted[0], plain, "--key", world.uri("alias/pii"))
    _exactly(run, "decrypt")
    assert sorted(json.loads(x)["ssn"] for x in shard_lines(plain)) == sorted(SSNS)


def test_rotate_only_key_and_verify_with_its_policy(world: World, encrypted: tuple[Path, Run]) -> None:
    run = world.run("rotate", "rotate", encrypted[0], world.tmp / "rot", "--to-key", world.uri(world.new_key),
                    "--only-key", world.uri(world.old_key), "--verify")  # fmt: skip
    _exactly(run, "rotate")


def test_rotate_reencrypt_with_its_policy(world: World, encrypted: tuple[Path, Run]) -> None:
    run = world.run("rotate-reencrypt", "rotate", encrypted[0], world.tmp / "reenc",
                    "--to-key", world.uri(world.new_key), "--reencrypt")  # fmt: skip
    _exactly(run, "rotate-reencrypt")


def test_export_and_cat_with_their_policies(world: World, exported: tuple[Path, Run]) -> None:
    out, run = exported
    _exactly(run, "export")
    (obj,) = out.glob("*.kmsb")
    run = world.run("cat", "cat", obj, "--key", world.uri("alias/pii"))
    _exactly(run, "cat")
    assert run.out == CUSTOMERS.read_text()


def _refused_without_plaintext(run: Run, output: Path | None = None) -> None:
    assert run.code not in (0, 2), run.err[-2000:]  # a failure, not a usage mistake
    errors = [line for line in run.err.splitlines() if line.startswith("kmsbeam: error: ")]
    assert len(errors) == 1 and "Traceback" not in run.err, run.err[-2000:]
    assert "Decrypt" in errors[0] or "permission" in errors[0].lower() or "refused" in errors[0]
    text = run.out + run.err
    if output is not None and output.exists():
        text += "".join(p.read_text(errors="replace") for p in output.rglob("*") if p.is_file())
    assert not any(ssn in text for ssn in SSNS), "plaintext leaked"
    assert ("Decrypt", "Forbidden.NoPermission") in run.calls
    assert all(outcome != "success" for action, outcome in run.calls if action == "Decrypt")


def test_an_encrypt_only_principal_cannot_decrypt_anything_kmsbeam_wrote(
    world: World, encrypted: tuple[Path, Run], exported: tuple[Path, Run]
) -> None:
    assert encrypted[1].code == 0 and exported[1].code == 0
    uri = world.uri("alias/pii")
    for principal in ("encrypt", "export"):  # the two GenerateDataKey-only principals
        out = world.tmp / f"stolen-{principal}"
        _refused_without_plaintext(world.run(principal, "decrypt", encrypted[0], out, "--key", uri), out)
        (obj,) = exported[0].glob("*.kmsb")
        _refused_without_plaintext(world.run(principal, "cat", obj, "--key", uri))
