"""The naive envelope path of the peers table: one KMS GenerateDataKey per record.

The kmsbeam KMS emulator runs as users run it, in its own process on 127.0.0.1
(``benchmarks._children.emulator``: ``kmsbeam emulator serve --port 0``, throwaway data
directory, signatures and audit log on; stopped with SIGTERM by PID). The client is the official
``alibabacloud_kms20160120`` SDK, unmodified: for each record it asks for a fresh 256-bit data
key and seals the three fields with AES-GCM (random 96-bit nonce, field name as AAD), storing
the wrapped key once per record. Calls are counted twice: by the client and from the
emulator's audit log. The emulator answers ~1,800 calls/s at best, so this row runs on a
bounded subset of the records.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from benchmarks._children import emulator
from benchmarks._measure import Load
from benchmarks._peers_table import PEER_ROWS, PeerRow

__all__ = ["naive_rows"]

FIELDS = ("ssn", "email", "phone")
CONTEXT = {"table": "customers"}
ACCESS_KEY, SECRET = "peers", "peers-secret-not-for-production"


def _client(endpoint: str) -> Any:
    from alibabacloud_kms20160120.client import Client
    from alibabacloud_tea_openapi.models import Config

    return Client(Config(endpoint=endpoint, protocol="http", access_key_id=ACCESS_KEY,
                         access_key_secret=SECRET))  # fmt: skip


def naive_rows(records: Sequence[dict[str, Any]], limit: int, say: Callable[[str], None],
               repeat: int = 1) -> list[PeerRow]:  # fmt: skip
    """The subset's records ``repeat`` times (the fastest pass kept), one GenerateDataKey each."""
    from alibabacloud_kms20160120 import models
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from kmsbeam.emulator import AUDIT_FILENAME

    subset = records[: max(1, min(limit, len(records)))]
    data = Path(tempfile.mkdtemp(prefix="peers-emulator-"))
    with emulator(data, {ACCESS_KEY: SECRET}) as (_proc, endpoint), Load() as load:
        client = _client(endpoint)
        key_id = client.create_key(models.CreateKeyRequest(description="peers")).body.key_metadata.key_id
        request = models.GenerateDataKeyRequest(key_id=key_id, number_of_bytes=32, encryption_context=CONTEXT)
        client.generate_data_key(request)  # warm-up: connection, first signature
        names = {f: f.encode() for f in FIELDS}
        calls, secs = 0, float("inf")
        for _ in range(max(1, repeat)):
            stored = plain_bytes = 0
            t0 = time.perf_counter()
            for record in subset:
                body = client.generate_data_key(request).body
                calls += 1
                aead = AESGCM(base64.b64decode(body.plaintext))
                stored += len(base64.b64decode(body.ciphertext_blob))
                for field in FIELDS:
                    plain = record[field].encode()
                    nonce = os.urandom(12)
                    stored += len(nonce) + len(aead.encrypt(nonce, plain, names[field]))
                    plain_bytes += len(plain)
                del aead, body
            secs = min(secs, time.perf_counter() - t0)
    try:
        with open(data / AUDIT_FILENAME, encoding="utf-8") as f:
            audited = sum(json.loads(line).get("eventName") == "GenerateDataKey" for line in f) - 1
    except OSError:
        audited = -1
    finally:
        shutil.rmtree(data, ignore_errors=True)
    values = len(subset) * len(FIELDS)
    audit_note = f"audit log {audited:,}" if audited >= 0 else "no audit log"
    per_pass = calls // max(1, repeat)
    say(f"{PEER_ROWS[8]}: {values / secs:,.0f} values/s ({per_pass / secs:,.0f} calls/s, {values:,} values)")
    return [PeerRow(PEER_ROWS[8], values / secs, values, per_pass, per_pass * 1e6 / values,
                    (stored - plain_bytes) / values,
                    f"subset: {len(subset):,} records = {values:,} values; emulator in its own process, "
                    f"official SDK, 1 thread; {calls:,} GenerateDataKey counted ({audit_note}), "
                    f"{per_pass / secs:,.0f} calls/s, best of {repeat}", load.text())]  # fmt: skip
