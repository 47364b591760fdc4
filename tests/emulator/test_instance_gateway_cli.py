"""``kmsbeam emulator serve --instance-port`` and ``kmsbeam emulator client-key``: a real
server process, a ClientKey issued by the CLI while it runs, the official instance SDK."""

from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
from pathlib import Path

from tests.emulator.test_instance_gateway import PASSWORD, run_sdk, step

CLI = [sys.executable, "-m", "kmsbeam.pipelines", "emulator"]


def test_serve_with_instance_port_and_client_key_cli(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text("dev:dev-secret-1\n")
    keys.chmod(0o600)
    data = tmp_path / "kms"
    proc = subprocess.Popen([*CLI, "serve", "--port", "0", "--instance-port", "0", "--data",
                             str(data), "--access-key-file", str(keys)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert proc.stdout is not None
        proc.stdout.readline()
        line = proc.stdout.readline()
        found = re.search(r"https://(127\.0\.0\.1:\d+) \(CA file (\S+);", line)
        assert found, line
        endpoint, ca = found[1], found[2]
        env = {**os.environ, "KMSBEAM_KMS_CLIENT_KEY_PASSWORD": PASSWORD}
        out = subprocess.run([*CLI, "client-key", "--data", str(data), "--out",
                              str(tmp_path / "ck.json")], env=env, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert out.returncode == 0, out.stderr
        assert PASSWORD not in out.stdout + out.stderr and "ClientKey KAAP." in out.stdout
        assert stat.S_IMODE((tmp_path / "ck.json").stat().st_mode) == 0o600
        client = {"endpoint": endpoint, "ca": ca, "password": PASSWORD,
                  "key_file": str(tmp_path / "ck.json")}  # fmt: skip
        outs = run_sdk({"c": client}, [step("AdvanceGenerateDataKey", "c", key_id="alias/none")])
        assert outs[0]["error"]["code"] == "Forbidden.AliasNotFound"  # authenticated, then 404
        nopass = subprocess.run([*CLI, "client-key", "--data", str(data), "--out",
                                 str(tmp_path / "ck2.json")], capture_output=True, text=True,
                                env={k: v for k, v in os.environ.items()
                                     if k != "KMSBEAM_KMS_CLIENT_KEY_PASSWORD"}, timeout=60)  # fmt: skip
        assert nopass.returncode != 0 and "KMSBEAM_KMS_CLIENT_KEY_PASSWORD" in nopass.stderr
        assert "Traceback" not in nopass.stderr and not (tmp_path / "ck2.json").exists()
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
