"""The KMS engine: master keys, versions, aliases and crypto with Alibaba Cloud KMS semantics.

The same engine backs the embedded ``local:`` keystore and the HTTP emulator of Alibaba KMS
API 2016-01-20, so names, states and error codes follow Alibaba's. Key management lives in
``_keys``, BYOK in ``_import``, scheduled events (rotation, deletion, material expiry) in
``_core``; this module adds aliases and the cryptographic operations.
"""

from __future__ import annotations

import base64
from collections.abc import Hashable, Mapping
from typing import Any

from kmsbeam.errors import ConfigurationError, KeyNotFoundError
from kmsbeam.kms import _blob
from kmsbeam.kms._import import ImportOps
from kmsbeam.kms._keys import KeyOps
from kmsbeam.kms._params import bad, check_alias, check_description, context_bytes, iso
from kmsbeam.kms._store import StoreTransaction
from kmsbeam.kms._types import (
    AliasInfo,
    DataKeyResult,
    DecryptResult,
    EncryptResult,
    KeyMetadata,
    KeyVersion,
)

__all__ = ["KmsEngine"]

MAX_PLAINTEXT = 6144  # Alibaba: Encrypt takes at most 6 KiB
MEMO_ENTRIES = 4096  # usable keys and versions remembered per process (KeyStore.memo)
_NEVER = "~"  # after every ISO date: no event is scheduled
INSTANCE_AAD_PREFIX = b"\x00kmsbeam-instance-aad\x00"  # never a canonical context's "{"


def _instance_aad(aad: bytes) -> bytes:
    if not isinstance(aad, (bytes, bytearray, memoryview)):
        raise TypeError("aad is bytes")
    return INSTANCE_AAD_PREFIX + bytes(aad)


def _remember(memo: dict[Hashable, Any], name: Hashable, entry: tuple[Any, ...]) -> None:
    """Keep what one read found about a usable key: ``(..., due)``, valid while the
    keystore file is unchanged (``memo`` says so) and ``iso(now) < due`` (nothing
    scheduled has fallen due, so ``_reading`` would have read the same rows)."""
    if len(memo) < MEMO_ENTRIES:
        memo[name] = entry


class KmsEngine(KeyOps, ImportOps):
    """Alibaba-style KMS over a ``KeyStore``; thread- and process-safe through the store.

    A key is named by its KeyId, its ARN (``acs:kms:REGION:ACCOUNT:key/ID``), an alias
    (``alias/NAME``) or an alias ARN. Each key version holds 32 bytes of AES-256 key
    material (random, or imported for an EXTERNAL key). The CiphertextBlob (raw bytes; the
    HTTP layer base64s it) is::

        +----------------------+--------+-----------------------------+---------+
        | KeyVersionId (36 B,  | IV     | AES-256-GCM ciphertext      | tag     |
        | ASCII uuid4)         | (12 B) | (len(plaintext) bytes)      | (16 B)  |
        +----------------------+--------+-----------------------------+---------+
        AAD = KeyVersionId (36 B) || canonical_context(encryption context)

    ``generate_data_key`` encrypts the base64 *text* of the data key, as Alibaba does, so a
    32-byte key gives a 36 + 12 + 44 + 16 = 108-byte blob (144 base64 characters).
    Decrypt needs no key id: the blob names its version, so older versions keep working.
    Any blob that does not open raises ``AuthenticationError`` (``InvalidCiphertext``); a
    blob of a key deleted after its pending window raises ``Forbidden.KeyNotFound``.

    Scheduled events (automatic rotation, deletion, material expiry) happen lazily at the
    start of each operation, or all at once with ``rotate_due_keys``.

    Encrypt, GenerateDataKey and Decrypt remember a usable key and version per process
    (``KeyStore.memo``) while the keystore file is unchanged and no scheduled event is due,
    so a repeated call skips the read transaction; any change by any process or connection
    (disable, rotate, deletion, alias) is seen by the very next call.

    Args:
        store: where keys live.
        clock: seconds since the epoch (``time.time``); injectable for tests.
        random_bytes: ``os.urandom``-like source of key material, ids, IVs, data keys and
            import tokens (RSA wrapping keys come from ``cryptography``'s own generator).
        region, account: used in ARNs.
    """

    # -- aliases ------------------------------------------------------------------------
    def create_alias(self, alias_name: str, key: str) -> None:
        check_alias(alias_name)
        with self._writing() as tx:
            key_id = self._resolve(tx, key).key_id
            if tx.get_alias(alias_name) is not None:
                raise ConfigurationError(
                    f"the alias {alias_name} already exists", code="AliasAlreadyExists"
                )
            tx.put_alias(alias_name, key_id)

    def update_alias(self, alias_name: str, key: str) -> None:
        """Point an existing alias at another key."""
        check_alias(alias_name)
        with self._writing() as tx:
            key_id = self._resolve(tx, key).key_id
            self._alias_target(tx, alias_name)
            tx.put_alias(alias_name, key_id)

    def delete_alias(self, alias_name: str) -> None:
        with self._writing() as tx:
            self._alias_target(tx, alias_name)
            tx.delete_alias(alias_name)

    def list_aliases(self) -> list[AliasInfo]:
        with self._reading() as tx:
            return [self._alias_info(a, k) for a, k in tx.list_aliases()]

    def list_aliases_by_key_id(self, key: str) -> list[AliasInfo]:
        with self._reading() as tx:
            key_id = self._resolve(tx, key).key_id
            return [self._alias_info(a, k) for a, k in tx.list_aliases(key_id)]

    def ensure_alias(self, alias_name: str, description: str = "") -> KeyMetadata:
        """The key behind ``alias_name``, creating the key and alias if the alias is new."""
        return self.get_or_create_alias(alias_name, description)[0]

    def get_or_create_alias(
        self, alias_name: str, description: str = ""
    ) -> tuple[KeyMetadata, bool]:
        """Like ``ensure_alias``, also saying whether this call created the key.

        Atomic across processes: the check and the creation share one ``BEGIN IMMEDIATE``
        transaction, so racing callers end up with exactly one key.
        """
        check_alias(alias_name)
        check_description(description)
        with self._reading() as tx:
            if tx.get_alias(alias_name) is not None:
                return self._resolve(tx, alias_name), False
        with self._writing() as tx:
            if tx.get_alias(alias_name) is not None:
                return self._resolve(tx, alias_name), False
            meta = self._new_key(tx, description, None)
            tx.put_alias(alias_name, meta.key_id)
            return meta, True

    # -- crypto -------------------------------------------------------------------------
    def encrypt(
        self, key: str, plaintext: bytes, context: Mapping[str, str] | None = None
    ) -> EncryptResult:
        """Encrypt up to 6 KiB under the key's primary version, binding ``context``."""
        if not isinstance(plaintext, (bytes, bytearray, memoryview)):
            raise TypeError("plaintext is bytes")
        if not 1 <= len(plaintext) <= MAX_PLAINTEXT:
            raise bad(f"the plaintext must be 1 to {MAX_PLAINTEXT} bytes")
        return self._seal(key, bytes(plaintext), context_bytes(context))

    def generate_data_key(
        self, key: str, number_of_bytes: int = 32, context: Mapping[str, str] | None = None
    ) -> DataKeyResult:
        """A random data key and its blob (the encryption of the key's base64 text)."""
        dek, sealed = self._data_key(key, number_of_bytes, context)
        return DataKeyResult(sealed.key_id, sealed.key_version_id, dek, sealed.ciphertext_blob)

    def generate_data_key_without_plaintext(
        self, key: str, number_of_bytes: int = 32, context: Mapping[str, str] | None = None
    ) -> EncryptResult:
        return self._data_key(key, number_of_bytes, context)[1]

    def decrypt(
        self, ciphertext_blob: bytes, context: Mapping[str, str] | None = None
    ) -> DecryptResult:
        """Decrypt a blob of any key in the store (for a data key: its base64 text)."""
        meta, version, plaintext = self._open(ciphertext_blob, context_bytes(context))
        return DecryptResult(meta.key_id, version.key_version_id, plaintext)

    def re_encrypt(
        self,
        ciphertext_blob: bytes,
        destination_key: str,
        source_context: Mapping[str, str] | None = None,
        destination_context: Mapping[str, str] | None = None,
    ) -> EncryptResult:
        """Decrypt and re-encrypt under ``destination_key``; the plaintext never leaves."""
        destination = context_bytes(destination_context)
        plaintext = self._open(ciphertext_blob, context_bytes(source_context))[2]
        return self._seal(destination_key, plaintext, destination)

    # -- raw-bytes AAD (the KMS 3.0 instance API's Aad) --------------------------------
    def encrypt_with_aad(self, key: str, plaintext: bytes, aad: bytes = b"") -> EncryptResult:
        """Encrypt up to 6 KiB under the key's primary version, binding raw ``aad`` bytes.

        The AAD is ``INSTANCE_AAD_PREFIX || aad``; a canonical encryption context always
        starts with ``{``, so a blob of these methods never opens through ``decrypt`` with
        any context, nor a blob of ``encrypt`` through ``decrypt_with_aad``.
        """
        if not isinstance(plaintext, (bytes, bytearray, memoryview)):
            raise TypeError("plaintext is bytes")
        if not 1 <= len(plaintext) <= MAX_PLAINTEXT:
            raise bad(f"the plaintext must be 1 to {MAX_PLAINTEXT} bytes")
        return self._seal(key, bytes(plaintext), _instance_aad(aad))

    def generate_data_key_with_aad(
        self, key: str, number_of_bytes: int = 32, aad: bytes = b""
    ) -> DataKeyResult:
        """A random data key and its blob: the encryption of the *raw* key bytes (not their
        base64 text), binding raw ``aad`` bytes (see ``encrypt_with_aad``)."""
        if isinstance(number_of_bytes, bool) or not isinstance(number_of_bytes, int):
            raise TypeError("number_of_bytes is an int")
        if not 1 <= number_of_bytes <= 1024:
            raise bad("NumberOfBytes must be between 1 and 1024")
        bound = _instance_aad(aad)
        dek = self._random(number_of_bytes)
        sealed = self._seal(key, dek, bound)
        return DataKeyResult(sealed.key_id, sealed.key_version_id, dek, sealed.ciphertext_blob)

    def decrypt_with_aad(self, ciphertext_blob: bytes, aad: bytes = b"") -> DecryptResult:
        """Decrypt a blob of ``encrypt_with_aad`` / ``generate_data_key_with_aad``."""
        meta, version, plaintext = self._open(ciphertext_blob, _instance_aad(aad))
        return DecryptResult(meta.key_id, version.key_version_id, plaintext)

    # -- internals ----------------------------------------------------------------------
    def _data_key(
        self, key: str, number_of_bytes: int, context: Mapping[str, str] | None
    ) -> tuple[bytes, EncryptResult]:
        if isinstance(number_of_bytes, bool) or not isinstance(number_of_bytes, int):
            raise TypeError("number_of_bytes is an int")
        if not 1 <= number_of_bytes <= 1024:
            raise bad("NumberOfBytes must be between 1 and 1024")
        ctx = context_bytes(context)
        dek = self._random(number_of_bytes)
        return dek, self._seal(key, base64.b64encode(dek), ctx)

    def _seal(self, key: str, plaintext: bytes, context: bytes) -> EncryptResult:
        memo, name = self.store.memo(), (self.region, self.account, "primary", key)
        hit = memo.get(name)
        if hit is not None and iso(self._clock()) < hit[2]:
            meta, version = hit[0], hit[1]
        else:
            with self._reading() as tx:
                meta = self._resolve(tx, key)
                self._check_usable(meta)
                version = tx.get_version(meta.primary_key_version)
                due = tx.next_due() or _NEVER
            if version is None or not version.material:  # impossible short of manual edits
                raise KeyNotFoundError(
                    f"key {meta.key_id} has no primary version", code="Forbidden.KeyNotFound"
                )
            _remember(memo, name, (meta, version, due))
        iv = self._random(_blob.IV_LEN)
        blob = _blob.seal(version.key_version_id, version.material, iv, plaintext, context)
        return EncryptResult(meta.key_id, version.key_version_id, blob)

    def _open(self, blob: bytes, context: bytes) -> tuple[KeyMetadata, KeyVersion, bytes]:
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError("a ciphertext blob is bytes")
        blob = bytes(blob)
        version_id = _blob.split(blob)
        memo, name = self.store.memo(), ("version", version_id)
        hit, deleted = memo.get(name), None
        if hit is not None and iso(self._clock()) < hit[2]:
            version, meta = hit[0], hit[1]
        else:
            with self._reading() as tx:
                version = tx.get_version(version_id)
                meta = None if version is None else tx.get_key(version.key_id)
                deleted = tx.deleted_version_key(version_id) if version is None else None
                due = tx.next_due() or _NEVER
            if version and version.material and meta and meta.key_state == "Enabled":
                _remember(memo, name, (version, meta, due))
        if deleted is not None:
            raise KeyNotFoundError(f"key {deleted} was deleted", code="Forbidden.KeyNotFound")
        if version is None or meta is None:
            raise _blob.invalid_ciphertext()
        if not version.material:  # imported material expired or deleted: PendingImport
            self._check_usable(meta)
            raise _blob.invalid_ciphertext()
        plaintext = _blob.open_blob(blob, version.material, context)
        self._check_usable(meta)  # after authentication: forgeries all look alike
        return self._with_arn(meta), version, plaintext

    def _alias_target(self, tx: StoreTransaction, alias_name: str) -> str:
        key_id = tx.get_alias(alias_name) if isinstance(alias_name, str) else None
        if key_id is None:
            raise KeyNotFoundError(f"no alias {alias_name}", code="Forbidden.AliasNotFound")
        return key_id

    def _alias_info(self, alias_name: str, key_id: str) -> AliasInfo:
        arn = f"acs:kms:{self.region}:{self.account}:{alias_name}"
        return AliasInfo(alias_name, key_id, arn)
