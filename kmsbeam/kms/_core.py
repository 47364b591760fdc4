"""The KMS engine's common ground: transactions, key lookup, versions and scheduled events.

Three things in Alibaba KMS happen by themselves when their date comes: a key pending
deletion is deleted, a key with automatic rotation gets a new primary version, and imported
key material expires (the key goes back to ``PendingImport``). The engine has no background
thread: every operation first makes whatever is due happen (one ``EXISTS`` query over the
keys when nothing is), and ``rotate_due_keys`` does it on demand. The work runs in a
``BEGIN IMMEDIATE`` transaction and is re-read there, so racing processes do it once.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace

from kmsbeam.errors import KeyDisabledError, KeyNotFoundError
from kmsbeam.kms._params import bad, iso, parse_iso, unsupported
from kmsbeam.kms._store import KeyStore, StoreTransaction
from kmsbeam.kms._types import KeyMetadata, KeyVersion

__all__ = ["EngineCore", "rotation_label"]

_REJECTED = {
    "Disabled": "Rejected.Disabled",
    "PendingDeletion": "Rejected.PendingDeletion",
    "PendingImport": "Rejected.PendingImport",
}


def rotation_label(automatic_rotation: str, key_state: str) -> str:
    """Alibaba's AutomaticRotation for a key in ``key_state``: rotation that is on is
    ``Suspended`` while the key is not Enabled (it resumes when the key is enabled)."""
    if automatic_rotation == "Disabled":
        return "Disabled"
    return "Enabled" if key_state == "Enabled" else "Suspended"


class EngineCore:
    """State and helpers shared by the engine's parts (see ``KmsEngine`` for the API)."""

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
        return f"{type(self).__name__}({self.store!r}, region={self.region!r})"

    def rotate_due_keys(self) -> list[str]:
        """Make every scheduled event that is due happen now; the ids of the keys rotated.

        Keys whose automatic rotation is due get a new primary version. Deletions and
        material expiries that are due happen too (they are not in the returned list).
        """
        with self.store.write() as tx:
            return self._apply_due(tx, self._clock())

    # -- transactions ---------------------------------------------------------------------
    @contextmanager
    def _reading(self) -> Iterator[StoreTransaction]:
        """A read transaction on a keystore where everything due has happened."""
        now = self._clock()
        with self.store.read() as tx:
            if not tx.has_due(iso(now)):
                yield tx
                return
        with self.store.write() as tx:
            self._apply_due(tx, now)
            yield tx

    @contextmanager
    def _writing(self) -> Iterator[StoreTransaction]:
        """A write transaction that first makes everything due happen."""
        with self.store.write() as tx:
            self._apply_due(tx, self._clock())
            yield tx

    def _apply_due(self, tx: StoreTransaction, now: float) -> list[str]:
        stamp, rotated = iso(now), []
        for meta in tx.due_keys(stamp):
            if meta.key_state == "PendingDeletion" and "" < meta.delete_date <= stamp:
                tx.delete_key(meta.key_id)
                continue
            if meta.material_expire_time and meta.material_expire_time <= stamp:
                self._drop_material(tx, meta)
            elif meta.automatic_rotation == "Enabled" and meta.next_rotation_date <= stamp:
                self._rotate(tx, meta, now)
                rotated.append(meta.key_id)
        return rotated

    # -- versions and material ------------------------------------------------------------
    def _uuid(self) -> str:
        return str(uuid.UUID(bytes=self._random(16), version=4))

    def _new_version(
        self, tx: StoreTransaction, key_id: str, version_id: str = "", material: bytes = b""
    ) -> KeyVersion:
        version = KeyVersion(
            key_version_id=version_id or self._uuid(),
            key_id=key_id,
            creation_date=iso(self._clock()),
            material=material or self._random(32),
        )
        tx.insert_version(version)
        return version

    def _rotate(self, tx: StoreTransaction, meta: KeyMetadata, now: float) -> KeyVersion:
        """A new primary version; the next automatic rotation is one interval from now."""
        version = self._new_version(tx, meta.key_id)
        values = {"primary_key_version": version.key_version_id, "last_rotation_date": iso(now)}
        if meta.automatic_rotation != "Disabled" and meta.rotation_interval:
            values["next_rotation_date"] = iso(now + int(meta.rotation_interval[:-1]))
        tx.update_key(meta.key_id, **values)
        return version

    def _drop_material(self, tx: StoreTransaction, meta: KeyMetadata) -> KeyMetadata:
        """Forget imported material (expired or deleted): the key waits for a re-import."""
        tx.set_material(meta.key_id, b"")
        state = "PendingImport" if meta.key_state in ("Enabled", "Disabled") else meta.key_state
        values = {"key_state": state, "material_expire_time": ""}
        tx.update_key(meta.key_id, **values)
        return replace(meta, **values)

    @staticmethod
    def _next_rotation(meta: KeyMetadata, seconds: int) -> str:
        """NextRotationDate = LastRotationDate (else CreationDate) + RotationInterval."""
        return iso(parse_iso(meta.last_rotation_date or meta.creation_date) + seconds)

    # -- names and states -----------------------------------------------------------------
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

    def _with_arn(self, meta: KeyMetadata) -> KeyMetadata:
        return replace(meta, arn=f"acs:kms:{self.region}:{self.account}:key/{meta.key_id}")

    @staticmethod
    def _rejected(meta: KeyMetadata) -> KeyDisabledError:
        """``Rejected.Disabled`` / ``.PendingDeletion`` / ``.PendingImport`` for this key."""
        return KeyDisabledError(
            f"key {meta.key_id} is {meta.key_state}",
            code=_REJECTED.get(meta.key_state, "Rejected.Disabled"),
        )

    @classmethod
    def _check_usable(cls, meta: KeyMetadata) -> None:
        if meta.key_state != "Enabled":
            raise cls._rejected(meta)

    @classmethod
    def _check_not_pending_deletion(cls, meta: KeyMetadata) -> None:
        if meta.key_state == "PendingDeletion":
            raise cls._rejected(meta)

    @staticmethod
    def _check_external(meta: KeyMetadata, operation: str) -> None:
        if meta.origin != "EXTERNAL":
            raise unsupported(
                f"{operation} needs a key created with Origin EXTERNAL; key {meta.key_id} has "
                f"Origin {meta.origin}"
            )
