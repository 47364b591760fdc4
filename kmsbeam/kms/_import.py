"""BYOK: importing key material into an EXTERNAL key (Alibaba's ``GetParametersForImport``,
``ImportKeyMaterial`` and ``DeleteKeyMaterial``).

::

    GetParametersForImport(key, WrappingAlgorithm, RSA_2048)
        -> ImportToken, PublicKey (base64 DER SubjectPublicKeyInfo), TokenExpireTime (+24 h)
    client: EncryptedKeyMaterial = RSA-encrypt(PublicKey, 32 random bytes)
    ImportKeyMaterial(key, EncryptedKeyMaterial, ImportToken, KeyMaterialExpireUnix)

Wrapping algorithms: ``RSAES_OAEP_SHA_256`` (OAEP, SHA-256 and MGF1-SHA-256),
``RSAES_OAEP_SHA_1`` (SHA-1, MGF1-SHA-1) and ``RSAES_PKCS1_V1_5``. Every call makes a new
RSA-2048 key pair; its private half is stored in the keystore with the token (under the
token's SHA-256, never the token itself), so a token works from any process until it
expires. A token is bound to one key, one key pair and one wrapping algorithm.

A key keeps its first imported material for life: the keystore remembers an HMAC check
value of it, and a later import (to renew the expiry, or after the material expired or was
deleted) must bring the same 32 bytes. Blobs made before an expiry decrypt again after it.

Error codes (the first two are Alibaba's common codes; Alibaba does not document finer ones):
``UnsupportedOperation`` for a key whose Origin is not EXTERNAL; ``InvalidParameter`` for an
unknown algorithm or spec, a wrong, expired or foreign token, material that does not unwrap
or is not 256 bits, different material on re-import, or an expiry in the past;
``Rejected.PendingDeletion`` for a key pending deletion.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.asymmetric.padding import AsymmetricPadding

from kmsbeam.kms._core import EngineCore
from kmsbeam.kms._params import bad, iso
from kmsbeam.kms._rows import TokenRow
from kmsbeam.kms._types import ImportParameters, KeyMetadata

__all__ = ["TOKEN_LIFETIME", "WRAPPING_ALGORITHMS", "WRAPPING_KEY_SPECS", "ImportOps"]

WRAPPING_ALGORITHMS = ("RSAES_OAEP_SHA_256", "RSAES_OAEP_SHA_1", "RSAES_PKCS1_V1_5")
WRAPPING_KEY_SPECS = ("RSA_2048",)
TOKEN_LIFETIME = 24 * 3600
MATERIAL_LEN = 32  # Aliyun_AES_256
_CHECK_LABEL = b"kmsbeam/kms imported key material check value v1"


class ImportOps(EngineCore):
    """The BYOK operations of ``KmsEngine`` (see the module docstring for the protocol)."""

    def get_parameters_for_import(
        self, key: str, wrapping_algorithm: str, wrapping_key_spec: str
    ) -> ImportParameters:
        """A fresh RSA-2048 wrapping key and an import token for an EXTERNAL key (24 h)."""
        if not isinstance(wrapping_algorithm, str) or not isinstance(wrapping_key_spec, str):
            raise TypeError("wrapping_algorithm and wrapping_key_spec are str")
        if wrapping_key_spec not in WRAPPING_KEY_SPECS:
            raise bad(f"WrappingKeySpec must be one of {', '.join(WRAPPING_KEY_SPECS)}")
        if wrapping_algorithm not in WRAPPING_ALGORITHMS:
            raise bad(f"WrappingAlgorithm must be one of {', '.join(WRAPPING_ALGORITHMS)}")
        with self._reading() as tx:  # fail before the costly key generation
            self._check_importable(self._resolve(tx, key), "GetParametersForImport")
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        private_der = private.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        public_der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        token = base64.b64encode(self._random(48)).decode("ascii")
        now = int(self._clock())
        expire = now + TOKEN_LIFETIME
        with self._writing() as tx:
            meta = self._resolve(tx, key)
            self._check_importable(meta, "GetParametersForImport")
            tx.purge_tokens(now)
            row = TokenRow(meta.key_id, wrapping_algorithm, wrapping_key_spec, private_der, expire)
            tx.insert_token(_token_hash(token), row)
        return ImportParameters(
            key_id=meta.key_id,
            import_token=token,
            public_key=base64.b64encode(public_der).decode("ascii"),
            token_expire_time=iso(expire),
        )

    def import_key_material(
        self,
        key: str,
        encrypted_key_material: bytes,
        import_token: str,
        key_material_expire_unix: int = 0,
    ) -> None:
        """Unwrap and install 256 bits of key material; a PendingImport key becomes Enabled.

        Args:
            key: the EXTERNAL key the token was issued for (id, ARN or alias).
            encrypted_key_material: the RSA ciphertext (raw bytes; the HTTP layer decodes
                Alibaba's base64).
            import_token: from ``get_parameters_for_import``, not expired.
            key_material_expire_unix: when the material expires (seconds since the epoch,
                later than now), or 0 for never. At that time the key goes back to
                PendingImport until the same material is imported again.
        """
        if not isinstance(encrypted_key_material, (bytes, bytearray, memoryview)):
            raise TypeError("encrypted_key_material is bytes")
        if not isinstance(import_token, str):
            raise TypeError("import_token is a str")
        expire = key_material_expire_unix
        if isinstance(expire, bool) or not isinstance(expire, int):
            raise TypeError("key_material_expire_unix is an int")
        now = self._clock()
        if expire < 0 or 0 < expire <= now:
            raise bad("KeyMaterialExpireUnix must be later than now, or 0 for never")
        with self._writing() as tx:
            meta = self._resolve(tx, key)
            self._check_importable(meta, "ImportKeyMaterial")
            row = tx.get_token(_token_hash(import_token))
            if row is None or row.key_id != meta.key_id:
                raise bad(f"the import token is not valid for key {meta.key_id}")
            if row.expire_unix <= now:
                raise bad("the import token has expired; call GetParametersForImport again")
            material = _unwrap(row, bytes(encrypted_key_material))
            check = hmac.new(material, _CHECK_LABEL, hashlib.sha256).digest()
            known = tx.get_check_value(meta.key_id)
            values: dict[str, str] = {}
            if known is None:
                version = self._new_version(tx, meta.key_id, material=material)
                tx.set_check_value(meta.key_id, check)
                values["primary_key_version"] = version.key_version_id
                values["last_rotation_date"] = version.creation_date
            elif hmac.compare_digest(known, check):
                tx.set_material(meta.key_id, material)
            else:
                raise bad(
                    f"key {meta.key_id} already had other key material; a key accepts only "
                    "the material first imported into it"
                )
            values["key_state"] = "Enabled" if meta.key_state == "PendingImport" else meta.key_state
            values["material_expire_time"] = iso(expire) if expire else ""
            tx.update_key(meta.key_id, **values)

    def delete_key_material(self, key: str) -> None:
        """Remove imported material now; the key is PendingImport until it is re-imported."""
        with self._writing() as tx:
            meta = self._resolve(tx, key)
            self._check_external(meta, "DeleteKeyMaterial")
            self._drop_material(tx, meta)


    def _check_importable(self, meta: KeyMetadata, operation: str) -> None:
        self._check_external(meta, operation)
        self._check_not_pending_deletion(meta)


def _token_hash(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _padding(algorithm: str) -> AsymmetricPadding:
    if algorithm == "RSAES_PKCS1_V1_5":
        return padding.PKCS1v15()
    digest: hashes.HashAlgorithm = (
        hashes.SHA256() if algorithm == "RSAES_OAEP_SHA_256" else hashes.SHA1()
    )
    return padding.OAEP(mgf=padding.MGF1(digest), algorithm=digest, label=None)


def _unwrap(row: TokenRow, ciphertext: bytes) -> bytes:
    """The key material, or one ``InvalidParameter`` error that says nothing about it."""
    private = serialization.load_der_private_key(row.private_key, password=None)
    if not isinstance(private, rsa.RSAPrivateKey):  # only this module writes the column
        raise TypeError("an import token's wrapping key is RSA")
    failure = bad(
        f"the key material does not unwrap as {MATERIAL_LEN * 8} bits with this import "
        f"token's {row.wrapping_algorithm} key"
    )
    try:
        material = private.decrypt(ciphertext, _padding(row.wrapping_algorithm))
    except ValueError:
        raise failure from None
    if len(material) != MATERIAL_LEN:  # PKCS#1 v1.5 rejects implicitly: a wrong length
        raise failure
    return material
