"""Key-vault entry v1: one wrapped data key, stored apart from the values it protects.

An entry is one small immutable JSON object, named by the data key's id (its commitment K,
``kmsbeam.formats.envelope.key_commitment``) and a generation number::

    VAULT/<32 lowercase hex digits of K>/<generation, 8 decimal digits>.json

Generation 1 is written by the encrypting worker before any value under the key is emitted; a
rotation writes generation n+1 (the same K, the data key wrapped under another master key).
The text is canonical (``docs/FORMAT.md``, "Key-vault entry v1"): UTF-8 JSON, keys sorted by
code point, separators ``,`` and ``:``, non-ASCII literal, one final newline. A reader accepts
exactly that text, so an entry has one spelling and a stranger's writer agrees byte for byte.
The wrapped key's authenticity is not the entry's: a reader unwraps it and checks that the
data key's commitment is K (so a forged or swapped entry fails like a tampered value).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from kmsbeam.errors import FormatError, KmsBeamError
from kmsbeam.formats.envelope import from_text, to_text

__all__ = [
    "ENTRY_FORMAT",
    "MAX_ENTRY_BYTES",
    "VaultEntry",
    "entry_name",
    "parse_entry_name",
]

ENTRY_FORMAT = "kmsbeam.vault-entry.v1"
MAX_ENTRY_BYTES = 64 * 1024
MAX_GENERATION = 99_999_999
_NAME = re.compile(r"([0-9a-f]{32})/([0-9]{8})\.json")
_CREATED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")
_FIELDS = ("context", "created", "format", "generation", "key_id", "master_key",
           "master_key_version", "wrapped")  # fmt: skip


def entry_name(key_id: bytes, generation: int) -> str:
    """The entry's name inside the vault: ``<hex K>/<generation:08d>.json``."""
    if len(key_id) != 16:
        raise ValueError("a key id is 16 bytes")
    if not 1 <= generation <= MAX_GENERATION:
        raise ValueError("a generation is 1 to 99999999")
    return f"{key_id.hex()}/{generation:08d}.json"


def parse_entry_name(name: str) -> tuple[bytes, int] | None:
    """``(key id, generation)`` of an entry name, or None when ``name`` is not one (other
    files in the vault, such as its marker, are not entries)."""
    m = _NAME.fullmatch(name)
    if m is None or int(m.group(2)) == 0:
        return None
    return bytes.fromhex(m.group(1)), int(m.group(2))


def now_utc() -> str:
    """The creation time as entries spell it: ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class VaultEntry:
    """One generation of one data key's vault entry (no plaintext key material).

    Attributes:
        key_id: K, the data key's commitment (16 bytes).
        generation: 1 for the entry the writer made; n+1 for each rotation.
        wrapped: the wrapped data key (kind byte || key source blob), as in a v1 header.
        master_key: the key URI that wrapped it: a hint, resolved like every key URI found in
            data (``kmsbeam.keys.trust``), never opened as written.
        master_key_version: the master key version the wrapped key names.
        context: the encryption context the data key was generated with.
        created: when this generation was written (UTC, ``YYYY-MM-DDTHH:MM:SSZ``).
    """

    key_id: bytes
    generation: int
    wrapped: bytes
    master_key: str
    master_key_version: str
    context: Mapping[str, str] = field(default_factory=dict)
    created: str = field(default_factory=now_utc)

    def __post_init__(self) -> None:
        entry_name(self.key_id, self.generation)  # the same checks
        if not self.wrapped or len(self.wrapped) > 0xFFFF:
            raise ValueError("a wrapped key is 1 to 65535 bytes")
        if not _CREATED.fullmatch(self.created):
            raise ValueError("created is YYYY-MM-DDTHH:MM:SSZ")
        datetime.strptime(self.created, "%Y-%m-%dT%H:%M:%SZ")  # a real time (ValueError if not)
        if not self.master_key:
            raise ValueError("an entry names the master key that wrapped it")
        object.__setattr__(self, "context", dict(self.context))

    @property
    def name(self) -> str:
        return entry_name(self.key_id, self.generation)

    def encode(self) -> bytes:
        """The canonical text of this entry (UTF-8)."""
        doc = {
            "context": dict(sorted(self.context.items())),
            "created": self.created,
            "format": ENTRY_FORMAT,
            "generation": self.generation,
            "key_id": self.key_id.hex(),
            "master_key": self.master_key,
            "master_key_version": self.master_key_version,
            "wrapped": to_text(self.wrapped),
        }
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return text.encode("utf-8") + b"\n"

    @classmethod
    def decode(cls, data: bytes, name: str | None = None) -> VaultEntry:
        """Parse an entry's bytes (untrusted: any bytes). With ``name`` (the entry's name in
        the vault), its key id and generation must be the name's.

        Raises:
            FormatError: not the canonical text of an entry v1 (one sentence, no content).
        """
        if len(data) > MAX_ENTRY_BYTES:
            raise FormatError("not a key-vault entry: too large")
        try:
            doc = json.loads(data.decode("utf-8"))
            entry = cls._from_doc(doc)
            canonical = entry.encode() == data
        except (ValueError, TypeError, KeyError, RecursionError, KmsBeamError) as exc:
            raise FormatError("not a key-vault entry v1") from exc
        if not canonical:
            raise FormatError("not a key-vault entry v1: not in canonical form")
        if name is not None and parse_entry_name(name) != (entry.key_id, entry.generation):
            raise FormatError("a key-vault entry's name does not match its key id and generation")
        return entry

    @classmethod
    def _from_doc(cls, doc: Any) -> VaultEntry:
        if not isinstance(doc, dict) or tuple(sorted(doc)) != _FIELDS:
            raise ValueError("fields")
        if doc["format"] != ENTRY_FORMAT:
            raise ValueError("format")
        context = doc["context"]
        strings = (doc["created"], doc["key_id"], doc["master_key"], doc["master_key_version"],
                   doc["wrapped"])  # fmt: skip
        if not all(type(s) is str for s in strings) or type(doc["generation"]) is not int:
            raise ValueError("types")
        if not isinstance(context, dict) or not all(
            type(k) is str and k and type(v) is str for k, v in context.items()
        ):
            raise ValueError("context")
        if not re.fullmatch(r"[0-9a-f]{32}", doc["key_id"]):
            raise ValueError("key id")
        return cls(
            key_id=bytes.fromhex(doc["key_id"]),
            generation=doc["generation"],
            wrapped=from_text(doc["wrapped"]),
            master_key=doc["master_key"],
            master_key_version=doc["master_key_version"],
            context=context,
            created=doc["created"],
        )
