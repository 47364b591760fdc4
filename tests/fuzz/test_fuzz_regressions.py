"""The inputs that crashed a parser (issue 14, item 8): each now gets the documented error.

Each test holds the crashing input and fails on the code before its fix.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pyarrow as pa
import pytest
from targets_emulator import ServiceTarget

from kmsbeam.errors import ConfigurationError, FormatError, MalformedValueError
from kmsbeam.formats.objects._format import ObjectHeader
from kmsbeam.formats.parquet._cells import CELLS_KEY, cells_metadata, cells_schema, original_from
from kmsbeam.rotation.journal import parse_journal_line, read_journal
from kmsbeam.keys.uri import parse_key_uri

DEEP = 5000  # past the interpreter's recursion limit (1000)


def _object_header(context: bytes) -> bytes:
    uri, wrapped = b"local:alias/x", b"\x01" * 10
    block = b"".join(struct.pack(">H", len(p)) + p for p in (uri, context, wrapped))
    return b"KMSO\x01\x01" + struct.pack(">I", 16) + bytes(32) + struct.pack(">I", len(block)) + block


def test_object_header_with_a_deeply_nested_context_is_malformed() -> None:
    # was: RecursionError out of json.loads (reader, cat, rotation of objects)
    with pytest.raises(MalformedValueError):
        ObjectHeader.parse(_object_header(b"[" * DEEP))
    with pytest.raises(MalformedValueError):
        ObjectHeader.parse(_object_header(b'{"a":' * DEEP))


def _header() -> ObjectHeader:
    return ObjectHeader(16, bytes(range(16)), bytes(range(16, 32)), "local:alias/pii", {}, b"\x01" * 9)


def test_object_metadata_with_an_empty_wrapped_key_is_malformed() -> None:
    # was: ValueError from the dataclass check ("a wrapped key is needed")
    meta = {**_header().metadata(), "kmsbeam-wrapped-key": ""}
    with pytest.raises(MalformedValueError):
        _header().from_metadata(meta)


@pytest.mark.parametrize("spelling", ["AQEBAQEBAQEB!", "AQEBAQEBAQEB==", "AQEBAQEBAQEBAR"])
def test_object_metadata_accepts_only_the_canonical_text_form(spelling: str) -> None:
    # was: urlsafe_b64decode, which skips foreign characters and ignores trailing bits
    meta = {**_header().metadata(), "kmsbeam-wrapped-key": spelling}
    with pytest.raises(MalformedValueError):
        _header().from_metadata(meta)
    assert _header().from_metadata(_header().metadata()) == _header()


@pytest.mark.parametrize("line", ["[" * DEEP, '{"k":' * DEEP, "x" * (1 << 18)],
                         ids=["deep-list", "deep-object", "huge"])
def test_a_hostile_journal_line_is_skipped(tmp_path: Path, line: str) -> None:
    # was: RecursionError out of read_journal: a torn or forged journal stopped every resume
    good = ('{"from": "a", "k": "00112233445566778899aabbccddeeff", "kmsbeam_journal": 1, '
            '"to": "b", "wrapped": "And3d3d3d3d3"}')  # fmt: skip
    (tmp_path / "journal-h-1-x.jsonl").write_text(f"{line}\n{good}\n", encoding="utf-8")
    assert parse_journal_line(line, "b") is None
    assert read_journal(tmp_path, "b") == {bytes.fromhex("00112233445566778899aabbccddeeff"): b"\x02" + b"w" * 8}


def _cells(raw: bytes) -> pa.Schema:
    return pa.schema([("ssn", pa.binary())], metadata={CELLS_KEY: raw})


@pytest.mark.parametrize("raw", [
    b"[" * DEEP,  # was: RecursionError
    b'{"kmsbeam_cells": 1, "columns": 5}',  # was: TypeError when the decryptor listed columns
    b'{"kmsbeam_cells": 1, "columns": ["ssn", 7]}',
    b'{"kmsbeam_cells": 1, "bind": "id"}',
    b'{"kmsbeam_cells": 1, "arrow_schema": ["x"]}',
], ids=["deep", "columns-int", "columns-mixed", "bind-str", "schema-list"])  # fmt: skip
def test_malformed_cells_metadata_is_a_format_error(raw: bytes) -> None:
    with pytest.raises(FormatError):
        cells_metadata(_cells(raw))


def test_a_damaged_arrow_schema_in_cells_metadata_is_a_format_error() -> None:
    # was: OSError "Invalid flatbuffers message" out of pyarrow (found by hypothesis)
    schema = pa.schema([("id", pa.int64()), ("ssn", pa.string())])
    meta = json.loads(cells_schema(schema, "ssn", "local:alias/pii").metadata[CELLS_KEY])
    raw = bytearray(pa.py_buffer(__import__("base64").b64decode(meta["arrow_schema"])).to_pybytes())
    raw[:8] = b"\xff\xff\xff\xff\x28\x01\x00\x00"[::-1]
    for damaged in (bytes(raw), bytes(raw[:20]), b"\xff\xff\xff\xff" + bytes(4)):
        meta["arrow_schema"] = __import__("base64").b64encode(damaged).decode()
        with pytest.raises(FormatError):
            original_from(meta)


@pytest.mark.parametrize("uri", ["pkcs11:token=etl;object=", "pkcs11:token=;object=kek",
                                 "pkcs11:token=etl;id=", "pkcs11:token=etl;object=;id=01"])  # fmt: skip
def test_pkcs11_uris_with_empty_labels_are_refused(uri: str) -> None:
    # was: accepted, with an empty key name (found by hypothesis: b"pkcs11:token=etl;object=")
    with pytest.raises(ConfigurationError):
        parse_key_uri(uri)


F1_INPUT = bytes.fromhex(
    "504f5354202f3f50616765536978653d310a782d6163732d616374696f6e3a204c6973744b6579730a"
    "617574686f72697a6174696f6e3a20414353332d484d41432d53484132353620"
    "43726564656e7469616c3d66757a7a2c5369676e6564486561646572733d686f73743b782d6163732d616374696f6e"
    "3b782d6163732d636f6e74656e742d7368613235363b782d6163732d646174653b782d6163732d7369676e61747572"
    "652d6e6f6e63653b782d6163732d76657273696f6e2c5369676e61747572653d80"
) + b"6af4bd843f106d81c421bb749f4eb5d9383adfcf235904a2199529e5cfc2d76e\n\n"


def test_f1_a_non_ascii_signature_is_signature_does_not_match(tmp_path: Path) -> None:
    target = ServiceTarget(tmp_path, signed=False)
    try:
        request = target._unsigned(F1_INPUT)
        doc = json.loads(target.service.handle(request).body)
        # was: InternalFailure (TypeError from hmac.compare_digest on non-ASCII text)
        assert doc["Code"] in ("SignatureDoesNotMatch", "IncompleteSignature"), doc["Code"]
    finally:
        target.close()
