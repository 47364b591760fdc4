"""kmsbeam jobs with alibaba-kms-instance:// keys, the way a cluster runs them: the launcher in
its own directory and HOME, workers started by a boot script in other ones (PortableRunner,
embed), data on oss:// (the loopback OSS server with oss2), keys from the emulator's instance
gateway over HTTPS with a ClientKey; then a rotation between two instance keys, which says its
rewrap path. Calls are counted from the emulator's audit log."""

from __future__ import annotations

import json

import pytest

from kmsbeam.alikms import sdk_dir
from kmsbeam.oss import oss_client
from tests.oss.conftest import bucket, oss_server  # noqa: F401  (fixtures)
from tests.pipelines.cluster_helpers import Dirs, canonical, kmsbeam, objects, records
from tests.pipelines.conftest import cli, table_value  # noqa: F401  (cli: a fixture)

from instance_gateway import Instance

LINES = "".join(json.dumps({"id": i, "ssn": f"{i:09d}", "email": f"u{i}@example.com"}) + "\n" for i in range(300))


@pytest.fixture
def cluster_env(client_env: Instance, monkeypatch: pytest.MonkeyPatch) -> Instance:
    # workers get another HOME: they find the SDK by its absolute path, as in the worker image
    monkeypatch.setenv("KMSBEAM_INSTANCE_SDK", str(sdk_dir().absolute()))
    return client_env


def test_encrypt_and_decrypt_on_oss_with_remote_workers(cluster_env: Instance, bucket: str,  # noqa: F811
                                                         tmp_path) -> None:  # type: ignore[no-untyped-def]
    inst = cluster_env
    dirs = Dirs(tmp_path / "cluster")
    lake = f"oss://{bucket}"
    oss_client().put(f"{lake}/in/customers.jsonl", LINES.encode())
    key = inst.uri()
    before = len(inst.audit())
    done = kmsbeam(dirs, "portable", "encrypt", f"{lake}/in/customers.jsonl", f"{lake}/enc/",
                   "--fields", "ssn,email", "--key", key)  # fmt: skip
    assert done.code == 0, done.err
    dirs.check_clean()
    assert dirs.workers_started() >= 1
    assert table_value(done.out, "records out") == "300"
    generated = inst.calls("AdvanceGenerateDataKey", before)
    assert generated == int(table_value(done.out, "data keys generated")) >= 1
    enc = b"".join(v for k, v in objects(f"{lake}/enc/").items() if k.startswith("part-"))
    assert b"000000042" not in enc and b"u42@example.com" not in enc
    before = len(inst.audit())
    done = kmsbeam(dirs, "portable", "decrypt", f"{lake}/enc/", f"{lake}/plain/", "--key", key)
    assert done.code == 0, done.err
    dirs.check_clean()
    assert records(f"{lake}/plain/") == canonical(LINES)
    assert 1 <= inst.calls("AdvanceDecrypt", before) <= generated
    assert not any(r.get("outcome") != "success" for r in inst.audit()[before:])


def test_rotation_between_instance_keys_says_its_rewrap_path(client_env: Instance, tmp_path, cli,  # noqa: F811
                                                             monkeypatch) -> None:  # type: ignore[no-untyped-def]
    inst = client_env
    src = tmp_path / "in.jsonl"
    src.write_text(LINES)
    key, target = inst.uri(), inst.uri("alias/next")
    r = cli("encrypt", str(src), str(tmp_path / "enc"), "--fields", "ssn", "--key", key)
    assert r.code == 0, r.err
    before = len(inst.audit())
    assert table_value(r.out, "KMS cost (estimate)").startswith("none per call (a KMS instance is billed by its QPS")
    assert table_value(r.out, "KMS calls: AdvanceGenerateDataKey") == table_value(r.out, "data keys generated")
    monkeypatch.setenv("KMSBEAM_KEY_SOURCES", key)  # the dataset's key: trusted by the caller
    r = cli("rotate", str(tmp_path / "enc"), str(tmp_path / "dry"), "--to-key", target, "--dry-run")
    assert r.code == 0, r.err
    to_move = int(table_value(r.out, "data keys to move"))
    assert table_value(r.out, "rewrap path").startswith("AdvanceDecrypt + AdvanceEncrypt")
    assert table_value(r.out, "KMS calls: AdvanceDecrypt + AdvanceEncrypt") == str(2 * to_move)
    before = len(inst.audit())
    r = cli("rotate", str(tmp_path / "enc"), str(tmp_path / "rot"), "--to-key", target)
    assert r.code == 0, r.err
    moved = int(table_value(r.out, "data keys moved"))
    assert moved == to_move >= 1
    assert table_value(r.out, "rewrap path").startswith("AdvanceDecrypt + AdvanceEncrypt (client side")
    assert table_value(r.out, "KMS calls: AdvanceDecrypt + AdvanceEncrypt") == str(2 * moved)
    rotation = json.loads((tmp_path / "rot" / "_kmsbeam_rotation.json").read_text())
    assert rotation["rewrap_path"].startswith("AdvanceDecrypt + AdvanceEncrypt")
    assert rotation["target_version_from"] == "an AdvanceEncrypt probe"
    log = inst.audit()[before:]
    assert not any(r.get("eventName") == "ReEncrypt" for r in log)
    assert inst.calls("AdvanceEncrypt", before) == moved + 1  # one probe for the target version
    r = cli("decrypt", str(tmp_path / "rot"), str(tmp_path / "plain"), "--key", target)
    assert r.code == 0, r.err
    got = "".join(p.read_text() for p in sorted((tmp_path / "plain").glob("part-*")))
    assert sorted(canonical(got)) == sorted(canonical(LINES))
