"""One API call being served: its parameters, caller, authorization and audit facts.

Every action handler authorizes each resource it touches (``allow_container``, ``allow_key``,
``allow_alias``, ``allow_blob``) before it asks the engine for anything; the service
refuses to answer a handler that returns without having authorized (``InternalFailure``),
so a new action cannot forget its policy check.

Resources are Alibaba ARNs (``acs:kms:REGION:ACCOUNT:key/ID``, ``...:alias/NAME``, and the
containers ``...:key`` and ``...:alias`` for CreateKey, ListKeys and ListAliases). A key
named by an alias is authorized against both the key's ARN and the alias ARN (a statement
matching either applies). A key that does not exist is authorized against the ARN its name
spells, so a caller without permission learns nothing about which keys exist.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kmsbeam.emulator._errors import ApiError, invalid_ciphertext
from kmsbeam.emulator._params import Params
from kmsbeam.emulator._signature import AccessKey
from kmsbeam.errors import KmsBeamError
from kmsbeam.kms import KmsEngine

__all__ = ["Action", "Call", "Handler"]

VERSION_ID_LEN = 36  # a CiphertextBlob starts with its 36-byte key version id
MIN_BLOB_LEN = VERSION_ID_LEN + 12 + 16


class Call:
    """The state of one call (one thread; not shared)."""

    def __init__(
        self,
        engine: KmsEngine,
        action: str,
        params: Params,
        access_key: AccessKey,
        source_ip: str,
        now: float | None = None,
    ) -> None:
        self.engine = engine
        self.now = time.time() if now is None else now
        self.action = action
        self.params = params
        self.access_key = access_key
        self.source_ip = source_ip
        self.authorized = False
        self.key_id: str | None = None
        self.key_version_id: str | None = None

    # -- audit facts ----------------------------------------------------------------------
    def note(self, key_id: str | None, key_version_id: str | None = None) -> None:
        """Record the key (and version) this call used, for the audit log."""
        if key_id:
            self.key_id = key_id
        if key_version_id:
            self.key_version_id = key_version_id

    # -- authorization --------------------------------------------------------------------
    def _arn(self, resource: str) -> str:
        return f"acs:kms:{self.engine.region}:{self.engine.account}:{resource}"

    def allow_container(self, kind: str) -> None:
        """Authorize an action on the ``key`` container (CreateKey, ListKeys) or the
        ``alias`` container (ListAliases)."""
        self._decide([self._arn(kind)])

    def allow_alias(self, alias_name: str) -> None:
        """Authorize an action on an alias itself (CreateAlias, UpdateAlias, DeleteAlias)."""
        self._decide([self._arn(alias_name)])

    def allow_key(self, key: str) -> None:
        """Authorize this action on the key named ``key`` (id, ARN, alias or alias ARN)."""
        if self.access_key.policy is None:
            self.authorized = True
            return
        named = key if key.startswith("acs:") else self._arn(
            key if key.startswith("alias/") else f"key/{key}"
        )  # fmt: skip
        try:
            meta = self.engine.describe_key(key)
        except KmsBeamError:
            self._decide([named])  # unknown: authorize the name; the engine says the rest
            return
        self.note(meta.key_id)
        resources = [meta.arn] if named == meta.arn else [meta.arn, named]
        self._decide(resources, meta.key_id)

    def allow_key_id(self, key_id: str) -> None:
        """Authorize this action on a key known by id (from a ciphertext blob)."""
        self.note(key_id)
        if self.access_key.policy is None:
            self.authorized = True
            return
        self._decide([self._arn(f"key/{key_id}")], key_id)

    def allow_blob(self, blob: bytes) -> None:
        """Authorize this action on the key that encrypted ``blob`` (Decrypt, ReEncrypt).

        A blob naming no key version of this keystore needs no authorization: it fails as
        ``InvalidCiphertext`` whoever asks.
        """
        if self.access_key.policy is None:
            self.authorized = True
            return
        key_id = self.key_of_blob(blob)
        if key_id is None:
            raise invalid_ciphertext()
        self.allow_key_id(key_id)

    def alias_target(self, alias_name: str) -> str | None:
        """The key id an existing alias points at, or ``None``."""
        with self.engine.store.read() as tx:
            return tx.get_alias(alias_name)

    def key_of_blob(self, blob: bytes) -> str | None:
        """The key whose version the blob names (not authenticated), or ``None``."""
        if len(blob) < MIN_BLOB_LEN:
            return None
        try:
            version_id = blob[:VERSION_ID_LEN].decode("ascii")
        except UnicodeDecodeError:
            return None
        with self.engine.store.read() as tx:
            version = tx.get_version(version_id)
            return tx.deleted_version_key(version_id) if version is None else version.key_id

    def _decide(self, resources: list[str], key_id: str = "") -> None:
        policy = self.access_key.policy
        if policy is not None:
            facts = _Facts(self, key_id)
            if policy.decide(f"kms:{self.action}", resources, facts) is not True:
                raise ApiError(
                    "Forbidden.NoPermission",
                    f"the access key {self.access_key.access_key_id} is not allowed to call "
                    f"kms:{self.action} on {resources[-1]}",
                )
        self.authorized = True


class _Facts:
    """Condition-key values for one target, the key's tags read only if a condition asks."""

    def __init__(self, call: Call, key_id: str) -> None:
        self._call = call
        self._key_id = key_id
        self._tags: dict[str, str] | None = None

    def __call__(self, name: str) -> str | None:
        if name == "acs:SourceIp":
            return self._call.source_ip
        if name == "acs:SecureTransport":
            return "false"
        if name == "acs:CurrentTime":
            return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._call.now))
        if name.startswith("kms:tag/"):
            if self._tags is None:
                self._tags = (
                    self._call.engine.list_resource_tags(self._key_id) if self._key_id else {}
                )
            return self._tags.get(name[len("kms:tag/") :])
        return None


Handler = Callable[[Call], dict[str, Any]]


@dataclass(frozen=True)
class Action:
    """One API action: its handler, every parameter it takes and the ones it needs."""

    handler: Handler
    allowed: frozenset[str] = field(default_factory=frozenset)
    required: frozenset[str] = field(default_factory=frozenset)
