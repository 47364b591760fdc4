"""Fuzz targets for key-vault values and entries: envelope v2 (field value v2 0x03, record v2
0x04, binary and text) as a vault-configured reader parses it, and the key-vault entry v1
(``VaultEntry.decode``)."""

from __future__ import annotations

import json
import re
from pathlib import Path

from fuzzlib import Target, as_text, attempt
from targets_values import AUTH, DEK, KEY, MALFORMED, OPENINGS, PLAINTEXTS, WRAPPED

from kmsbeam.errors import FormatError
from kmsbeam.formats._layout import LABELS
from kmsbeam.formats.codec import encode_value
from kmsbeam.formats.envelope import (
    FIELD_V1, FIELD_V2, RECORD_V1, RECORD_V2, V2, V2_OF, Opener, Sealer, from_text, open_value,
    parse, reheader, to_text,
)  # fmt: skip
from kmsbeam.vault.entry import MAX_ENTRY_BYTES, VaultEntry, entry_name, parse_entry_name

VECTORS = Path(__file__).resolve().parents[1] / "vectors"
V2_HEADER = 18


class EnvelopeV2Target(Target):
    """``parse(value, fmt, vault=True)`` on any bytes or text: a ``ParsedValue`` whose parts
    are the input's (a v2 value: ``fmt || K || 0x00``, no wrapped key; a v1 value as ever), or
    ``MalformedValueError``. A value that opens must be a sealed one, with its own plaintext
    (values are known by their AAD label: a header rewritten between v1 and v2 of one label,
    as a migration does, opens to the same plaintext)."""

    name = "envelope_v2"

    def __init__(self) -> None:
        self.known: dict[tuple[bytes, str, bytes, bytes], bytes] = {}
        self.values: list[bytes] = []
        for fmt, openings in OPENINGS.items():  # v1 formats: the reader's expected_fmt
            for sealed_fmt in (V2_OF[fmt], fmt):
                sealer = Sealer(sealed_fmt, DEK, WRAPPED)
                if sealed_fmt not in V2:  # v1 and v2 share the AAD: no counter used twice
                    sealer._count = 1 << 16  # noqa: SLF001
                for name, binding in openings:
                    for value in PLAINTEXTS[:: 1 if sealed_fmt in V2 else 4]:
                        plain = encode_value(value)
                        sealed = sealer.seal(plain, name, binding)
                        self.values.append(sealed)
                        body = parse(sealed, fmt, vault=True).body
                        self.known[(LABELS[sealed_fmt], name, binding, body)] = plain

    def seeds(self) -> list[bytes]:
        texts = [to_text(v).encode("ascii") for v in self.values[::3]]
        return self.values + texts

    def check(self, data: bytes) -> None:
        for fmt in (FIELD_V1, RECORD_V1, FIELD_V2, RECORD_V2):
            for value in (data, as_text(data)):
                self._one(fmt, value)

    def _one(self, fmt: int, value: bytes | str) -> None:
        parsed = attempt(MALFORMED, parse, value, fmt, vault=True)
        if parsed is None:
            return
        raw = value if isinstance(value, bytes) else from_text(value)
        assert parsed.header + parsed.body == raw and len(parsed.body) >= 4 + 1 + 16
        assert len(parsed.commitment) == 16
        if raw[0] in V2:
            assert parsed.fmt == raw[0] and parsed.fmt in (fmt, V2_OF.get(fmt))
            assert parsed.header == raw[:V2_HEADER] and raw[V2_HEADER - 1] == 0
            assert parsed.commitment == raw[1:17] and parsed.wrapped == b""
            # a v2 value is not rewrapped in place: a reader without a vault refuses it
            if fmt not in V2:
                assert attempt(MALFORMED, parse, value, fmt) is None
                assert attempt(MALFORMED, reheader, value, fmt, WRAPPED) is None
        else:
            assert parsed.fmt == fmt and parsed.wrapped
            assert parse(value, fmt).header == parsed.header  # vault=True changes nothing for v1
        opener = attempt(AUTH, Opener, parsed.fmt, parsed.header, KEY)
        if opener is None:  # another data key's K
            assert parsed.commitment != KEY.commitment
            return
        assert opener.body_of(value) == parsed.body
        family = fmt if fmt in OPENINGS else next(f for f, v2 in V2_OF.items() if v2 == fmt)
        for name, binding in OPENINGS[family]:
            expected = self.known.get((LABELS[parsed.fmt], name, binding, parsed.body))
            assert attempt(AUTH, open_value, parsed, KEY, name, binding) == expected, "a tampered value opened"
            assert attempt(AUTH, opener.open, parsed.body, name, binding) == expected


_CREATED = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z")


class VaultEntryTarget(Target):
    """``VaultEntry.decode`` on any bytes: an entry whose ``encode()`` is the input byte for
    byte (and whose fields are the JSON's), or ``FormatError``."""

    name = "vault_entry"

    def seeds(self) -> list[bytes]:
        vectors = json.loads((VECTORS / "vault_entry_v1.json").read_text("utf-8"))
        return [bytes.fromhex(v["hex"]) for v in vectors["accepted"] + vectors["refused"]]

    def check(self, data: bytes) -> None:
        entry = attempt((FormatError,), VaultEntry.decode, data)
        if entry is None:
            assert attempt((FormatError,), VaultEntry.decode, data, entry_name(bytes(16), 1)) is None
            return
        assert len(data) <= MAX_ENTRY_BYTES and entry.encode() == data
        assert len(entry.key_id) == 16 and 1 <= entry.generation <= 99_999_999 and entry.wrapped
        assert _CREATED.fullmatch(entry.created) and all(k for k in entry.context)
        doc = json.loads(data)
        assert doc["key_id"] == entry.key_id.hex() and doc["generation"] == entry.generation
        assert doc["context"] == entry.context and list(doc["context"]) == sorted(doc["context"])
        assert (doc["master_key"], doc["master_key_version"]) == (entry.master_key, entry.master_key_version)
        assert parse_entry_name(entry.name) == (entry.key_id, entry.generation)
        assert VaultEntry.decode(data, entry.name) == entry  # its own name
        other = entry_name(entry.key_id, entry.generation % 99_999_999 + 1)
        assert attempt((FormatError,), VaultEntry.decode, data, other) is None  # another name
