"""In-process paths of the peers table: kmsbeam's FieldEncryptor/FieldDecryptor, the AWS
Encryption SDK with a caching CMM over a raw AES master key, and Tink AEAD with a local keyset.

All run over the same records (``benchmarks.foundation.make_record``: three 16-byte strings
``ssn``, ``email``, ``phone``), one core, no Beam, the cyclic GC paused while timing (as
``benchmarks.foundation`` does). Peers much slower than kmsbeam run for at most ``budget``
seconds; the row says how many values that was.
"""

from __future__ import annotations

import gc
import math
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

from benchmarks._measure import Load, best_of
from benchmarks._peers_table import PEER_ROWS, CountingSource, PeerRow

__all__ = ["esdk_rows", "kmsbeam_rows", "tink_rows", "timed"]

FIELDS = ("ssn", "email", "phone")
BATCH = 512  # records per encrypt_batch call, as EncryptFields batches
ESDK_MAX_MESSAGES = 1_000_000  # the caching CMM's reuse cap, as kmsbeam's default max_records
Say = Callable[[str], None]


def timed(fn: Callable[[], Any], repeat: int = 1) -> tuple[float, Any, str]:
    """Best seconds of ``repeat`` runs of ``fn``, its last result and the load during them, with
    the cyclic GC paused (the harness keeps millions of objects alive, which a real job does not)."""
    gc.collect()
    gc.disable()
    try:
        t = best_of(repeat, fn)
        return t.best, t.result, t.load.text()
    finally:
        gc.enable()


def _per_million(calls: int, values: int) -> float:
    return calls * 1e6 / values if values else float("nan")


# -- kmsbeam ------------------------------------------------------------------------------
def kmsbeam_rows(key: str, records: Sequence[dict[str, Any]], say: Say, repeat: int = 1) -> list[PeerRow]:
    from kmsbeam import DataKeyCache, FieldDecryptor, FieldEncryptor, open_key_source

    values = len(records) * len(FIELDS)
    rows: list[PeerRow] = []
    encrypted: dict[str, list[dict[str, Any]]] = {}
    warm = FieldEncryptor(list(FIELDS), open_key_source(key))  # first-call costs stay out of timing
    FieldDecryptor(list(FIELDS), open_key_source(key)).decrypt_batch(warm.encrypt_batch(records[:BATCH]))
    for batched in (True, False):
        for encoding in ("bytes", "text"):
            source = CountingSource(open_key_source(key))
            enc = FieldEncryptor(list(FIELDS), source, encoding=encoding)
            if batched:
                def run() -> list[dict[str, Any]]:
                    out: list[dict[str, Any]] = []
                    for i in range(0, len(records), BATCH):
                        out += enc.encrypt_batch(records[i : i + BATCH])
                    return out
            else:
                def run() -> list[dict[str, Any]]:
                    return [enc.encrypt(r) for r in records]
            secs, out, load = timed(run, repeat)
            if enc.values != values * repeat:
                raise RuntimeError(f"kmsbeam encrypted {enc.values} values, not {values}")
            if batched and encoding == "bytes":
                encrypted[encoding] = out
            first, plain = out[0]["ssn"], records[0]["ssn"]
            over = len(first) - len(plain.encode())
            name = PEER_ROWS[(0 if batched else 2) + (encoding == "text")]
            how = f"{BATCH} records per call" if batched else "FieldEncryptor.encrypt"
            unit = "chars of base64" if encoding == "text" else "B"
            del out
            rows.append(PeerRow(name, values / secs, values, source.generate,
                                _per_million(source.generate, values * repeat), over,
                                f"{how}; {source.generate} GenerateDataKey (counted) for "
                                f"{values * repeat:,} values; +{over} {unit}; best of {repeat}", load))  # fmt: skip
            say(f"{name}: {values / secs:,.0f} values/s")
    source = CountingSource(open_key_source(key))
    dec = FieldDecryptor(list(FIELDS), source, cache=DataKeyCache())
    data = encrypted["bytes"]

    def decrypt_all() -> None:
        for i in range(0, len(data), BATCH):
            dec.decrypt_batch(data[i : i + BATCH])

    secs, _, load = timed(decrypt_all, repeat)
    if dec.values != values * repeat:
        raise RuntimeError(f"kmsbeam decrypted {dec.values} values, not {values}")
    rows.append(PeerRow(PEER_ROWS[4], values / secs, values, source.decrypt,
                        _per_million(source.decrypt, values * repeat), rows[0].overhead,
                        f"{BATCH} records per call, fresh cache; {source.decrypt} Decrypt (counted); "
                        f"best of {repeat}", load))  # fmt: skip
    say(f"{PEER_ROWS[4]}: {values / secs:,.0f} values/s")
    return rows


# -- the per-value loop of the peers ---------------------------------------------------------
def _per_value(records: Sequence[dict[str, Any]], budget: float, seal: Callable[[str, bytes], bytes],
               repeat: int = 1) -> tuple[float, int, int, int, str]:  # fmt: skip
    """Seal every field value of ``records`` until done or ``budget`` seconds have passed,
    ``repeat`` times; of the fastest run (values/s): (seconds, values sealed, ciphertext bytes -
    plaintext bytes), then the values sealed by all runs and the load during them."""

    def run() -> tuple[int, int]:
        deadline = time.perf_counter() + budget
        done = extra = 0
        for i, record in enumerate(records):
            if i % 64 == 0 and time.perf_counter() > deadline:
                break
            for field in FIELDS:
                plain = record[field].encode()
                extra += len(seal(field, plain)) - len(plain)
                done += 1
        return done, extra

    best: tuple[float, int, int] = (0.0, 0, 0)
    total = 0
    with Load() as load:
        for _ in range(max(1, repeat)):
            secs, (done, extra), _load = timed(run)
            total += done
            if best[1] == 0 or done / secs > best[1] / best[0]:
                best = (secs, done, extra)
    return (*best, total, load.text())


def _bounded(done: int, values: int) -> str:
    return f"all {values:,} values" if done == values else f"time-boxed: {done:,} of {values:,} values"


# -- AWS Encryption SDK ---------------------------------------------------------------------
def esdk_rows(records: Sequence[dict[str, Any]], budget: float, say: Say, repeat: int = 1) -> list[PeerRow]:
    """One ESDK message per value, through a CachingCryptoMaterialsManager over a raw AES-256
    master key (no AWS access). Calls to the master key's data-key generation are counted:
    with ``KMSMasterKey`` each would be one KMS GenerateDataKey."""
    import aws_encryption_sdk as esdk
    from aws_encryption_sdk.identifiers import (Algorithm, CommitmentPolicy, EncryptionKeyType,
                                                WrappingAlgorithm)  # fmt: skip
    from aws_encryption_sdk.internal.crypto.wrapping_keys import WrappingKey
    from aws_encryption_sdk.key_providers.raw import RawMasterKey, RawMasterKeyProvider

    calls = [0]
    wrapping = WrappingKey(wrapping_algorithm=WrappingAlgorithm.AES_256_GCM_IV12_TAG16_NO_PADDING,
                           wrapping_key=os.urandom(32), wrapping_key_type=EncryptionKeyType.SYMMETRIC)  # fmt: skip

    class CountingKey(RawMasterKey):  # type: ignore[misc]
        def _generate_data_key(self, algorithm: Any, encryption_context: Any) -> Any:
            calls[0] += 1
            return super()._generate_data_key(algorithm, encryption_context)

    class Provider(RawMasterKeyProvider):  # type: ignore[misc]
        provider_id = "kmsbeam-bench"

        def _get_raw_key(self, key_id: bytes) -> WrappingKey:
            return wrapping

        def _new_master_key(self, key_id: bytes) -> Any:
            return CountingKey(key_id=key_id, provider_id=self.provider_id, wrapping_key=wrapping)

    client = esdk.EncryptionSDKClient(commitment_policy=CommitmentPolicy.REQUIRE_ENCRYPT_REQUIRE_DECRYPT)
    values = len(records) * len(FIELDS)
    rows: list[PeerRow] = []
    suites = ((PEER_ROWS[5], Algorithm.AES_256_GCM_HKDF_SHA512_COMMIT_KEY, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY"),
              (PEER_ROWS[6], None, "AES_256_GCM_HKDF_SHA512_COMMIT_KEY_ECDSA_P384 (signed)"))  # fmt: skip
    for name, algorithm, label in suites:
        provider = Provider()
        provider.add_master_key(b"bench")
        cmm = esdk.CachingCryptoMaterialsManager(
            master_key_provider=provider, cache=esdk.LocalCryptoMaterialsCache(capacity=100),
            max_age=3600.0, max_messages_encrypted=ESDK_MAX_MESSAGES)  # fmt: skip
        extra_args = {} if algorithm is None else {"algorithm": algorithm}
        context = {"table": "customers"}

        def seal(field: str, plain: bytes) -> bytes:
            ct, _ = client.encrypt(source=plain, materials_manager=cmm, encryption_context=context,
                                   **extra_args)  # fmt: skip
            return bytes(ct)

        calls[0] = 0
        secs, done, extra, total, load = _per_value(records, budget, seal, repeat)
        measured = calls[0]
        expected = math.ceil(total / ESDK_MAX_MESSAGES)
        if measured != expected:
            raise RuntimeError(f"ESDK made {measured} data-key calls for {total} values, not {expected}")
        rows.append(PeerRow(name, done / secs, done, measured, 1e6 / ESDK_MAX_MESSAGES, extra / done,
                            f"{label}, one message per value, {_bounded(done, values)}; {measured} "
                            f"master-key generate call(s) counted; cache cap {ESDK_MAX_MESSAGES:,} "
                            f"messages per data key -> 1 per 1M; best of {repeat}", load))  # fmt: skip
        say(f"{name}: {done / secs:,.0f} values/s ({done:,} values)")
    return rows


# -- Tink -------------------------------------------------------------------------------------
def tink_rows(records: Sequence[dict[str, Any]], budget: float, say: Say, repeat: int = 1) -> list[PeerRow]:
    """One ``Aead.encrypt`` per value with a local AES256_GCM keyset (field name as AAD)."""
    import tink
    from tink import aead

    aead.register()
    primitive = tink.new_keyset_handle(aead.aead_key_templates.AES256_GCM).primitive(aead.Aead)
    names = {f: f.encode() for f in FIELDS}

    def seal(field: str, plain: bytes) -> bytes:
        return bytes(primitive.encrypt(plain, names[field]))

    values = len(records) * len(FIELDS)
    secs, done, extra, _total, load = _per_value(records, budget, seal, repeat)
    say(f"{PEER_ROWS[7]}: {done / secs:,.0f} values/s ({done:,} values)")
    return [PeerRow(PEER_ROWS[7], done / secs, done, 0, 0.0, extra / done,
                    f"no envelope, no KMS: one key in memory; {_bounded(done, values)}; "
                    f"5 B key-id prefix + 12 B nonce + 16 B tag; best of {repeat}", load)]  # fmt: skip
