"""Key management of the KMS engine: keys, states, rotation policy, versions and tags.

States follow Alibaba's ``KeyState``::

    CreateKey ──> Enabled <──EnableKey / DisableKey──> Disabled
    CreateKey(Origin=EXTERNAL) ──> PendingImport ──ImportKeyMaterial──> Enabled
    Enabled / Disabled ──material expires or DeleteKeyMaterial──> PendingImport
    Enabled / Disabled / PendingImport ──ScheduleKeyDeletion──> PendingDeletion
    PendingDeletion ──CancelKeyDeletion──> Enabled (PendingImport if it has no material)
    PendingDeletion ──DeleteDate passes──> deleted (Forbidden.KeyNotFound from then on)

Only Enabled keys encrypt and decrypt; the others answer ``Rejected.<State>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from kmsbeam.errors import KeyNotFoundError
from kmsbeam.kms._core import EngineCore, rotation_label
from kmsbeam.kms._params import (
    MAX_TAGS,
    bad,
    check_description,
    check_key_options,
    check_tag_keys,
    check_tags,
    interval_seconds,
    iso,
    unsupported,
)
from kmsbeam.kms._store import StoreTransaction
from kmsbeam.kms._types import KeyMetadata, KeyVersion

__all__ = ["KeyOps"]


class KeyOps(EngineCore):
    """``CreateKey`` ... ``ListResourceTags``: the management half of ``KmsEngine``."""

    def create_key(
        self,
        description: str = "",
        *,
        rotation_interval: str | None = None,
        origin: str = "Aliyun_KMS",
        protection_level: str = "SOFTWARE",
        key_spec: str = "Aliyun_AES_256",
        key_usage: str = "ENCRYPT/DECRYPT",
        enable_automatic_rotation: bool | None = None,
        tags: Mapping[str, str] | None = None,
    ) -> KeyMetadata:
        """Create an AES-256 key: Enabled with one version, or ``PendingImport`` with no
        material for ``origin="EXTERNAL"`` (BYOK: see ``get_parameters_for_import``).

        ``enable_automatic_rotation=True`` needs a ``rotation_interval`` (7-365 days, e.g.
        ``"30d"`` or ``"604800s"``); left ``None``, a ``rotation_interval`` alone turns
        rotation on (the engine's original signature). Keys with imported material do not
        rotate (``UnsupportedOperation``). ``tags`` are set in the same transaction.
        """
        check_description(description)
        check_key_options(origin, protection_level, key_spec, key_usage)
        seconds = _rotation_request(enable_automatic_rotation, rotation_interval)
        if seconds is not None and origin == "EXTERNAL":
            raise unsupported("keys with imported material (Origin EXTERNAL) do not rotate")
        checked = check_tags(tags) if tags else {}
        with self._writing() as tx:
            meta = self._new_key(tx, description, seconds, origin, protection_level)
            tx.put_tags(meta.key_id, checked)
            return meta

    def describe_key(self, key: str) -> KeyMetadata:
        with self._reading() as tx:
            return self._resolve(tx, key)

    def list_keys(self) -> list[KeyMetadata]:
        with self._reading() as tx:
            return [self._with_arn(k) for k in tx.list_keys()]

    def enable_key(self, key: str) -> KeyMetadata:
        return self._set_state(key, "Enabled", {"Enabled", "Disabled"})

    def disable_key(self, key: str) -> KeyMetadata:
        return self._set_state(key, "Disabled", {"Enabled", "Disabled"})

    def schedule_key_deletion(self, key: str, pending_window_days: int) -> KeyMetadata:
        """Mark a key PendingDeletion; it is deleted for good when ``delete_date`` passes."""
        if isinstance(pending_window_days, bool) or not isinstance(pending_window_days, int):
            raise TypeError("pending_window_days is an int")
        if not 7 <= pending_window_days <= 30:
            raise bad("PendingWindowInDays must be between 7 and 30")
        when = iso(self._clock() + pending_window_days * 86400)
        allowed = {"Enabled", "Disabled", "PendingImport"}
        return self._set_state(key, "PendingDeletion", allowed, delete_date=when)

    def cancel_key_deletion(self, key: str) -> KeyMetadata:
        """Take a key out of PendingDeletion: Enabled again, as Alibaba documents (or
        PendingImport for an EXTERNAL key that has no material)."""
        with self._writing() as tx:
            meta = self._resolve(tx, key)
            if meta.key_state != "PendingDeletion":
                raise bad(f"key {meta.key_id} is {meta.key_state}, not pending deletion")
            version = tx.get_version(meta.primary_key_version)
            state = "Enabled" if version is not None and version.material else "PendingImport"
            rotation = rotation_label(meta.automatic_rotation, state)
            return _update(tx, meta, key_state=state, delete_date="", automatic_rotation=rotation)

    def update_key_description(self, key: str, description: str) -> KeyMetadata:
        check_description(description)
        with self._writing() as tx:
            return _update(tx, self._resolve(tx, key), description=description)

    def update_rotation_policy(
        self, key: str, enable_automatic_rotation: bool, rotation_interval: str | None = None
    ) -> KeyMetadata:
        """Alibaba's ``UpdateRotationPolicy``: turn automatic rotation on (with an interval
        of 7-365 days, ``"30d"``, ``"168h"``, ``"604800s"``...) or off.

        The next rotation is due one interval after the last one (or after creation); if
        that date has passed, the key rotates in this call. While a key is not Enabled its
        rotation shows as ``Suspended``.
        """
        if not isinstance(enable_automatic_rotation, bool):
            raise TypeError("enable_automatic_rotation is a bool; the interval comes after it")
        seconds = _rotation_request(enable_automatic_rotation, rotation_interval)
        with self._writing() as tx:
            meta = self._resolve(tx, key)
            if seconds is None:
                values = {"automatic_rotation": "Disabled", "rotation_interval": ""}
                return _update(tx, meta, next_rotation_date="", **values)
            if meta.origin == "EXTERNAL":
                raise unsupported("keys with imported material (Origin EXTERNAL) do not rotate")
            _update(
                tx,
                meta,
                automatic_rotation=rotation_label("Enabled", meta.key_state),
                rotation_interval=f"{seconds}s",
                next_rotation_date=self._next_rotation(meta, seconds),
            )
            self._apply_due(tx, self._clock())
            return self._resolve(tx, meta.key_id)

    # -- versions -------------------------------------------------------------------------
    def create_key_version(self, key: str) -> KeyVersion:
        """Add a version to an enabled key and make it primary (returned without material)."""
        with self._writing() as tx:
            meta = self._resolve(tx, key)
            if meta.origin == "EXTERNAL":
                raise unsupported("keys with imported material (Origin EXTERNAL) have one version")
            self._check_usable(meta)
            return replace(self._rotate(tx, meta, self._clock()), material=b"")

    def list_key_versions(self, key: str) -> list[KeyVersion]:
        with self._reading() as tx:
            return tx.list_versions(self._resolve(tx, key).key_id)

    def describe_key_version(self, key: str, key_version_id: str) -> KeyVersion:
        """One version of a key (without material); ``Forbidden.KeyNotFound`` if the key
        has no such version."""
        if not isinstance(key_version_id, str):
            raise TypeError("key_version_id is a str")
        with self._reading() as tx:
            meta = self._resolve(tx, key)
            version = tx.get_version(key_version_id) if key_version_id else None
        if version is None or version.key_id != meta.key_id:
            raise KeyNotFoundError(
                f"key {meta.key_id} has no version {key_version_id[:64]}",
                code="Forbidden.KeyNotFound",
            )
        return replace(version, material=b"")

    # -- tags -----------------------------------------------------------------------------
    def tag_resource(self, key: str, tags: Mapping[str, str]) -> None:
        """Add tags to a key or change their values (at most 20 tags per key)."""
        checked = check_tags(tags)
        with self._writing() as tx:
            key_id = self._resolve(tx, key).key_id
            if len({**tx.get_tags(key_id), **checked}) > MAX_TAGS:
                raise bad(f"a key has at most {MAX_TAGS} tags")
            tx.put_tags(key_id, checked)

    def untag_resource(self, key: str, tag_keys: Sequence[str]) -> None:
        """Remove tags by key; keys the key does not have are ignored."""
        keys = check_tag_keys(tag_keys)
        with self._writing() as tx:
            tx.delete_tags(self._resolve(tx, key).key_id, keys)

    def list_resource_tags(self, key: str) -> dict[str, str]:
        """The tags of a key, sorted by tag key."""
        with self._reading() as tx:
            return tx.get_tags(self._resolve(tx, key).key_id)

    # -- internals ------------------------------------------------------------------------
    def _new_key(
        self,
        tx: StoreTransaction,
        description: str,
        rotation_seconds: int | None,
        origin: str = "Aliyun_KMS",
        protection_level: str = "SOFTWARE",
    ) -> KeyMetadata:
        check_description(description)
        now, external = self._clock(), origin == "EXTERNAL"
        key_id = self._uuid()
        version_id = "" if external else self._uuid()
        rotation = {
            "automatic_rotation": "Enabled" if rotation_seconds else "Disabled",
            "rotation_interval": f"{rotation_seconds}s" if rotation_seconds else "",
            "next_rotation_date": iso(now + rotation_seconds) if rotation_seconds else "",
        }
        meta = KeyMetadata(
            key_id=key_id,
            description=description,
            key_state="PendingImport" if external else "Enabled",
            key_spec="Aliyun_AES_256",
            key_usage="ENCRYPT/DECRYPT",
            protection_level=protection_level,
            origin=origin,
            creation_date=iso(now),
            primary_key_version=version_id,
            last_rotation_date="" if external else iso(now),
            **rotation,
        )
        tx.insert_key(meta)
        if not external:
            self._new_version(tx, key_id, version_id)
        return self._with_arn(meta)

    def _set_state(self, key: str, state: str, allowed: set[str], **extra: str) -> KeyMetadata:
        with self._writing() as tx:
            meta = self._resolve(tx, key)
            if meta.key_state not in allowed:
                raise self._rejected(meta)
            rotation = rotation_label(meta.automatic_rotation, state)
            return _update(tx, meta, key_state=state, automatic_rotation=rotation, **extra)


def _update(tx: StoreTransaction, meta: KeyMetadata, **values: str) -> KeyMetadata:
    tx.update_key(meta.key_id, **values)
    return replace(meta, **values)


def _rotation_request(enable: bool | None, interval: str | None) -> int | None:
    """Seconds between automatic rotations, or ``None`` for no automatic rotation."""
    if enable is not None and not isinstance(enable, bool):
        raise TypeError("enable_automatic_rotation is a bool or None")
    if enable is None:
        return None if interval is None else interval_seconds(interval)
    if interval is not None:
        seconds = interval_seconds(interval)
        return seconds if enable else None
    if enable:
        raise bad("RotationInterval is required when automatic rotation is enabled")
    return None
