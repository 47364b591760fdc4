"""Fuzz targets for values and small texts: envelope v1 (field values and records, binary and
text), PME key text, Parquet cell metadata, the Thrift footer reader, key URIs, journal lines."""

from __future__ import annotations

import base64
import io
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from fuzzlib import Target, as_text, attempt

from kmsbeam.formats.codec import encode_value
from kmsbeam.formats.envelope import (
    FIELD_V1,
    RECORD_V1,
    KeyCipher,
    Opener,
    Sealer,
    from_text,
    from_text_many,
    open_value,
    parse,
    reheader,
    to_text,
)
from kmsbeam.errors import AuthenticationError, ConfigurationError, FormatError, MalformedValueError
from kmsbeam.kms import _blob as engine_blob
from kmsbeam.formats.parquet._cells import CELLS_KEY, cells_metadata, cells_schema, original_from, original_schema
from kmsbeam.formats.parquet._keytext import KEY_TEXT_V1, master_key_id, parse_key_text, seal_key_text
from kmsbeam.formats.parquet._thrift import read_struct
from kmsbeam.rotation.journal import journal_line, parse_journal_line
from kmsbeam.keys.uri import SCHEMES, parse_key_uri

MALFORMED = (MalformedValueError,)
AUTH = (AuthenticationError,)  # MalformedValueError is one too

DEK = bytes(range(32))
KEY = KeyCipher.from_dek(DEK)
VERSION_ID = "00000000-0000-4000-8000-00000000f022"


def wrapped_key(dek: bytes = DEK, iv: bytes = b"\x07" * 12) -> bytes:
    """A real engine wrapped key (kind 0x01 || CiphertextBlob) of ``dek`` under a fixed
    master key version: the bytes a ``local:`` key source puts in headers."""
    blob = engine_blob.seal(VERSION_ID, bytes(range(32, 64)), iv, base64.b64encode(dek), b"{}")
    return b"\x01" + blob


WRAPPED = wrapped_key()
OTHER_WRAPPED = wrapped_key(iv=b"\x08" * 12)
BINDING = encode_value({"id": 7})
#: (format, name, binding) a value may be opened as
OPENINGS = {
    FIELD_V1: [("contact.email", b""), ("contact.email", BINDING), ("ssn", b"")],
    RECORD_V1: [("payload", b""), ("payload", BINDING)],
}
PLAINTEXTS = [None, True, False, 0, -1, 2**70, 1.5, "", "café", "x" * 100, b"\x00\xff",
              [1, "a", None], {"k": [None, {"n": 2}]}]  # fmt: skip


class EnvelopeTarget(Target):
    """Field values v1 and records v1, binary and text: ``parse``, ``Opener``, ``open_value``,
    ``reheader``. A value that opens must be a sealed one, with its own plaintext."""

    name = "envelope"

    def __init__(self) -> None:
        self.known: dict[tuple[int, str, bytes, bytes], bytes] = {}
        self.values: list[bytes] = []
        self.openers: dict[int, Opener] = {}
        for fmt, openings in OPENINGS.items():
            sealer = Sealer(fmt, DEK, WRAPPED)
            self.openers[fmt] = Opener(fmt, sealer.seal(b"\x00", "x")[: -(4 + 1 + 16)], KEY)
            for name, binding in openings:
                for value in PLAINTEXTS:
                    plain = encode_value(value)
                    sealed = sealer.seal(plain, name, binding)
                    self.values.append(sealed)
                    self.known[(fmt, name, binding, parse(sealed, fmt).body)] = plain

    def seeds(self) -> list[bytes]:
        texts = [to_text(v).encode("ascii") for v in self.values[::3]]
        return self.values + texts

    def check(self, data: bytes) -> None:
        for fmt in (FIELD_V1, RECORD_V1):
            for value in (data, as_text(data)):
                self._one(fmt, value)

    def _one(self, fmt: int, value: bytes | str) -> None:
        # a fixed reader: the header compared as a prefix, the body opened
        seeded = self.openers[fmt]
        body = attempt(MALFORMED, seeded.body_of, value)
        if body is not None:
            self._open(fmt, seeded, body)
        parsed = attempt(MALFORMED, parse, value, fmt)
        if parsed is None:
            return
        raw = value if isinstance(value, bytes) else from_text(value)
        assert parsed.fmt == fmt and parsed.header + parsed.body == raw
        assert len(parsed.commitment) == 16 and parsed.wrapped and len(parsed.body) >= 21
        assert from_text(to_text(raw)) == raw
        assert reheader(value, fmt, parsed.wrapped) == value  # one spelling per value
        moved = parse(reheader(value, fmt, OTHER_WRAPPED), fmt)
        assert (moved.wrapped, moved.commitment, moved.body) == (OTHER_WRAPPED, parsed.commitment, parsed.body)
        opener = attempt(AUTH, Opener, fmt, parsed.header, KEY)
        if opener is None:  # another data key's K
            assert parsed.commitment != KEY.commitment
            return
        assert opener.body_of(value) == parsed.body
        self._open(fmt, opener, parsed.body)
        for name, binding in OPENINGS[fmt]:
            plain = attempt(AUTH, open_value, parsed, KEY, name, binding)
            assert plain == self.known.get((fmt, name, binding, parsed.body))

    def _open(self, fmt: int, opener: Opener, body: bytes) -> None:
        for name, binding in OPENINGS[fmt]:
            expected = self.known.get((fmt, name, binding, body))
            plain = attempt(AUTH, opener.open, body, name, binding)
            assert plain == expected, "a tampered value opened"
            many = attempt(AUTH, opener.open_many, [body, body], name, [binding, binding])
            assert many == (None if expected is None else [expected, expected])


class TextManyTarget(Target):
    """``from_text_many`` (one base64 call for a column) agrees with ``from_text`` per value:
    the same bytes, or both refuse. Input: texts separated by newlines."""

    name = "envelope_text_many"

    def seeds(self) -> list[bytes]:
        sealer = Sealer(FIELD_V1, DEK, WRAPPED)
        same = [sealer.seal_text(encode_value(f"value-{i:03d}"), "f") for i in range(10)]
        mixed = [sealer.seal_text(encode_value(v), "f") for v in PLAINTEXTS]
        short = ["QUJD", "QUI", "QQ", "", "QUJDRA"] * 2
        return ["\n".join(t).encode("ascii") for t in (same, mixed, short, same[:8])]

    def check(self, data: bytes) -> None:
        texts = [as_text(part) for part in data.split(b"\n")]
        many = attempt(MALFORMED, from_text_many, texts)
        singles = [attempt(MALFORMED, from_text, t) for t in texts]
        if many is None:
            assert None in singles, "from_text_many refused texts that from_text reads"
        else:
            assert many == singles, "from_text_many and from_text disagree"
        for single in singles:
            if single is not None:
                assert from_text(to_text(single)) == single


class KeyTextTarget(Target):
    """PME key text v1: ``parse_key_text`` and ``KeyText.open``. A text opens only as sealed."""

    name = "pme_key_text"
    URIS = ("local:alias/pii", "kms-emulator://127.0.0.1:9800/alias/pci",
            "pkcs11:token=etl;object=kek-1", "alibaba-kms://cn-hangzhou/alias/caf\u00e9")  # fmt: skip

    def __init__(self) -> None:
        self.aead = AESGCM(DEK)
        self.texts: list[str] = []
        self.known: dict[tuple[str, bytes, bytes, str], bytes] = {}
        for i, uri in enumerate(self.URIS):
            for size in (16, 24, 32):
                key = bytes([i * 16 + size]) * size
                nonce = bytes([size, i]) * 6
                text = seal_key_text(key, master_key_id(uri), uri, WRAPPED, self.aead, nonce)
                parsed = parse_key_text(text)
                self.texts.append(text)
                self.known[(uri, parsed.nonce, parsed.sealed, master_key_id(uri))] = key

    def seeds(self) -> list[bytes]:
        return [t.encode("ascii") for t in self.texts]

    def check(self, data: bytes) -> None:
        text = as_text(data)
        parsed = attempt(MALFORMED, parse_key_text, text)
        if parsed is None:
            return
        raw = from_text(text)
        uri = parsed.uri.encode("utf-8")
        rebuilt = (bytes((KEY_TEXT_V1,)) + len(uri).to_bytes(2, "big") + uri
                   + len(parsed.wrapped).to_bytes(2, "big") + parsed.wrapped + parsed.nonce + parsed.sealed)  # fmt: skip
        assert rebuilt == raw and len(parsed.nonce) == 12 and len(parsed.sealed) >= 32
        assert parsed.kind == parsed.wrapped[0]
        assert parsed.key_version is None or len(parsed.key_version) == 36
        for uri_text in {parsed.uri, *self.URIS}:
            key_id = master_key_id(uri_text)
            key = attempt(AUTH, parsed.open, key_id, self.aead)
            assert key == self.known.get((parsed.uri, parsed.nonce, parsed.sealed, key_id)), (
                "a tampered key text opened"
            )


def _schemas() -> list[pa.Schema]:
    contact = pa.struct([("email", pa.string()), ("phone", pa.string())])
    return [
        pa.schema([("id", pa.int64()), ("ssn", pa.string()), ("contact", contact)]),
        pa.schema([("id", pa.string()), ("ssn", pa.large_binary()), ("n", pa.list_(pa.int32()))],
                  metadata={b"owner": b"etl"}),
    ]  # fmt: skip


class CellsMetadataTarget(Target):
    """``kmsbeam.cells`` schema metadata: ``cells_metadata``, ``original_from``,
    ``original_schema``. Input: the metadata value."""

    name = "parquet_cells_metadata"

    def seeds(self) -> list[bytes]:
        a, b = _schemas()
        out = [cells_schema(a, ["ssn", "contact.email"], "local:alias/pii", ["id"]),
               cells_schema(b, "ssn", "kms-emulator://127.0.0.1:9800/alias/x")]  # fmt: skip
        return [s.metadata[CELLS_KEY] for s in out]

    def check(self, data: bytes) -> None:
        schema = pa.schema([("ssn", pa.binary())], metadata={CELLS_KEY: data})
        meta = attempt((FormatError,), cells_metadata, schema)
        if meta is None:
            return
        assert isinstance(meta, dict) and meta["kmsbeam_cells"] == 1
        for name in ("columns", "bind"):
            assert all(isinstance(c, str) for c in meta.get(name, []))
        original = attempt((FormatError,), original_from, meta)
        assert original is None or isinstance(original, pa.Schema)
        again = attempt((FormatError,), original_schema, schema)
        assert (again is None) == (original is None)


def _footers() -> list[bytes]:
    tables = [
        pa.table({"id": [1, 2, 3], "name": ["a", None, "c"]}),
        pa.table({"x": pa.array([[1.5], [], None], pa.list_(pa.float64())),
                  "s": pa.array([{"k": b"v"}, None, {"k": None}], pa.struct([("k", pa.binary())]))}),
        pa.table({"m": pa.array([[("a", 1)], []], pa.map_(pa.string(), pa.int8()))}),
    ]  # fmt: skip
    out = []
    for table in tables:
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="snappy", write_statistics=True)
        data = sink.getvalue()
        size = int.from_bytes(data[-8:-4], "little")
        out.append(data[-8 - size : -8])
    return out


class ThriftTarget(Target):
    """The compact-protocol reader of Parquet footers (``kmsbeam inspect`` of hostile files)."""

    name = "parquet_thrift"

    def seeds(self) -> list[bytes]:
        return _footers()

    def check(self, data: bytes) -> None:
        result = attempt((FormatError,), read_struct, data)
        if result is None:
            return
        struct, end = result
        assert isinstance(struct, dict) and 0 < end <= len(data)
        # nothing past the struct was read (repr: a double may be NaN, which equals nothing)
        assert repr(read_struct(data[:end])) == repr((struct, end))


class KeyUriTarget(Target):
    """``parse_key_uri``: ConfigurationError or a URI whose text round-trips."""

    name = "key_uri"

    def seeds(self) -> list[bytes]:
        return [u.encode("utf-8") for u in (
            "local:alias/pii", "local:0f4c1f0e-3c52-4b5a-9d1e-2a2b3c4d5e6f",
            "kms-emulator://127.0.0.1:9800/alias/pii?region=cn-hangzhou",
            "kms-emulator://[::1]:9800/key-1",
            "alibaba-kms://cn-hangzhou/alias/etl/pii?endpoint=kst-hzz.cryptoservice.kms.aliyuncs.com&ca=/etc/ca.pem",
            "pkcs11:token=etl;object=kek-1?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:PIN",
            "pkcs11:token=my%20token;id=%01%02;slot-id=3",
        )]  # fmt: skip

    def check(self, data: bytes) -> None:
        text = as_text(data)
        uri = attempt((ConfigurationError,), parse_key_uri, text)
        if uri is None:
            return
        assert uri.scheme in SCHEMES and uri.key and str(uri) == text
        assert parse_key_uri(str(uri)) == uri


class JournalLineTarget(Target):
    """Rotation journal lines: ``parse_journal_line`` never raises, and what it returns is what
    a writer wrote."""

    name = "rotation_journal"
    TARGET = "b1b2c3d4-0000-4000-8000-000000000002"

    def seeds(self) -> list[bytes]:
        vector = ('{"from": "a1b2c3d4-0000-4000-8000-000000000001", "k": "00112233445566778899aabbccddeeff", '
                  '"kmsbeam_journal": 1, "to": "b1b2c3d4-0000-4000-8000-000000000002", "wrapped": "And3d3d3d3d3"}')  # fmt: skip
        lines = [vector, journal_line(bytes(16), "v1", self.TARGET, WRAPPED).rstrip("\n"),
                 journal_line(b"\xff" * 16, "etl/kek/01", "etl/kek/02", b"\x03" * 90).rstrip("\n")]  # fmt: skip
        return [line.encode("utf-8") for line in lines]

    def check(self, data: bytes) -> None:
        for line in as_text(data).splitlines() or [""]:
            for target in (self.TARGET, "etl/kek/02"):
                entry: Any = parse_journal_line(line, target)
                if entry is None:
                    continue
                k, wrapped = entry
                assert len(k) == 16 and wrapped
                again = parse_journal_line(journal_line(k, "x", target, wrapped), target)
                assert again == (k, wrapped)
