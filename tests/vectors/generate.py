"""Writes tests/vectors/*.json. Run only when a NEW format version is added: the vectors pin
the formats forever, and tests/core/test_vectors.py checks the code against them.

    python tests/vectors/generate.py
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

from kmsbeam.formats.codec import KEPT, encode_value
from kmsbeam.formats.envelope import FIELD_V1, RECORD_V1, Sealer, key_commitment, to_text

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


if __name__ == "__main__":
    for name, data in (("field_v1.json", field_vectors()), ("record_v1.json", record_vectors())):
        (HERE / name).write_text(json.dumps(data, indent=1) + "\n")
        print("wrote", HERE / name)
