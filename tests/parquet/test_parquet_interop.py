"""Interop: kmsbeam's PME files open in plain pyarrow with a KMS client written from
docs/FORMAT.md ("PME key text v1") alone, and files that client writes open in kmsbeam.

The client below uses only pyarrow, ``cryptography`` and the key source (the KMS): no
kmsbeam Parquet code. It is what a Spark or parquet-java user would write in their language.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import os
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pyarrow.parquet.encryption as pe
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from kmsbeam import open_key_source
from kmsbeam.formats.parquet import PmeDecryption, PmeEncryption, iter_row_group, open_parquet
from tests.parquet.conftest import events

LABEL = b"kmsbeam.pme-key.v1"


class SpecClient(pe.KmsClient):  # type: ignore[misc]
    """FORMAT.md, "PME key text v1", as a pyarrow KmsClient."""

    def __init__(self, uris: list[str], context: dict[str, str]) -> None:
        super().__init__()
        self.ids = {"kmsbeam-" + hashlib.sha256(u.encode()).hexdigest()[:16]: u for u in uris}
        self.context = context
        self.calls = 0

    @staticmethod
    def _aad(key_id: str, uri: bytes) -> bytes:
        kid = key_id.encode()
        return LABEL + struct.pack(">H", len(kid)) + kid + struct.pack(">H", len(uri)) + uri

    def unwrap_key(self, wrapped_key: str, master_key_identifier: str) -> bytes:
        data = base64.urlsafe_b64decode(wrapped_key + "=" * (-len(wrapped_key) % 4))
        assert data[0] == 0x01
        ulen = struct.unpack(">H", data[1:3])[0]
        uri = data[3 : 3 + ulen]
        wlen = struct.unpack(">H", data[3 + ulen : 5 + ulen])[0]
        wrapped = data[5 + ulen : 5 + ulen + wlen]
        nonce, sealed = data[5 + ulen + wlen : 17 + ulen + wlen], data[17 + ulen + wlen :]
        self.calls += 1
        dek = open_key_source(self.ids[master_key_identifier]).decrypt_data_key(wrapped, self.context)
        return AESGCM(dek).decrypt(nonce, sealed, self._aad(master_key_identifier, uri))

    def wrap_key(self, key_bytes: bytes, master_key_identifier: str) -> str:
        uri = self.ids[master_key_identifier].encode()
        data_key = open_key_source(self.ids[master_key_identifier]).generate_data_key(self.context)
        nonce = os.urandom(12)
        sealed = AESGCM(data_key.plaintext).encrypt(nonce, key_bytes, self._aad(master_key_identifier, uri))
        raw = (b"\x01" + struct.pack(">H", len(uri)) + uri + struct.pack(">H", len(data_key.wrapped))
               + data_key.wrapped + nonce + sealed)  # fmt: skip
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def spec_factory(uris: list[str], context: dict[str, str]) -> tuple[pe.CryptoFactory, list[SpecClient]]:
    made: list[SpecClient] = []

    def factory(config: pe.KmsConnectionConfig) -> SpecClient:
        made.append(SpecClient(uris, context))
        return made[-1]

    return pe.CryptoFactory(factory), made


def kid(uri: str) -> str:
    return "kmsbeam-" + hashlib.sha256(uri.encode()).hexdigest()[:16]


def test_plain_pyarrow_reads_kmsbeam_files(keys: dict[str, str], tmp_path: Path) -> None:
    table = events()
    context = {"dataset": "events"}
    for footer in (False, True):
        path = tmp_path / f"kmsbeam-{footer}.parquet"
        enc = PmeEncryption(keys["foot"], {"ssn": keys["pii"], "card": keys["pci"], "contact": keys["pii"]},
                            plaintext_footer=footer, context=context)  # fmt: skip
        pq.write_table(table, path, encryption_properties=enc.properties(table.schema))
        factory, made = spec_factory(list(keys.values()), context)
        props = factory.file_decryption_properties(pe.KmsConnectionConfig(key_access_token=f"spec-{footer}"))
        assert pq.ParquetFile(path, decryption_properties=props).read().equals(table)
        assert sum(c.calls for c in made) == 3  # double wrapping: one unwrap per master key


def test_kmsbeam_reads_files_the_spec_client_wrote(keys: dict[str, str], tmp_path: Path) -> None:
    table = events()
    factory, _ = spec_factory(list(keys.values()), {})
    config = pe.EncryptionConfiguration(
        footer_key=kid(keys["foot"]), column_keys={kid(keys["pii"]): ["ssn", "contact.email"]},
        double_wrapping=False, cache_lifetime=datetime.timedelta(minutes=5))  # fmt: skip
    props = factory.file_encryption_properties(pe.KmsConnectionConfig(key_access_token="spec-w"), config)
    pq.write_table(table, tmp_path / "spec.parquet", encryption_properties=props)
    pf = open_parquet(str(tmp_path / "spec.parquet"), "spec.parquet", PmeDecryption(list(keys.values())))
    back = pa.Table.from_batches(list(iter_row_group(pf, 0, "spec.parquet")))
    assert back.equals(table)
