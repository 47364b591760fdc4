"""Key vaults as jobs see them: ``vault_for`` (a checked ``KeyVault`` on any Beam filesystem),
``dataset_key_ids`` (the data keys a dataset's values name) and ``check_keys`` (each one is in
the vault and unwraps). The ``kmsbeam vault`` commands (``vault_cmd``) and the encrypt and
decrypt plans open vaults here, so every vault URI is checked the same way: no credentials in
it, a scheme some registered filesystem handles, a local path made absolute (workers run in
other directories).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kmsbeam import ConfigurationError, KmsBeamError
from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1, V2_OF, parse
from kmsbeam.formats.paths import FieldPath
from kmsbeam.keys.source import KeySource
from kmsbeam.reasons import failure_reason
from kmsbeam.vault import MARKER, KeyVault, check_vault_uri

__all__ = ["DatasetKeys", "VAULT_MARKER", "check_keys", "dataset_key_ids", "require_vault", "vault_for"]

VAULT_MARKER = MARKER
_TEXT_HEAD = 24  # the text of a v2 header (18 bytes): equal for every value of one data key
_BIN_HEAD = 18


def vault_for(uri: str) -> KeyVault:
    """The key vault at ``uri`` (``--key-vault``, a manifest's ``key_vault``).

    Raises:
        ConfigurationError: the URI carries credentials, or no filesystem handles its scheme.
    """
    check_vault_uri(uri)
    if "://" not in uri:  # a local directory: no Beam to load (vault rotate starts fast)
        return KeyVault(os.path.abspath(uri))
    from kmsbeam.pipelines import paths  # Beam's filesystems, and the store over them

    return KeyVault(paths.normalize(uri, "the key vault").rstrip("/") or "/")


@dataclass
class DatasetKeys:
    """What ``dataset_key_ids`` found: the vault key ids (with value counts), how many values
    carry their own wrapped key (v1), and how many are not kmsbeam values."""

    key_ids: dict[bytes, int] = field(default_factory=dict)
    self_contained: int = 0
    malformed: int = 0
    records: int = 0
    files: int = 0


def dataset_key_ids(directory: str, manifest: Any, sample: int | None = None) -> DatasetKeys:
    """The data keys named by the values of the dataset in ``directory`` (fields, record and
    cells modes; ``sample``: at most that many records per file). Headers only: nothing is unwrapped
    or decrypted."""
    from kmsbeam.pipelines import paths
    from kmsbeam.pipelines.samples import file_records, value_at

    v1 = RECORD_V1 if manifest.mode == "record" else FIELD_V1  # cells are field values
    v2 = V2_OF[v1]
    names = [manifest.payload_field] if manifest.mode == "record" else list(manifest.fields)
    where = [FieldPath(n) for n in names]
    out = DatasetKeys()
    seen: dict[Any, bytes | None] = {}  # header text or bytes -> key id (None: v1)
    for path in paths.match(paths.join(directory, "part-*")):
        out.files += 1
        for n, record in enumerate(file_records(path, manifest.format, 4096)):
            if sample is not None and n >= sample:
                break
            if not isinstance(record, Mapping):
                continue
            out.records += 1
            for p in where:
                value = value_at(record, p)
                if value is None:
                    continue
                head = value[:_TEXT_HEAD] if isinstance(value, str) else bytes(value[:_BIN_HEAD]) \
                    if isinstance(value, (bytes, bytearray)) else None  # fmt: skip
                kid = seen.get(head, b"") if head is not None else b""
                if kid == b"":
                    try:
                        parsed = parse(value, v1, vault=True)
                    except (KmsBeamError, TypeError, ValueError):
                        out.malformed += 1
                        continue
                    kid = parsed.commitment if parsed.fmt == v2 else None
                    if head is not None and len(seen) < 65536:
                        seen[head] = kid
                if kid is None:
                    out.self_contained += 1
                else:
                    out.key_ids[kid] = out.key_ids.get(kid, 0) + 1
    return out


def check_keys(vault: KeyVault, key_ids: Iterable[bytes], source: KeySource,
               context: Mapping[str, str]) -> dict[bytes, str]:  # fmt: skip
    """``{key id: reason}`` for each data key that is not in ``vault`` or does not unwrap
    (through ``source``, with ``context``) to a key with that id; empty when all are good.

    Raises:
        KmsBeamError: the key source itself failed (unavailable, access denied): the check
            cannot tell, so it does not answer.
    """
    from kmsbeam.formats.envelope import KeyCipher
    from kmsbeam.reasons import fails_job

    def unwrap(wrapped: bytes) -> tuple[KeyCipher, float]:  # a check unwraps anew: no cache
        return KeyCipher.from_dek(source.decrypt_data_key(wrapped, context)), 0.0

    bad: dict[bytes, str] = {}
    for kid in key_ids:
        try:
            vault.resolve(kid, unwrap, fresh=True)
        except KmsBeamError as exc:
            if fails_job(exc, "decrypt"):
                raise
            bad[kid] = failure_reason(exc)
    return bad


def require_vault(vault: KeyVault) -> KeyVault:
    """``vault`` if its prefix holds a vault marker.

    Raises:
        ConfigurationError: it does not (a typo would otherwise look like an empty vault).
    """
    if not vault.is_vault():
        raise ConfigurationError(f"{vault.uri} is not a key vault (it has no {MARKER}); check the "
                                 "prefix (kmsbeam encrypt --key-vault creates one)")  # fmt: skip
    return vault
