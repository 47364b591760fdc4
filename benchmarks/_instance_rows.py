"""The parts of ``benchmarks.instance_gateway``: the emulator with its instance gateway in a child
process, the official instance SDK looping in its own interpreter, the audit-log counts, CPU of
other processes from ``/proc``, and the order-free hash of a JSONL dataset.

- ``InstanceEmulator``: ``kmsbeam emulator serve --port 0 --instance-port 0`` as a child
  (``benchmarks._children``: SIGTERM by PID, waited for); its two announced endpoints and CA
  file; keys made through the 2016 API (``_vault_rows.emulator_keys``) and a ClientKey issued
  by ``kmsbeam emulator client-key`` (another child; the password in its environment only).
- ``DirectSdk``: the official SDK (``alibabacloud-dkms-gcs``) in the instance-SDK virtualenv's
  interpreter, a child that takes commands on stdin (``gdk N``: N AdvanceGenerateDataKey;
  ``dec``: AdvanceDecrypt of the blobs of the last ``gdk``) and times itself (wall and its own
  CPU); the first line it reads is the ClientKey password (never argv or environment).
  ``first_ms``: from its start to its first GenerateDataKey + Decrypt done (interpreter start,
  SDK imports, client, TLS), as kmsbeam's helper start is timed.
- ``audit_counts``: successful calls by action in the audit log, and the errors.
- ``proc_cpu``: user + system CPU seconds of a PID (``/proc/PID/stat``), for the server and
  kmsbeam's helper process (which is not a waited-for child, so ``RUSAGE_CHILDREN`` misses it).
- ``dataset_digest``: records and a multiset hash (sum of SHA-256 prefixes, mod 2^128) of the
  canonical JSON of every record of some JSONL files: equal for the same records in any order.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks import _children as children

__all__ = ["DIRECT", "DirectSdk", "InstanceEmulator", "audit_counts", "dataset_digest", "helper_pids", "proc_cpu",
           "settled_counts"]

# Run by the instance SDK's interpreter (``-I``): the standard library and the SDK only.
DIRECT = r"""
import base64, json, sys, time
from openapi.models import Config
from openapi_util.models import RuntimeOptions
from sdk import models
from sdk.client import Client

endpoint, ca, client_key, key = sys.argv[1:5]
password = sys.stdin.readline().rstrip("\n")
AAD = b"{}"  # what kmsbeam sends for an empty encryption context
client = Client(Config(endpoint=endpoint, protocol="https", ca_file_path=ca, client_key_file=client_key,
                       password=password, connect_timeout=5000, read_timeout=10000, user_agent="kmsbeam-bench"))
runtime = RuntimeOptions(autoretry=False, max_attempts=1, ignore_ssl=False)
del password

def gdk():
    r = client.advance_generate_data_key_with_options(
        models.AdvanceGenerateDataKeyRequest(key_id=key, number_of_bytes=32, aad=AAD), runtime)
    return bytes(r.ciphertext_blob), bytes(r.plaintext)

def dec(blob):
    return bytes(client.advance_decrypt_with_options(
        models.AdvanceDecryptRequest(ciphertext_blob=blob, aad=AAD), runtime).plaintext)

first = gdk()
ok = dec(first[0]) == first[1]
print(json.dumps({"ready": ok}), flush=True)
keys = []
for line in sys.stdin:
    cmd = line.split()
    c0, w0 = time.process_time(), time.perf_counter()
    if cmd[0] == "gdk":
        keys = [gdk() for _ in range(int(cmd[1]))]
        good = len(keys)
    else:
        good = sum(dec(blob) == dk for blob, dk in keys)
    w1, c1 = time.perf_counter(), time.process_time()
    print(json.dumps({"calls": len(keys), "good": good, "wall": w1 - w0, "cpu": c1 - c0}), flush=True)
"""


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` so far (0.0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def helper_pids() -> list[int]:
    """This process's children running kmsbeam's instance-SDK helper (``_instance_helper.py``)."""
    kids: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            kids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    out = []
    for pid in sorted(kids):
        try:
            if b"_instance_helper.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                out.append(pid)
        except OSError:
            continue
    return out


def audit_counts(path: Path) -> Counter[str]:
    """Successful calls by action (``eventName``) in the emulator's audit log; failures counted
    under ``"error: ACTION"``."""
    out: Counter[str] = Counter()
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        if line:
            rec = json.loads(line)
            name = str(rec.get("eventName", ""))
            out[name if rec.get("outcome") == "success" else f"error: {name}"] += 1
    return out


def settled_counts(path: Path, before: Counter[str], want: int = 0) -> Counter[str]:
    """The audit log's counts since ``before``, read again until they stop moving (the server may
    write a call's line just after answering it); at most ~5 s."""
    last, deadline = audit_counts(path) - before, time.monotonic() + 5
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = audit_counts(path) - before
        if now == last and sum(now.values()) >= want:
            return now
        last = now
    return last


class InstanceEmulator:
    """``kmsbeam emulator serve`` with its instance gateway, in a child process."""

    def __init__(self, data: Path, access: tuple[str, str]) -> None:
        self.data, self.access = data, access
        keyfile = data.parent / "emulator-access-keys"
        keyfile.write_text(f"{access[0]}:{access[1]}\n")
        keyfile.chmod(0o600)
        cmd = [sys.executable, "-m", "kmsbeam.pipelines", "emulator", "serve", "--port", "0", "--instance-port", "0",
               "--data", str(data), "--access-key-file", str(keyfile)]  # fmt: skip
        self.proc = children.start(cmd, stdout=subprocess.PIPE)
        assert self.proc.stdout is not None
        first, second = self.proc.stdout.readline(), self.proc.stdout.readline()
        if "http://" not in first or "https://" not in second:
            children.stop(self.proc)
            raise RuntimeError(f"the emulator did not start: {first!r} {second!r}")
        self.endpoint = first.split("http://", 1)[1].split()[0]
        self.instance_endpoint = second.split("https://", 1)[1].split()[0]
        self.ca_file = second.split("CA file ", 1)[1].split(";")[0].strip()
        self.audit = data / "audit.jsonl"

    def issue_client_key(self, out: Path, password: str) -> None:
        """``kmsbeam emulator client-key`` (all keys), the password in the child's environment."""
        env = {**os.environ, "KMSBEAM_KMS_CLIENT_KEY_PASSWORD": password}
        done = children.run([sys.executable, "-m", "kmsbeam.pipelines", "emulator", "client-key", "--data",
                             str(self.data), "--out", str(out)], env=env)  # fmt: skip
        if done.returncode != 0:
            raise RuntimeError(f"emulator client-key exited {done.returncode}: {done.stderr.strip()[-500:]}")

    def close(self) -> None:
        children.stop(self.proc)

    def __enter__(self) -> InstanceEmulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DirectSdk:
    """The official instance SDK looping in its own interpreter (a child process)."""

    def __init__(self, python: Path, endpoint: str, ca: str, client_key: Path, password: str, key: str) -> None:
        t0 = time.perf_counter()
        self.proc = children.start([str(python), "-I", "-c", DIRECT, endpoint, ca, str(client_key), key],
                                   stdin=subprocess.PIPE, stdout=subprocess.PIPE)  # fmt: skip
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(password + "\n")
        self.proc.stdin.flush()
        ready = self._answer()
        if not ready.get("ready"):
            self.close()
            raise RuntimeError("the direct SDK loop did not start (or its first data key did not round-trip)")
        self.first_ms = (time.perf_counter() - t0) * 1000  # start, imports, client, first calls

    def _answer(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the direct SDK loop stopped (exit {self.proc.poll()})")
        return dict(json.loads(line))

    def command(self, text: str) -> dict[str, Any]:
        """``gdk N`` or ``dec``: its calls, good answers, wall and CPU seconds (the child's own)."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def close(self) -> None:
        children.stop(self.proc)


def _parts(root: Path) -> Iterable[Path]:
    return sorted(p for p in root.rglob("part-*") if p.is_file() and "_dead_letters" not in p.parts)


def dataset_digest(root: Path) -> tuple[int, str]:
    """(records, multiset hash) of the JSONL records in ``root`` (a file, or a directory's
    ``part-*`` shards): the same records in any order and key order give the same pair."""
    files = [root] if root.is_file() else list(_parts(root))
    n, total = 0, 0
    for f in files:
        with f.open("rb") as src:
            for line in src:
                if line.strip():
                    canon = json.dumps(json.loads(line), sort_keys=True, separators=(",", ":"))
                    total += int.from_bytes(hashlib.sha256(canon.encode()).digest()[:16], "big")
                    n += 1
    return n, f"{total % (1 << 128):032x}"
