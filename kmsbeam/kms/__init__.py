"""The kmsbeam KMS engine: Alibaba Cloud KMS semantics over a SQLite keystore.

It backs the embedded ``local:`` key source and the HTTP emulator. ``KmsEngine`` documents
the CiphertextBlob layout; ``KeyStore`` the file and its safety rules.
"""

from __future__ import annotations

from kmsbeam.kms._engine import KmsEngine
from kmsbeam.kms._store import KEYSTORE_FILENAME, KeyStore
from kmsbeam.kms._types import (
    AliasInfo,
    DataKeyResult,
    DecryptResult,
    EncryptResult,
    KeyMetadata,
    KeyVersion,
)

__all__ = [
    "KEYSTORE_FILENAME",
    "AliasInfo",
    "DataKeyResult",
    "DecryptResult",
    "EncryptResult",
    "KeyMetadata",
    "KeyStore",
    "KeyVersion",
    "KmsEngine",
]
