"""Issue 15 part 2 with PKCS#11: the cluster-shaped run (``tests/pipelines/cluster_helpers``)
with a SoftHSM KEK. Workers started by the PortableRunner's boot script in another directory
and HOME open the token themselves (module path, token and PIN source come from the key URI
the caller gave; the token directory from ``SOFTHSM2_CONF`` in their environment); the data
is on the loopback OSS server. encrypt, decrypt, rotate to a second KEK (rewrapped inside the
HSM) and decrypt again give the input back exactly, and nothing is left in any directory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from kmsbeam.oss import oss_client
from pkcs11_helpers import Hsm

from kmsbeam.formats.envelope import FIELD_V1, parse
from tests.oss.conftest import bucket, oss_server  # noqa: F401  (fixtures)
from tests.pipelines.cluster_helpers import Dirs, canonical, kmsbeam, records

pytestmark = pytest.mark.slow  # five pipelines, each in fresh worker processes


def _ok(done: object) -> None:
    assert getattr(done, "code") == 0, getattr(done, "err")[-3000:]


def test_pkcs11_jobs_on_oss_with_workers_elsewhere(hsm: Hsm, bucket: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:  # fmt: skip
    kek_a, kek_b = hsm.new_kek(), hsm.new_kek()
    monkeypatch.setenv("KMSBEAM_KEY_SOURCES", f"{kek_a},{kek_b}")  # manifests' keys are hints
    dirs = Dirs(tmp_path / "cluster")
    lake = f"oss://{bucket}"
    raw = "".join(json.dumps({"id": i, "ssn": f"123-45-{i:04d}", "zip": f"{i:05d}"}) + "\n" for i in range(400))
    oss_client().put(f"{lake}/raw/in.jsonl", raw.encode())
    mode = "portable"
    _ok(kmsbeam(dirs, mode, "encrypt", f"{lake}/raw/in.jsonl", f"{lake}/enc/", "--fields", "ssn", "--key", kek_a))
    dirs.check_clean()
    enc = records(f"{lake}/enc/")
    assert len(enc) == 400 and all(json.loads(r)["ssn"] != "123-45-0000" for r in enc)
    _ok(kmsbeam(dirs, mode, "decrypt", f"{lake}/enc/", f"{lake}/plain/"))
    dirs.check_clean()
    assert records(f"{lake}/plain/") == canonical(raw)
    _ok(kmsbeam(dirs, mode, "rotate", f"{lake}/enc/", f"{lake}/rot/", "--to-key", kek_b))
    dirs.check_clean()
    rotation = json.loads(oss_client().get(f"{lake}/rot/_kmsbeam_rotation.json"))
    assert rotation["data_keys_moved"] >= 1 and rotation["counts"]["records"] == 400
    rot = records(f"{lake}/rot/")
    for before, after in zip(enc, rot):  # rewrapped: the ciphertext after each header is kept
        assert parse(json.loads(before)["ssn"], FIELD_V1).body == parse(json.loads(after)["ssn"], FIELD_V1).body
    _ok(kmsbeam(dirs, mode, "decrypt", f"{lake}/rot/", f"{lake}/plain-rot/", "--key", kek_b))
    dirs.check_clean()
    assert records(f"{lake}/plain-rot/") == canonical(raw)
    assert dirs.workers_started() >= 1
