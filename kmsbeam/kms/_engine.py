"""The KMS engine: master keys, versions, aliases and crypto with Alibaba Cloud KMS semantics.

The same engine backs the embedded ``local:`` keystore and the HTTP emulator of Alibaba KMS
API 2016-01-20, so names, states and error codes follow Alibaba's.
"""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import replace

from kmsbeam.errors import ConfigurationError, KeyDisabledError, KeyNotFoundError
from kmsbeam.kms import _blob
from kmsbeam.kms._params import (
    bad,
    check_alias,
    check_description,
    context_bytes,
    iso,
    rotation_fields,
)
from kmsbeam.kms._store import KeyStore, StoreTransaction
from kmsbeam.kms._types import (
    AliasInfo,
    DataKeyResult,
    DecryptResult,
    EncryptResult,
    KeyMetadata,
    KeyVersion,
)

__all__ = ["KmsEngine"]

_REJECTED = {
    "Disabled": "Rejected.Disabled",
    "PendingDeletion": "Rejected.PendingDeletion",
    "PendingImport": "Rejected.PendingImport",
}
MAX_PLAINTEXT = 6144  # Alibaba: Encrypt takes at most 6 KiB


class KmsEngine:
    """Alibaba-style KMS over a ``KeyStore``; thread- and process-safe through the store.

    A key is named by its KeyId, its ARN (``acs:kms:REGION:ACCOUNT:key/ID``), an alias
    (``alias/NAME``) or an alias ARN. Each key version holds 32 random bytes of AES-256 key
    material. The CiphertextBlob (raw bytes; the HTTP layer base64s it) is::

        +----------------------+--------+-----------------------------+---------+
        | KeyVersionId (36 B,  | IV     | AES-256-GCM ciphertext      | tag     |
        | ASCII uuid4)         | (12 B) | (len(plaintext) bytes)      | (16 B)  |
        +----------------------+--------+-----------------------------+---------+
        AAD = KeyVersionId (36 B) || canonical_context(encryption context)

    ``generate_data_key`` encrypts the base64 *text* of the data key, as Alibaba does, so a
    32-byte key gives a 36 + 12 + 44 + 16 = 108-byte blob (144 base64 characters).
    Decrypt needs no key id: the blob names its version, so older versions keep working.
    Any blob that does not open raises ``AuthenticationError`` (``InvalidCiphertext``).

    Args:
        store: where keys live.
        clock: seconds since the epoch (``time.time``); injectable for tests.
        random_bytes: ``os.urandom``-like source of key material, IVs and data keys.
        region, account: used in ARNs.
    """

    def __init__(
        self,
        store: KeyStore,
        *,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = os.urandom,
        region: str = "local",
        account: str = "0" * 16,
    ) -> None:
        self.store = store
        self._clock = clock
        self._random = random_bytes
        self.region = region
        self.account = account

    def __repr__(self) -> str:
        return f"KmsEngine({self.store!r}, region={self.region!r})"

    # -- keys ---------------------------------------------------------------------------
    def create_key(
        self, description: str = "", *, rotation_interval: str | None = None
    ) -> KeyMetadata:
        """Create an enabled AES-256 key; a ``rotation_interval`` turns on automatic rotation."""
        with self.store.write() as tx:
            return self._new_key(tx, description, rotation_interval)

    def describe_key(self, key: str) -> KeyMetadata:
        with self.store.read() as tx:
            return self._resolve(tx, key)

    def list_keys(self) -> list[KeyMetadata]:
        with self.store.read() as tx:
            return [self._with_arn(k) for k in tx.list_keys()]

    def enable_key(self, key: str) -> KeyMetadata:
        return self._set_state(key, "Enabled", {"Enabled", "Disabled"})

    def disable_key(self, key: str) -> KeyMetadata:
        return self._set_state(key, "Disabled", {"Enabled", "Disabled"})

    def schedule_key_deletion(self, key: str, pending_window_days: int) -> KeyMetadata:
        """Mark a key PendingDeletion; it is unusable until ``cancel_key_deletion``."""
        if isinstance(pending_window_days, bool) or not isinstance(pending_window_days, int):
            raise TypeError("pending_window_days is an int")
        if not 7 <= pending_window_days <= 366:
            raise bad("PendingWindowInDays must be between 7 and 366")
        when = iso(self._clock() + pending_window_days * 86400)
        return self._set_state(key, "PendingDeletion", {"Enabled", "Disabled"}, delete_date=when)

    def cancel_key_deletion(self, key: str) -> KeyMetadata:
        """Take a key out of PendingDeletion; like Alibaba, it comes back Disabled."""
        return self._set_state(key, "Disabled", {"PendingDeletion"}, delete_date="")

    def update_key_description(self, key: str, description: str) -> KeyMetadata:
        check_description(description)
        with self.store.write() as tx:
            meta = self._resolve(tx, key)
            tx.update_key(meta.key_id, description=description)
            return replace(meta, description=description)

    def update_rotation_policy(self, key: str, interval: str | None) -> KeyMetadata:
        """Turn automatic rotation on (``interval`` such as ``"30d"``/``"604800s"``) or off."""
        with self.store.write() as tx:
            meta = self._resolve(tx, key)
            values = rotation_fields(interval, self._clock())
            tx.update_key(meta.key_id, **values)
            return replace(meta, **values)

    def create_key_version(self, key: str) -> KeyVersion:
        """Add a version to an enabled key and make it primary (returned without material)."""
        with self.store.write() as tx:
            meta = self._resolve(tx, key)
            self._check_usable(meta)
            version = self._new_version(tx, meta.key_id)
            tx.update_key(
                meta.key_id,
                primary_key_version=version.key_version_id,
                last_rotation_date=version.creation_date,
            )
            return replace(version, material=b"")

    def list_key_versions(self, key: str) -> list[KeyVersion]:
        with self.store.read() as tx:
            return tx.list_versions(self._resolve(tx, key).key_id)

    # -- aliases ------------------------------------------------------------------------
    def create_alias(self, alias_name: str, key: str) -> None:
        check_alias(alias_name)
        with self.store.write() as tx:
            key_id = self._resolve(tx, key).key_id
            if tx.get_alias(alias_name) is not None:
                raise ConfigurationError(
                    f"the alias {alias_name} already exists", code="AliasAlreadyExists"
                )
            tx.put_alias(alias_name, key_id)

    def update_alias(self, alias_name: str, key: str) -> None:
        """Point an existing alias at another key."""
        check_alias(alias_name)
        with self.store.write() as tx:
            key_id = self._resolve(tx, key).key_id
            self._alias_target(tx, alias_name)
            tx.put_alias(alias_name, key_id)

    def delete_alias(self, alias_name: str) -> None:
        with self.store.write() as tx:
            self._alias_target(tx, alias_name)
            tx.delete_alias(alias_name)

    def list_aliases(self) -> list[AliasInfo]:
        with self.store.read() as tx:
            return [self._alias_info(a, k) for a, k in tx.list_aliases()]

    def list_aliases_by_key_id(self, key: str) -> list[AliasInfo]:
        with self.store.read() as tx:
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
        with self.store.read() as tx:
            if tx.get_alias(alias_name) is not None:
                return self._resolve(tx, alias_name), False
        with self.store.write() as tx:
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
        with self.store.read() as tx:
            meta = self._resolve(tx, key)
            self._check_usable(meta)
            version = tx.get_version(meta.primary_key_version)
        if version is None:  # the schema makes this impossible short of manual edits
            raise KeyNotFoundError(
                f"key {meta.key_id} has no primary version", code="Forbidden.KeyNotFound"
            )
        iv = self._random(_blob.IV_LEN)
        blob = _blob.seal(version.key_version_id, version.material, iv, plaintext, context)
        return EncryptResult(meta.key_id, version.key_version_id, blob)

    def _open(self, blob: bytes, context: bytes) -> tuple[KeyMetadata, KeyVersion, bytes]:
        if not isinstance(blob, (bytes, bytearray, memoryview)):
            raise TypeError("a ciphertext blob is bytes")
        blob = bytes(blob)
        version_id = _blob.split(blob)
        with self.store.read() as tx:
            version = tx.get_version(version_id)
            meta = None if version is None else tx.get_key(version.key_id)
        if version is None or meta is None:
            raise _blob.invalid_ciphertext()
        plaintext = _blob.open_blob(blob, version.material, context)
        self._check_usable(meta)  # after authentication: forgeries all look alike
        return self._with_arn(meta), version, plaintext

    def _new_key(self, tx: StoreTransaction, description: str, interval: str | None) -> KeyMetadata:
        check_description(description)
        now = self._clock()
        key_id = str(uuid.UUID(bytes=self._random(16), version=4))
        version_id = str(uuid.UUID(bytes=self._random(16), version=4))
        meta = KeyMetadata(
            key_id=key_id,
            description=description,
            key_state="Enabled",
            key_spec="Aliyun_AES_256",
            key_usage="ENCRYPT/DECRYPT",
            protection_level="SOFTWARE",
            origin="Aliyun_KMS",
            creation_date=iso(now),
            primary_key_version=version_id,
            **rotation_fields(interval, now),
        )
        tx.insert_key(meta)
        self._new_version(tx, key_id, version_id)
        return self._with_arn(meta)

    def _new_version(self, tx: StoreTransaction, key_id: str, version_id: str = "") -> KeyVersion:
        version = KeyVersion(
            key_version_id=version_id or str(uuid.UUID(bytes=self._random(16), version=4)),
            key_id=key_id,
            creation_date=iso(self._clock()),
            material=self._random(32),
        )
        tx.insert_version(version)
        return version

    def _set_state(self, key: str, state: str, allowed: set[str], **extra: str) -> KeyMetadata:
        with self.store.write() as tx:
            meta = self._resolve(tx, key)
            if meta.key_state not in allowed:
                if meta.key_state in _REJECTED and meta.key_state != "Disabled":
                    raise KeyDisabledError(
                        f"key {meta.key_id} is {meta.key_state}", code=_REJECTED[meta.key_state]
                    )
                raise bad(f"key {meta.key_id} is {meta.key_state}, not pending deletion")
            tx.update_key(meta.key_id, key_state=state, **extra)
            return replace(meta, key_state=state, **extra)

    def _resolve(self, tx: StoreTransaction, key: str) -> KeyMetadata:
        if not isinstance(key, str):
            raise TypeError("a key is named by a str: key id, ARN or alias")
        name = key
        prefix = f"acs:kms:{self.region}:{self.account}:"
        if key.startswith("acs:"):
            if not key.startswith(prefix) or not key[len(prefix) :].startswith(("key/", "alias/")):
                raise KeyNotFoundError(f"no key with ARN {key}", code="Forbidden.KeyNotFound")
            name = key[len(prefix) :].removeprefix("key/")
        if name.startswith("alias/"):
            key_id = tx.get_alias(name)
            if key_id is None:
                raise KeyNotFoundError(f"no alias {name}", code="Forbidden.AliasNotFound")
        elif not name:
            raise bad("a key id, ARN or alias is required")
        else:
            key_id = name
        meta = tx.get_key(key_id)
        if meta is None:
            raise KeyNotFoundError(f"no key {key_id}", code="Forbidden.KeyNotFound")
        return self._with_arn(meta)

    def _alias_target(self, tx: StoreTransaction, alias_name: str) -> str:
        key_id = tx.get_alias(alias_name) if isinstance(alias_name, str) else None
        if key_id is None:
            raise KeyNotFoundError(f"no alias {alias_name}", code="Forbidden.AliasNotFound")
        return key_id

    def _alias_info(self, alias_name: str, key_id: str) -> AliasInfo:
        arn = f"acs:kms:{self.region}:{self.account}:{alias_name}"
        return AliasInfo(alias_name, key_id, arn)

    def _with_arn(self, meta: KeyMetadata) -> KeyMetadata:
        return replace(meta, arn=f"acs:kms:{self.region}:{self.account}:key/{meta.key_id}")

    @staticmethod
    def _check_usable(meta: KeyMetadata) -> None:
        if meta.key_state != "Enabled":
            raise KeyDisabledError(
                f"key {meta.key_id} is {meta.key_state}",
                code=_REJECTED.get(meta.key_state, "Rejected.Disabled"),
            )
