"""The kmsbeam KMS engine: Alibaba Cloud KMS semantics over a SQLite keystore.

It backs the embedded ``local:`` key source and the HTTP emulator. ``KmsEngine`` documents
the CiphertextBlob layout; ``KeyStore`` the file and its safety rules. Besides keys,
versions, aliases and crypto, the engine does BYOK (``get_parameters_for_import`` /
``import_key_material``), tags, and automatic rotation and deletion when they are due.
"""

from __future__ import annotations

from kmsbeam.kms._blob import data_key as data_key_from_base64
from kmsbeam.kms._blob import key_version as blob_key_version
from kmsbeam.kms._blob import wrapped_version as wrapped_blob_version
from kmsbeam.kms._engine import KmsEngine
from kmsbeam.kms._store import KEYSTORE_FILENAME, KeyStore
from kmsbeam.kms._types import (
    AliasInfo,
    DataKeyResult,
    DecryptResult,
    EncryptResult,
    ImportParameters,
    KeyMetadata,
    KeyVersion,
)

__all__ = [
    "KEYSTORE_FILENAME",
    "AliasInfo",
    "DataKeyResult",
    "DecryptResult",
    "EncryptResult",
    "ImportParameters",
    "KeyMetadata",
    "KeyStore",
    "KeyVersion",
    "KmsEngine",
    "blob_key_version",
    "data_key_from_base64",
    "wrapped_blob_version",
]
