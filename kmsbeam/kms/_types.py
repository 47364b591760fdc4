"""The KMS engine's records and results: keys, versions, aliases, crypto outcomes.

Names follow Alibaba Cloud KMS (``DescribeKey``, ``GenerateDataKey``...) in snake case. Key
material and plaintext never appear in a ``repr`` and results holding plaintext never pickle.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import NamedTuple, NoReturn

__all__ = [
    "KEY_COLUMNS",
    "AliasInfo",
    "DataKeyResult",
    "DecryptResult",
    "EncryptResult",
    "ImportParameters",
    "KeyMetadata",
    "KeyVersion",
]


@dataclass(frozen=True)
class KeyMetadata:
    """One master key, Alibaba KMS ``DescribeKey`` fields in snake case (no key material)."""

    key_id: str
    description: str
    key_state: str
    key_spec: str
    key_usage: str
    protection_level: str
    origin: str
    creation_date: str
    primary_key_version: str
    delete_date: str = ""
    automatic_rotation: str = "Disabled"
    rotation_interval: str = ""
    next_rotation_date: str = ""
    last_rotation_date: str = ""
    material_expire_time: str = ""  # imported material only: when it expires ("" = never)
    arn: str = ""  # derived by the engine from its region and account; not stored

    def to_alibaba(self) -> dict[str, str]:
        """The ``KeyMetadata`` object of Alibaba's ``DescribeKey`` (``key_id`` -> ``KeyId``)."""
        return {
            "".join(part.title() for part in f.name.split("_")): getattr(self, f.name)
            for f in fields(self)
        }


KEY_COLUMNS = tuple(f.name for f in fields(KeyMetadata) if f.name != "arn")


@dataclass(frozen=True)
class KeyVersion:
    """One version of a master key. ``material`` is secret and kept out of ``repr``."""

    key_version_id: str
    key_id: str
    creation_date: str
    material: bytes = field(repr=False, default=b"")

    def to_alibaba(self) -> dict[str, str]:
        """The ``KeyVersion`` object of ``DescribeKeyVersion`` / ``ListKeyVersions``."""
        return {
            "KeyId": self.key_id,
            "KeyVersionId": self.key_version_id,
            "CreationDate": self.creation_date,
        }


@dataclass(frozen=True)
class ImportParameters:
    """What ``GetParametersForImport`` returns (BYOK). Nothing secret: the private half of
    the wrapping key pair stays in the keystore.

    Attributes:
        key_id: the key the token is bound to.
        import_token: pass it back to ``ImportKeyMaterial``; valid until ``token_expire_time``.
        public_key: base64 of the DER ``SubjectPublicKeyInfo`` of an RSA-2048 wrapping key.
        token_expire_time: ISO 8601 UTC, 24 hours after the call.
    """

    key_id: str
    import_token: str
    public_key: str
    token_expire_time: str

    def to_alibaba(self) -> dict[str, str]:
        return {
            "KeyId": self.key_id,
            "ImportToken": self.import_token,
            "PublicKey": self.public_key,
            "TokenExpireTime": self.token_expire_time,
        }


class EncryptResult(NamedTuple):
    """What ``Encrypt``, ``ReEncrypt`` and ``GenerateDataKeyWithoutPlaintext`` return."""

    key_id: str
    key_version_id: str
    ciphertext_blob: bytes


class DataKeyResult(NamedTuple):
    """A generated data key: ``plaintext`` is the raw key (the blob holds its base64 text)."""

    key_id: str
    key_version_id: str
    plaintext: bytes
    ciphertext_blob: bytes

    def __repr__(self) -> str:
        return f"DataKeyResult(key_id={self.key_id!r}, key_version_id={self.key_version_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a DataKeyResult holds a plaintext data key and never pickles")


class DecryptResult(NamedTuple):
    """What ``Decrypt`` returns: the bytes exactly as encrypted (a data key's base64 text)."""

    key_id: str
    key_version_id: str
    plaintext: bytes

    def __repr__(self) -> str:
        return f"DecryptResult(key_id={self.key_id!r}, key_version_id={self.key_version_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a DecryptResult holds plaintext and never pickles")


class AliasInfo(NamedTuple):
    """One entry of ``ListAliases``."""

    alias_name: str
    key_id: str
    alias_arn: str
