"""``kmsbeam keys ...`` over the embedded keystore of each test (``$KMSBEAM_HOME``)."""

from __future__ import annotations

import json
from pathlib import Path

from tests.pipelines.conftest import shard_lines


def _key_id(cli, name: str) -> str:  # type: ignore[no-untyped-def]
    r = cli("keys", "describe", name)
    assert r.code == 0, r.err
    return next(line.split()[-1] for line in r.out.splitlines() if line.startswith("key id"))


def test_create_list_describe(cli, kms_home: Path) -> None:
    r = cli("keys", "list")
    assert r.code == 0 and "no keystore yet" in r.out
    assert not (kms_home / "keystore.db").exists()
    r = cli("keys", "create", "--alias", "pii", "--description", "customer PII")
    assert r.code == 0 and "with alias alias/pii" in r.out
    key_id = _key_id(cli, "alias/pii")
    assert _key_id(cli, "local:alias/pii") == key_id == _key_id(cli, key_id)
    r = cli("keys", "list")
    row = next(line for line in r.out.splitlines() if line.startswith(key_id))
    assert "Enabled" in row and "alias/pii" in row and row.endswith("customer PII")
    r = cli("keys", "describe", "pii-typo")
    assert r.code == 2 and r.err.startswith("kmsbeam: error: ")
    r = cli("keys", "create", "--alias", "pii")
    assert r.code == 2 and "already exists" in r.err


def test_alias_creates_and_repoints(cli, customers: Path, tmp_path: Path) -> None:
    cli("keys", "create", "--alias", "a")
    cli("keys", "create", "--alias", "b")
    a, b = _key_id(cli, "alias/a"), _key_id(cli, "alias/b")
    r = cli("keys", "alias", "pii", a)
    assert r.code == 0 and "created alias alias/pii" in r.out
    assert _key_id(cli, "alias/pii") == a
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", "local:alias/pii").code == 0
    r = cli("keys", "alias", "alias/pii", b)
    assert r.code == 0 and "now points at" in r.out
    assert _key_id(cli, "alias/pii") == b
    # data written under the old target still decrypts (the wrapped key names its key)
    r = cli("decrypt", enc, tmp_path / "plain")
    assert r.code == 0, r.err
    assert sorted(shard_lines(tmp_path / "plain")) == sorted(customers.read_text("utf-8").splitlines())


def test_rotate_keeps_old_data_decryptable(cli, customers: Path, tmp_path: Path) -> None:
    cli("keys", "create", "--alias", "pii")
    before = cli("keys", "describe", "alias/pii").out
    old = tmp_path / "old"
    assert cli("encrypt", customers, old, "--fields", "ssn", "--key", "local:alias/pii").code == 0
    r = cli("keys", "rotate", "alias/pii")
    assert r.code == 0 and "new primary version" in r.out
    after = cli("keys", "describe", "alias/pii").out
    version = lambda text: next(x for x in text.splitlines() if x.startswith("primary version"))
    assert version(before) != version(after)
    assert "versions            2" in after
    new = tmp_path / "new"
    assert cli("encrypt", customers, new, "--fields", "ssn", "--key", "local:alias/pii").code == 0
    for enc in (old, new):
        r = cli("decrypt", enc, tmp_path / f"plain-{enc.name}")
        assert r.code == 0 and "dead letters                0" in r.out, r.out
        assert sorted(shard_lines(tmp_path / f"plain-{enc.name}")) == sorted(
            customers.read_text("utf-8").splitlines()
        )


def test_disable_and_enable(cli, customers: Path, tmp_path: Path) -> None:
    cli("keys", "create", "--alias", "pii")
    enc = tmp_path / "enc"
    assert cli("encrypt", customers, enc, "--fields", "ssn", "--key", "local:alias/pii").code == 0
    assert "Disabled" in cli("keys", "disable", "alias/pii").out
    r = cli("decrypt", enc, tmp_path / "p1")  # the key source says no: the job fails
    assert r.code == 1 and "key disabled" in r.err and len(r.err.strip().splitlines()) == 1
    assert not (tmp_path / "p1" / "_dead_letters").exists()
    assert "Enabled" in cli("keys", "enable", "alias/pii").out
    from kmsbeam import shared_cache

    shared_cache().clear()  # this process remembers the failure for a few seconds (a new CLI run would not)
    assert cli("decrypt", enc, tmp_path / "p2").code == 0
    assert len(shard_lines(tmp_path / "p2")) == 1000


def test_non_local_keys_are_refused(cli) -> None:
    r = cli("keys", "describe", "alibaba-kms://cn-hangzhou/alias/pii")
    assert r.code == 2 and "local keys only" in r.err
