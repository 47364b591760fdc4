"""The parts of ``benchmarks.vault``: where the jobs' files live (local disk or the loopback OSS
server), what changed there around one job, the jobs' commands per round, and what a job's
summary (or the emulator's audit log) says about its KMS calls.

- ``Storage``: the paths of one side (``local`` under a temp dir, or ``oss://bench/...``), and
  ``snapshot()``: every file below the root with (size, stamp). On local disk the stamp is
  (mtime, atime) and ``arm()`` sets every file's atime to before its mtime first, so a file a
  job opens and reads gets a new atime (``relatime``) and shows up as read; on OSS it is
  (last-modified, ETag) and the server's own byte counters say what went over HTTP.
- ``changes(before, after)``: bytes of files new or rewritten, and bytes of files read (local),
  split into data files and key-vault entries (any path with a ``vault-`` component).
- ``commands(st, keys, rnd, per_key)``: each job of round ``rnd``; every round's ``encrypt v2``
  makes a fresh vault (``vault-enc-rN``), which that round's ``vault rotate`` rewraps from key a
  to key b: each repeat rewraps every entry of a vault of exactly the dataset's data keys.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["FIELDS", "JOBS", "Storage", "audit_counts", "changes", "commands", "summary_calls",
           "summary_elapsed"]  # fmt: skip

FIELDS = ("ssn", "email", "phone")
# The jobs of one round, in the order they run.
JOBS = ("start-up", "encrypt v1", "encrypt v2", "decrypt v1", "decrypt v2", "dataset rotate",
        "rotate --reencrypt", "vault rotate", "rotate --key-vault")  # fmt: skip
Snap = dict[str, tuple[int, Any]]


@dataclass
class Storage:
    """One side's paths: ``root`` is a local directory or ``oss://bench/``."""

    root: str
    oss: bool

    def path(self, name: str, directory: bool = True) -> str:
        sep = "/" if self.oss else os.sep
        return self.root.rstrip("/") + sep + name + (sep if directory and self.oss else "")

    def files(self) -> Snap:
        if self.oss:
            from kmsbeam.oss import oss_client

            return {i.url: (i.size, (i.last_modified, i.etag)) for i in oss_client().list(self.root)
                    if i.size >= 0}  # fmt: skip
        out: Snap = {}
        for d, _, names in os.walk(self.root):
            for n in names:
                st = os.stat(os.path.join(d, n))
                out[os.path.join(d, n)] = (st.st_size, (st.st_mtime_ns, st.st_atime_ns))
        return out

    def arm(self) -> Snap:
        """Local: every file's atime set 10 s before its mtime (a read moves it); the files."""
        if not self.oss:
            for p, (_, (mtime, _a)) in self.files().items():
                os.utime(p, ns=(mtime - 10**10, mtime))
        return self.files()

    def put(self, local: Path, name: str) -> str:
        """``local`` copied to ``name`` under the root (the OSS side's input)."""
        if not self.oss:
            return str(local)
        from kmsbeam.oss import oss_client

        url = self.path(name, directory=False)
        with local.open("rb") as src, oss_client().open_write(url) as dst:
            while chunk := src.read(8 << 20):
                dst.write(chunk)
        return url

    def vault_entries(self, name: str) -> int:
        """Data keys in a vault: its ``<hex K>/`` folders."""
        prefix = self.path(name).rstrip("/") + "/"
        names = {p[len(prefix):].split("/")[0] for p in self.files() if p.startswith(prefix)}
        return sum(1 for n in names if re.fullmatch(r"[0-9a-f]{32}", n))


def changes(root: str, before: Snap, after: Snap, oss: bool) -> dict[str, int]:
    """Bytes written (new or changed files) and read (local: atime moved), data vs vault."""
    out = Counter({"data written": 0, "vault written": 0, "data read": 0, "vault read": 0})
    for p, (size, stamp) in after.items():
        kind = "vault" if p[len(root):].lstrip("/").startswith("vault-") else "data"
        old = before.get(p)
        if old is None or old[0] != size or (old[1][0] != stamp[0] if not oss else old[1] != stamp):
            out[f"{kind} written"] += size
        elif not oss and old[1][1] != stamp[1]:
            out[f"{kind} read"] += size
    return dict(out)


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "kmsbeam.pipelines", *args]


def commands(st: Storage, src: str, keys: tuple[str, str], rnd: int, per_key: int) -> dict[str, list[str]]:
    """The jobs of round ``rnd`` (0-based) as commands, in ``JOBS`` order."""
    a, b = keys
    enc1, enc2, p = st.path("enc-v1"), st.path("enc-v2"), st.path
    vault = p(f"vault-enc-r{rnd}")
    enc = ("encrypt", src, "--fields", ",".join(FIELDS), "--key", a, "--max-records-per-key", str(per_key))
    return {
        "start-up": [sys.executable, "-c", "import apache_beam, kmsbeam.pipelines.jobs"],
        "encrypt v1": _cli(*enc, enc1, "--overwrite"),
        "encrypt v2": _cli(*enc, enc2, "--key-vault", vault, "--overwrite"),
        "decrypt v1": _cli("decrypt", enc1, p("plain-v1"), "--overwrite"),
        "decrypt v2": _cli("decrypt", enc2, p("plain-v2"), "--overwrite"),
        "dataset rotate": _cli("rotate", enc1, p("rot-v1"), "--to-key", b, "--overwrite"),
        "rotate --reencrypt": _cli("rotate", enc1, p("reenc-v1"), "--to-key", b, "--reencrypt", "--overwrite"),
        "vault rotate": _cli("vault", "rotate", vault, "--to-key", b),
        "rotate --key-vault": _cli("rotate", enc1, p("mig-v2"), "--key-vault", p(f"vault-mig-r{rnd}"), "--overwrite"),
    }


_CALLS = re.compile(r"^\s*KMS calls: ([A-Za-z]+)\s+([\d,]+)", re.M)


def summary_calls(out: str) -> dict[str, int]:
    """The ``KMS calls: X  N`` rows of a kmsbeam summary (zeros dropped)."""
    calls = {m[1]: int(m[2].replace(",", "")) for m in _CALLS.finditer(out)}
    return {k: v for k, v in calls.items() if v}


def summary_elapsed(out: str) -> float | None:
    """The job's own ``elapsed`` row (seconds), or None."""
    m = re.search(r"^\s*elapsed\s+([\d.]+) s", out, re.M)
    return float(m[1]) if m else None


def summary_row(out: str, name: str) -> str | None:
    m = re.search(rf"^\s*{re.escape(name)}\s{{2,}}(\S.*)$", out, re.M)
    return m[1].strip() if m else None


def audit_counts(path: Path) -> Counter[str]:
    """Calls by API name in the emulator's audit log (one JSON line per call)."""
    if not path.exists():
        return Counter()
    return Counter(json.loads(x).get("eventName", "") for x in path.read_text().splitlines() if x)


def emulator_keys(endpoint: str, access: tuple[str, str], aliases: tuple[str, str]) -> tuple[str, str]:
    """Create two keys with aliases on the emulator at ``endpoint``; their key URIs."""
    from alibabacloud_kms20160120 import models
    from alibabacloud_kms20160120.client import Client
    from alibabacloud_tea_openapi.models import Config

    client = Client(Config(endpoint=endpoint, protocol="http", access_key_id=access[0], access_key_secret=access[1]))
    uris = []
    for alias in aliases:
        key_id = client.create_key(models.CreateKeyRequest(description=alias)).body.key_metadata.key_id
        client.create_alias(models.CreateAliasRequest(alias_name=f"alias/{alias}", key_id=key_id))
        uris.append(f"kms-emulator://{endpoint}/alias/{alias}")
    return uris[0], uris[1]


Run = Callable[[], Any]
