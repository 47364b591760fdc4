"""A strict proto3 wire codec for the messages the instance gateway serves (``api.proto`` of
the KMS instance SDK ``alibabacloud-dkms-gcs``), with no protobuf runtime.

A message schema maps field numbers to ``(name, kind)``, kind one of ``"string"`` (UTF-8,
wire type 2), ``"bytes"`` (wire type 2) and ``"int32"`` (varint; a negative value is the
10-byte sign-extended varint, as protobuf writes it). ``decode`` reads a request:

- varints of at most 10 bytes (the 10th at most 1), lengths within the message;
- unknown fields of wire types 0, 1, 2 and 5 are skipped; groups (3, 4), wire types 6 and 7
  and field number 0 are refused;
- a known field with the wrong wire type, a string that is not UTF-8 or an int32 out of
  range is refused; a repeated scalar field keeps its last value, as proto3 does.

Anything refused raises ``WireError`` (one kind of error: the gateway answers it with a
single ``InvalidParameter``), never another exception. ``encode`` writes a response,
omitting default values (empty strings and bytes, zero), as proto3 does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Union

__all__ = ["MESSAGES", "Schema", "WireError", "decode", "encode"]

Value = Union[str, bytes, int]
Schema = Mapping[int, tuple[str, str]]
MAX_VARINT = 10
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_U64 = 1 << 64


class WireError(ValueError):
    """A protobuf message that does not decode (fixed message: nothing of the input)."""

    def __init__(self) -> None:
        super().__init__("the request body is not a valid protobuf message")


def _S(*fields: tuple[int, str, str]) -> dict[int, tuple[str, str]]:
    return {number: (name, kind) for number, name, kind in fields}


_KEY, _BLOB = (1, "KeyId", "string"), "CiphertextBlob"
MESSAGES: dict[str, dict[int, tuple[str, str]]] = {
    "AdvanceGenerateDataKeyRequest": _S(_KEY, (2, "NumberOfBytes", "int32"), (3, "Aad", "bytes")),
    "AdvanceGenerateDataKeyResponse": _S(
        _KEY, (2, "Iv", "bytes"), (3, "Plaintext", "bytes"), (4, _BLOB, "bytes"),
        (5, "RequestId", "string"), (6, "Algorithm", "string"), (7, "KeyVersionId", "string")),
    "AdvanceEncryptRequest": _S(
        _KEY, (2, "Plaintext", "bytes"), (3, "Algorithm", "string"), (4, "Aad", "bytes"),
        (5, "Iv", "bytes"), (6, "PaddingMode", "string")),
    "AdvanceEncryptResponse": _S(
        _KEY, (2, _BLOB, "bytes"), (3, "Iv", "bytes"), (4, "RequestId", "string"),
        (5, "Algorithm", "string"), (6, "PaddingMode", "string"), (7, "KeyVersionId", "string")),
    "AdvanceDecryptRequest": _S(
        (1, _BLOB, "bytes"), (2, "KeyId", "string"), (3, "Algorithm", "string"),
        (4, "Aad", "bytes"), (5, "Iv", "bytes"), (6, "PaddingMode", "string")),
    "AdvanceDecryptResponse": _S(
        _KEY, (2, "Plaintext", "bytes"), (3, "RequestId", "string"), (4, "Algorithm", "string"),
        (5, "PaddingMode", "string"), (6, "KeyVersionId", "string")),
    "GenerateDataKeyRequest": _S(
        _KEY, (2, "Algorithm", "string"), (3, "NumberOfBytes", "int32"), (4, "Aad", "bytes")),
    "GenerateDataKeyResponse": _S(
        _KEY, (2, "Iv", "bytes"), (3, "Plaintext", "bytes"), (4, _BLOB, "bytes"),
        (5, "RequestId", "string"), (6, "Algorithm", "string")),
    "EncryptRequest": _S(
        _KEY, (2, "Plaintext", "bytes"), (3, "Algorithm", "string"), (4, "Aad", "bytes"),
        (5, "Iv", "bytes"), (6, "PaddingMode", "string")),
    "EncryptResponse": _S(
        _KEY, (2, _BLOB, "bytes"), (3, "Iv", "bytes"), (4, "RequestId", "string"),
        (5, "Algorithm", "string"), (6, "PaddingMode", "string")),
    "DecryptRequest": _S(
        (1, _BLOB, "bytes"), (2, "KeyId", "string"), (3, "Algorithm", "string"),
        (4, "Aad", "bytes"), (5, "Iv", "bytes"), (6, "PaddingMode", "string")),
    "DecryptResponse": _S(
        _KEY, (2, "Plaintext", "bytes"), (3, "RequestId", "string"), (4, "Algorithm", "string"),
        (5, "PaddingMode", "string")),
    "Error": _S((1, "StatusCode", "int32"), (2, "ErrorCode", "string"),
                (3, "ErrorMessage", "string"), (4, "RequestId", "string")),
}  # fmt: skip


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value, shift, end = 0, 0, len(data)
    for i in range(MAX_VARINT):
        if pos >= end:
            raise WireError()
        byte = data[pos]
        pos += 1
        if i == MAX_VARINT - 1 and byte > 1:
            raise WireError()  # more than 64 bits
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise WireError()


def decode(data: bytes, schema: Schema) -> dict[str, Value]:
    """The fields of ``schema`` present in ``data`` (see the module docstring).

    Raises:
        WireError: ``data`` is not a valid message of ``schema``.
    """
    if not isinstance(data, (bytes, bytearray)):
        raise WireError()
    data = bytes(data)
    out: dict[str, Value] = {}
    pos, end = 0, len(data)
    while pos < end:
        tag, pos = _varint(data, pos)
        number, wire = tag >> 3, tag & 7
        if number == 0 or number > (1 << 29) - 1:
            raise WireError()
        field = schema.get(number)
        if wire == 0:
            value, pos = _varint(data, pos)
            if field is not None:
                if field[1] != "int32":
                    raise WireError()
                signed = value - _U64 if value >= 1 << 63 else value
                if not _INT32_MIN <= signed <= _INT32_MAX:
                    raise WireError()
                out[field[0]] = signed
        elif wire == 2:
            length, pos = _varint(data, pos)
            if length > end - pos:
                raise WireError()
            chunk = data[pos : pos + length]
            pos += length
            if field is not None:
                if field[1] == "bytes":
                    out[field[0]] = chunk
                elif field[1] == "string":
                    try:
                        out[field[0]] = chunk.decode("utf-8")
                    except UnicodeDecodeError:
                        raise WireError() from None
                else:
                    raise WireError()  # packed int32 is not used by these messages
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if size > end - pos or field is not None:
                raise WireError()
            pos += size
        else:
            raise WireError()  # groups (3, 4) and the undefined wire types 6, 7
    return out


def _put_varint(out: bytearray, value: int) -> None:
    value %= _U64
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def encode(values: Mapping[str, Value], schema: Schema) -> bytes:
    """``values`` as a message of ``schema``, fields in number order, defaults omitted.

    Raises:
        KeyError: a name that is not in ``schema``.
        TypeError, ValueError: a value of the wrong type or range (a caller's bug).
    """
    by_name = {name: (number, kind) for number, (name, kind) in schema.items()}
    out = bytearray()
    for name in sorted(values, key=lambda n: by_name[n][0]):
        number, kind = by_name[name]
        value = values[name]
        if kind == "int32":
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} is an int")
            if not _INT32_MIN <= value <= _INT32_MAX:
                raise ValueError(f"{name} is out of the int32 range")
            if value:
                _put_varint(out, number << 3)
                _put_varint(out, value)
            continue
        if kind == "string":
            if not isinstance(value, str):
                raise TypeError(f"{name} is a str")
            raw = value.encode("utf-8")
        else:
            if not isinstance(value, (bytes, bytearray)):
                raise TypeError(f"{name} is bytes")
            raw = bytes(value)
        if raw:
            _put_varint(out, (number << 3) | 2)
            _put_varint(out, len(raw))
            out += raw
    return bytes(out)
