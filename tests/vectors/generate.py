"""Writes tests/vectors/*.json. Run only when a NEW format version is added: the vectors pin
the formats forever, and tests/core/test_vectors.py checks the code against them.

    python tests/vectors/generate.py
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from kmsbeam.formats.codec import KEPT, encode_value
from kmsbeam.formats.envelope import (
    FIELD_V1, FIELD_V2, RECORD_V1, RECORD_V2, Sealer, key_commitment, to_text,
)  # fmt: skip
from kmsbeam.vault.entry import VaultEntry

HERE = Path(__file__).parent
DEK = bytes(range(32))
# Wrapped keys are opaque to the envelope: a kind byte and the key source's blob. These are
# shaped like a local-engine blob (36-byte version id, 12-byte IV, ciphertext, 16-byte tag).
WRAPPED_LOCAL = bytes([0x01]) + b"3f0b6a52-9c1e-4c4e-9d7a-2b8e6f1d0c55" + bytes(range(12)) + b"\xaa" * 60
WRAPPED_SHORT = bytes([0x02]) + b"\x5a" * 7


def typed(value: Any) -> Any:
    """JSON form of a typed value: {"type": ..., "value": ...}."""
    if value is None:
        return {"type": "null"}
    if isinstance(value, bool):
        return {"type": "bool", "value": value}
    if isinstance(value, int):
        return {"type": "int", "value": str(value)}
    if isinstance(value, float):
        return {"type": "float", "value": value.hex()}
    if isinstance(value, str):
        return {"type": "str", "value": value}
    if isinstance(value, bytes):
        return {"type": "bytes", "hex": value.hex()}
    if isinstance(value, dt.datetime):
        return {"type": "datetime", "value": value.isoformat()}
    if isinstance(value, dt.date):
        return {"type": "date", "value": value.isoformat()}
    if isinstance(value, Decimal):
        return {"type": "decimal", "value": str(value)}
    if isinstance(value, list):
        return {"type": "list", "items": [typed(v) for v in value]}
    if isinstance(value, dict):
        return {"type": "dict", "items": [[k, typed(v)] for k, v in value.items()]}
    if value is KEPT:
        return {"type": "kept"}
    raise TypeError(type(value))


FIELD_CASES: list[tuple[bytes, str, Any, Any]] = [
    (WRAPPED_LOCAL, "ssn", "123-45-6789", None),
    (WRAPPED_LOCAL, "ssn", "987-65-4321", None),
    (WRAPPED_LOCAL, "contact.email", "ada@example.com", None),
    (WRAPPED_LOCAL, "ssn", "123-45-6789", {"customer_id": 42}),
    (WRAPPED_LOCAL, "amount", Decimal("1234.50"), None),
    (WRAPPED_LOCAL, "born", dt.date(1990, 2, 3), None),
    (WRAPPED_LOCAL, "seen", dt.datetime(2026, 11, 23, 8, 0, 1, 5), None),
    (WRAPPED_LOCAL, "n", -1234567890123, None),
    (WRAPPED_LOCAL, "score", 0.1, None),
    (WRAPPED_LOCAL, "flag", True, None),
    (WRAPPED_LOCAL, "nothing", None, None),
    (WRAPPED_LOCAL, "blob", b"\x00\x01\xfe\xff", None),
    (WRAPPED_LOCAL, "tags", ["a", 1, {"b": None}], None),
    (WRAPPED_SHORT, "ssn", "123-45-6789", None),
]


def field_vectors() -> dict[str, Any]:
    out = []
    sealers: dict[bytes, Sealer] = {}
    for wrapped, name, value, bind in FIELD_CASES:
        sealer = sealers.setdefault(wrapped, Sealer(FIELD_V1, DEK, wrapped))
        counter = sealer.count
        binding = encode_value(dict(sorted(bind.items()))) if bind else b""
        plaintext = encode_value(value)
        sealed = sealer.seal(plaintext, name, binding)
        out.append({
            "dek_hex": DEK.hex(), "commitment_hex": key_commitment(DEK).hex(),
            "wrapped_key_hex": wrapped.hex(), "name": name,
            "bind": typed(bind) if bind else None, "binding_hex": binding.hex(),
            "counter": counter, "value": typed(value), "plaintext_hex": plaintext.hex(),
            "encrypted_hex": sealed.hex(), "encrypted_text": to_text(sealed),
        })  # fmt: skip
    return {"format": "kmsbeam field value v1 (format byte 0x01)", "vectors": out}


RECORD_CASES: list[tuple[dict[str, Any], tuple[str, ...]]] = [
    ({"id": 7, "name": "Ada", "ssn": "123-45-6789"}, ("id",)),
    ({"name": "Bob", "contact": {"email": "bob@example.com"}, "id": 8}, ("id",)),
    ({"a": 1, "b": [1, 2]}, ()),
]


def record_vectors() -> dict[str, Any]:
    out = []
    sealer = Sealer(RECORD_V1, DEK, WRAPPED_LOCAL)
    for record, keep in RECORD_CASES:
        counter = sealer.count
        binding = encode_value({k: record[k] for k in sorted(keep)}) if keep else b""
        payload = {k: (KEPT if k in keep else v) for k, v in record.items()}
        plaintext = encode_value(payload, kept=True)
        sealed = sealer.seal(plaintext, "kmsbeam_record", binding)
        out.append({
            "dek_hex": DEK.hex(), "commitment_hex": key_commitment(DEK).hex(),
            "wrapped_key_hex": WRAPPED_LOCAL.hex(),
            "payload_field": "kmsbeam_record", "record": typed(record), "keep": list(keep),
            "binding_hex": binding.hex(), "counter": counter, "plaintext_hex": plaintext.hex(),
            "encrypted_hex": sealed.hex(), "encrypted_text": to_text(sealed),
        })  # fmt: skip
    return {"format": "kmsbeam record v1 (format byte 0x02)", "vectors": out}


# -- key-vault values (field value v2, record v2) and key-vault entry v1 -----------------------
# The v2 vectors reuse the v1 data key and cases; a value names its key by K only, and each case
# gives the vault entry (generation 1) a writer made for that key. DEK2 is a second data key.
DEK2 = bytes(range(32, 64))
VERSION = "3f0b6a52-9c1e-4c4e-9d7a-2b8e6f1d0c55"  # the version id inside WRAPPED_LOCAL
CREATED = "2026-12-03T12:00:00Z"
CONTEXT = {"dataset": "customers"}
V2_KEYS = {DEK: WRAPPED_LOCAL, DEK2: WRAPPED_SHORT}


def vault_entry(dek: bytes, generation: int = 1, context: dict[str, str] | None = None) -> VaultEntry:
    return VaultEntry(key_commitment(dek), generation, V2_KEYS[dek], "local:alias/pii", VERSION,
                      CONTEXT if context is None else context, CREATED)  # fmt: skip


def entry_fields(entry: VaultEntry) -> dict[str, Any]:
    return {"name": entry.name, "text": entry.encode().decode("utf-8"), "hex": entry.encode().hex()}


def field_v2_vectors() -> dict[str, Any]:
    out = []
    sealers: dict[bytes, Sealer] = {}
    for wrapped, name, value, bind in FIELD_CASES:
        dek = DEK if wrapped == WRAPPED_LOCAL else DEK2
        sealer = sealers.setdefault(dek, Sealer(FIELD_V2, dek, V2_KEYS[dek]))
        counter = sealer.count
        binding = encode_value(dict(sorted(bind.items()))) if bind else b""
        plaintext = encode_value(value)
        sealed = sealer.seal(plaintext, name, binding)
        entry = vault_entry(dek)
        out.append({
            "dek_hex": dek.hex(), "commitment_hex": key_commitment(dek).hex(),
            "key_id_hex": key_commitment(dek).hex(), "name": name,
            "bind": typed(bind) if bind else None, "binding_hex": binding.hex(),
            "counter": counter, "value": typed(value), "plaintext_hex": plaintext.hex(),
            "encrypted_hex": sealed.hex(), "encrypted_text": to_text(sealed),
            "context": entry.context, "wrapped_key_hex": entry.wrapped.hex(),
            "vault_entry_name": entry.name, "vault_entry_text": entry.encode().decode("utf-8"),
        })  # fmt: skip
    return {"format": "kmsbeam field value v2 (format byte 0x03)", "vectors": out}


def record_v2_vectors() -> dict[str, Any]:
    out = []
    sealer = Sealer(RECORD_V2, DEK, WRAPPED_LOCAL)
    entry = vault_entry(DEK)
    for record, keep in RECORD_CASES:
        counter = sealer.count
        binding = encode_value({k: record[k] for k in sorted(keep)}) if keep else b""
        payload = {k: (KEPT if k in keep else v) for k, v in record.items()}
        plaintext = encode_value(payload, kept=True)
        sealed = sealer.seal(plaintext, "kmsbeam_record", binding)
        out.append({
            "dek_hex": DEK.hex(), "commitment_hex": key_commitment(DEK).hex(),
            "key_id_hex": key_commitment(DEK).hex(),
            "payload_field": "kmsbeam_record", "record": typed(record), "keep": list(keep),
            "binding_hex": binding.hex(), "counter": counter, "plaintext_hex": plaintext.hex(),
            "encrypted_hex": sealed.hex(), "encrypted_text": to_text(sealed),
            "context": entry.context, "wrapped_key_hex": entry.wrapped.hex(),
            "vault_entry_name": entry.name, "vault_entry_text": entry.encode().decode("utf-8"),
        })  # fmt: skip
    return {"format": "kmsbeam record v2 (format byte 0x04)", "vectors": out}


def _refused(reason: str, text: str | bytes, name: str | None = None) -> dict[str, Any]:
    data = text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text
    out: dict[str, Any] = {"reason": reason, "hex": data.hex()}
    try:
        out["text"] = data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if name is not None:
        out["name"] = name
    return out


def vault_entry_vectors() -> dict[str, Any]:
    plain = vault_entry(DEK, 1, {})
    tricky = {"dataset": "caf\u00e9 \u65e5\u672c", "note": "tab\there \"q\" \\ nl\n cr\r bs\b ff\f"
              " bell\x07 us\x1f del\x7f ls\u2028", "\u00fcber": "1"}  # fmt: skip
    accepted = [plain, vault_entry(DEK, 1), vault_entry(DEK, 2, tricky), vault_entry(DEK2, 1),
                VaultEntry(key_commitment(DEK2), 99_999_999, WRAPPED_SHORT, "alibaba-kms://cn-hangzhou/alias/pii-2026",
                           "key-version-7", {}, "2027-01-31T23:59:59Z")]  # fmt: skip
    good = plain.encode().decode("utf-8")
    doc = json.loads(good)
    k = plain.key_id.hex()

    def dumps(d: dict[str, Any], **kw: Any) -> str:
        args: dict[str, Any] = {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False}
        args.update(kw)
        return json.dumps(d, **args) + "\n"

    def with_(**fields: Any) -> str:
        return dumps({**doc, **fields})

    without_created = {f: v for f, v in doc.items() if f != "created"}
    refused = [
        _refused("not canonical: spaces after separators", dumps(doc, separators=(", ", ": "))),
        _refused("not canonical: keys not sorted", dumps({"format": doc["format"], **doc}, sort_keys=False)),
        _refused("not canonical: no final newline", good[:-1]),
        _refused("not canonical: two final newlines", good + "\n"),
        _refused("not canonical: CRLF line end", good[:-1] + "\r\n"),
        _refused("not canonical: a UTF-8 byte order mark", "\ufeff" + good),
        _refused("not canonical: non-ASCII escaped", dumps({**doc, "context": {"d": "caf\u00e9"}}, ensure_ascii=True)),
        _refused("not canonical: an upper-case \\u escape",
                 dumps({**doc, "context": {"d": "a\x1fb"}}).replace("\\u001f", "\\u001F")),
        _refused("not canonical: an escaped solidus", with_(master_key="local:alias/pii").replace("alias/", "alias\\/")),
        _refused("not canonical: a duplicated key", good.replace('"format":', '"format":"x","format":')),
        _refused("not canonical: context keys not sorted", good.replace('"context":{}', '"context":{"b":"1","a":"2"}')),
        _refused("unknown field", with_(comment="hi")),
        _refused("missing field: created", dumps(without_created)),
        _refused("wrong format", with_(format="kmsbeam.vault-entry.v2")),
        _refused("bad key id: upper-case hex", with_(key_id=k.upper())),
        _refused("bad key id: 30 hex digits", with_(key_id=k[:30])),
        _refused("generation 0", with_(generation=0)),
        _refused("generation 100000000", with_(generation=100_000_000)),
        _refused("generation a string", with_(generation="1")),
        _refused("generation a float", good.replace('"generation":1', '"generation":1.0')),
        _refused("generation true", with_(generation=True)),
        _refused("created not YYYY-MM-DDTHH:MM:SSZ", with_(created="2026-12-03T12:00:00+00:00")),
        _refused("created with fractional seconds", with_(created="2026-12-03T12:00:00.5Z")),
        _refused("context not an object", with_(context=[["a", "b"]])),
        _refused("context value not a string", with_(context={"a": 1})),
        _refused("context key empty", with_(context={"": "x"})),
        _refused("master_key not a string", with_(master_key=None)),
        _refused("master_key empty", with_(master_key="")),
        _refused("created not a real time: month 13", with_(created="2026-13-03T12:00:00Z")),
        _refused("created not a real time: February 30", with_(created="2026-02-30T12:00:00Z")),
        _refused("created not a real time: hour 24", with_(created="2026-12-03T24:00:00Z")),
        _refused("wrapped with = padding", with_(wrapped=doc["wrapped"] + "=" * (-len(doc["wrapped"]) % 4))),
        _refused("wrapped in the standard base64 alphabet",
                 with_(wrapped=base64.b64encode(b"\xfb\xff" + WRAPPED_LOCAL).decode().rstrip("="))),
        _refused("wrapped with non-zero trailing bits", with_(wrapped=doc["wrapped"][:-1] + "B")),
        _refused("wrapped empty", with_(wrapped="")),
        _refused("a lone surrogate escaped in the context", dumps({**doc, "context": {"d": "\ud800"}}, ensure_ascii=True)),
        _refused("invalid UTF-8", good.encode("utf-8").replace(b'"format"', b'"form\xffat"')),
        _refused("not an object", "[]\n"),
        _refused("name mismatch: another generation", good, name=f"{k}/00000002.json"),
        _refused("name mismatch: another key id", good, name=f"{'0' * 32}/00000001.json"),
        _refused("name mismatch: not an entry name", good, name=f"{k}/1.json"),
    ]
    return {
        "format": "kmsbeam key-vault entry v1",
        "accepted": [{**entry_fields(e), "key_id_hex": e.key_id.hex(), "generation": e.generation,
                      "wrapped_key_hex": e.wrapped.hex(), "master_key": e.master_key,
                      "master_key_version": e.master_key_version, "context": e.context,
                      "created": e.created} for e in accepted],  # fmt: skip
        "refused": refused,
    }


V1 = {"field_v1.json": field_vectors, "record_v1.json": record_vectors}
V2 = {"field_v2.json": field_v2_vectors, "record_v2.json": record_v2_vectors,
      "vault_entry_v1.json": vault_entry_vectors}  # fmt: skip


def write(files: dict[str, Any]) -> None:
    for name, make in files.items():
        (HERE / name).write_text(json.dumps(make(), indent=1) + "\n")
        print("wrote", HERE / name)


if __name__ == "__main__":
    # python tests/vectors/generate.py v2   writes only the v2 and vault-entry files
    import sys

    write(V2 if sys.argv[1:] == ["v2"] else {**V1, **V2})
