"""Property tests of the instance gateway's protobuf codec (``kmsbeam.emulator._gateway_wire``)
and of the gateway's request pipeline on untrusted bodies.

- encode/decode round-trip, and agree with the protobuf runtime (messages built from the
  same field table), both ways;
- mutated encodings and random bytes raise only ``WireError``; a cut inside a field always
  does; unknown fields of every wire type are skipped;
- a correctly signed request with any body gets an answer (``InvalidParameter`` when the
  body does not decode), never an exception, and one audit record.

``KMSBEAM_FUZZ_EXAMPLES`` sets the size, as for ``test_fuzz_properties``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.serialization import pkcs12
from fuzzlib import mutate
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from kmsbeam.emulator._audit import AuditLog
from kmsbeam.emulator._gateway_actions import GatewayService
from kmsbeam.emulator._gateway_keys import ClientKeys, string_to_sign
from kmsbeam.emulator._gateway_wire import MESSAGES, WireError, decode, encode
from kmsbeam.emulator._service import Request
from kmsbeam.kms import KeyStore, KmsEngine

EXAMPLES = int(os.environ.get("KMSBEAM_FUZZ_EXAMPLES", "200"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=EXAMPLES <= 200, database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                           HealthCheck.function_scoped_fixture],
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
)  # fmt: skip
REQUESTS = sorted(name for name in MESSAGES if name.endswith("Request"))
INT32 = st.integers(-(1 << 31), (1 << 31) - 1)


def values_for(name: str) -> st.SearchStrategy[dict[str, Any]]:
    fields = {}
    for field, kind in MESSAGES[name].values():
        strategy = {"string": st.text(max_size=40), "bytes": st.binary(max_size=64),
                    "int32": INT32}[kind]  # fmt: skip
        fields[field] = strategy
    return st.fixed_dictionaries({}, optional=fields)  # type: ignore[arg-type]


def without_defaults(values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v not in ("", b"", 0)}


def protobuf_classes() -> dict[str, Any]:
    """Runtime protobuf classes built from the codec's own field table."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    proto = descriptor_pb2.FileDescriptorProto(name="kmsbeam_gateway_test.proto",
                                               package="kmsbeamtest", syntax="proto3")  # fmt: skip
    types = {"string": 9, "bytes": 12, "int32": 5}
    for name, schema in MESSAGES.items():
        message = proto.message_type.add(name=name)
        for number, (field, kind) in schema.items():
            message.field.add(name=field, number=number, type=types[kind], label=1)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"kmsbeamtest.{name}"))
            for name in MESSAGES}  # fmt: skip


CLASSES = protobuf_classes()


@FUZZ
@given(st.sampled_from(REQUESTS).flatmap(lambda n: st.tuples(st.just(n), values_for(n))))
def test_round_trip_and_agreement_with_protobuf(case: tuple[str, dict[str, Any]]) -> None:
    name, values = case
    schema = MESSAGES[name]
    data = encode(values, schema)
    assert decode(data, schema) == without_defaults(values)
    theirs = CLASSES[name](**values)
    assert theirs.SerializeToString(deterministic=True) == data
    parsed = CLASSES[name]()
    parsed.ParseFromString(data)
    assert {f.name: v for f, v in parsed.ListFields()} == without_defaults(values)


UNKNOWN = st.one_of(
    st.builds(lambda n, v: bytes([n << 3]) + encode({"x": v}, {1: ("x", "int32")})[1:],
              st.integers(7, 15), st.integers(1, 1 << 20)),
    st.builds(lambda n, b: bytes([n << 3 | 2, len(b)]) + b, st.integers(7, 15), st.binary(max_size=100)),
    st.builds(lambda n, b: bytes([n << 3 | 1]) + b, st.integers(7, 15), st.binary(min_size=8, max_size=8)),
    st.builds(lambda n, b: bytes([n << 3 | 5]) + b, st.integers(7, 15), st.binary(min_size=4, max_size=4)),
)  # field numbers 7..15: unknown to every request message


@FUZZ
@given(values_for("AdvanceGenerateDataKeyRequest"), st.lists(UNKNOWN, max_size=4), st.data())
def test_unknown_fields_are_skipped(values: dict[str, Any], unknown: list[bytes], data: Any) -> None:
    schema = MESSAGES["AdvanceGenerateDataKeyRequest"]
    encoded = encode(values, schema)
    at = data.draw(st.sampled_from([0, len(encoded)]))
    mixed = encoded[:at] + b"".join(unknown) + encoded[at:]
    assert decode(mixed, schema) == without_defaults(values)


@FUZZ
@given(values_for("AdvanceEncryptRequest"), st.data())
def test_a_cut_inside_a_field_is_refused(values: dict[str, Any], data: Any) -> None:
    schema = MESSAGES["AdvanceEncryptRequest"]
    encoded = encode(values, schema)
    # field boundaries: a cut anywhere else must fail
    bounds, pos = {0}, 0
    for field in sorted(without_defaults(values), key=lambda f: next(n for n, (x, _) in schema.items() if x == f)):
        pos += len(encode({field: values[field]}, schema))
        bounds.add(pos)
    cut = data.draw(st.integers(0, len(encoded)))
    if cut in bounds:
        decode(encoded[:cut], schema)
    else:
        with pytest.raises(WireError):
            decode(encoded[:cut], schema)


SEEDS = [encode({"KeyId": "alias/pii", "NumberOfBytes": 32, "Aad": b"aad"}, MESSAGES["AdvanceGenerateDataKeyRequest"]),
         encode({"CiphertextBlob": b"b" * 80, "Aad": b"x"}, MESSAGES["AdvanceDecryptRequest"]),
         encode({"KeyId": "k", "Plaintext": b"p" * 10}, MESSAGES["AdvanceEncryptRequest"]),
         bytes([0x10]) + b"\xff" * 9 + b"\x01", b"\x0a\x80\x80\x80\x80\x10"]  # fmt: skip
POS = st.integers(0, 1 << 10)
OPS = st.one_of(
    st.tuples(st.just("flip"), POS, st.integers(0, 7)),
    st.tuples(st.just("set"), POS, st.integers(0, 255)),
    st.tuples(st.just("truncate"), POS, st.none()),
    st.tuples(st.just("insert"), POS, st.binary(min_size=1, max_size=16)),
    st.tuples(st.just("delete"), POS, st.integers(0, 15)),
    st.tuples(st.just("repeat"), POS, st.integers(0, 63)),
)
BODIES = st.one_of(st.builds(mutate, st.sampled_from(SEEDS), st.lists(OPS, min_size=1, max_size=4)),
                   st.binary(max_size=300), st.sampled_from(SEEDS))  # fmt: skip


@FUZZ
@given(BODIES, st.sampled_from(REQUESTS))
def test_any_bytes_decode_or_raise_wire_error(body: bytes, name: str) -> None:
    try:
        decode(body, MESSAGES[name])
    except WireError:
        pass


@pytest.fixture(scope="module")
def signed_service(tmp_path_factory: pytest.TempPathFactory) -> Any:
    home = tmp_path_factory.mktemp("gateway-fuzz")
    engine = KmsEngine(KeyStore(home))
    engine.create_alias("alias/pii", engine.create_key().key_id)
    keys = ClientKeys(home, clock=time.time)
    key_id = keys.issue(home / "ck.json", "pw")
    p12 = base64.b64decode(json.loads((home / "ck.json").read_text())["PrivateKeyData"])
    private = pkcs12.load_pkcs12(p12, b"pw").key
    audit = AuditLog(home / "audit.jsonl")
    yield GatewayService(engine, keys, audit=audit), key_id, private, audit.path
    audit.close()
    engine.store.close()


def signed(key_id: str, private: Any, action: str, body: bytes) -> Request:
    headers = {"x-kms-apiname": action, "x-kms-apiversion": "dkms-gcs-0.2",
               "x-kms-signaturemethod": "RSA_PKCS1_SHA_256", "x-kms-acccesskeyid": key_id,
               "content-type": "application/x-protobuf",
               "content-sha256": hashlib.sha256(body).hexdigest().upper(),
               "date": email.utils.formatdate(usegmt=True)}  # fmt: skip
    signature = private.sign(string_to_sign("POST", headers).encode(), padding.PKCS1v15(), hashes.SHA256())
    headers["authorization"] = "Bearer " + base64.b64encode(signature).decode()
    return Request("POST", "/", {k: [v] for k, v in headers.items()}, body, "127.0.0.1")


@settings(FUZZ, max_examples=min(EXAMPLES, 100))
@given(BODIES, st.sampled_from(["AdvanceGenerateDataKey", "AdvanceEncrypt", "AdvanceDecrypt"]))
def test_signed_garbage_gets_one_clean_answer(signed_service: Any, body: bytes, action: str) -> None:
    service, key_id, private, audit_path = signed_service
    before = len(Path(audit_path).read_bytes().splitlines())
    response = service.handle(signed(key_id, private, action, body))
    try:
        decode(body, MESSAGES[action + "Request"])
        valid = True
    except WireError:
        valid = False
    error = decode(response.body, MESSAGES["Error"]) if response.status != 200 else {}
    if not valid:
        assert (response.status, error["ErrorCode"]) == (400, "InvalidParameter")
    else:
        assert response.status in (200, 400, 404, 409), error
        assert error.get("ErrorCode") != "InternalFailure"
    assert len(Path(audit_path).read_bytes().splitlines()) == before + 1


def _code(response: Any) -> tuple[int, str]:
    return response.status, decode(response.body, MESSAGES["Error"]).get("ErrorCode", "")


def test_authentication_edges(signed_service: Any) -> None:
    """Date window, body hash, signature and header checks, one by one (the SDK itself
    cannot send these: it always signs correctly with the current date)."""
    service, key_id, private, _ = signed_service
    body = encode({"KeyId": "alias/pii"}, MESSAGES["AdvanceGenerateDataKeyRequest"])
    good = signed(key_id, private, "AdvanceGenerateDataKey", body)
    assert service.handle(good).status == 200

    def variant(**changes: Any) -> Request:
        headers = {k: v[0] for k, v in good.headers.items()}
        headers.update({k.replace("_", "-"): v for k, v in changes.items()})
        return Request("POST", "/", {k: [v] for k, v in headers.items() if v is not None},
                       good.body, "127.0.0.1")  # fmt: skip

    stale = email.utils.formatdate(time.time() - 16 * 60, usegmt=True)
    resigned = signed(key_id, private, "AdvanceGenerateDataKey", body)
    old_date = {k: v[0] for k, v in resigned.headers.items()}
    old_date["date"] = stale
    signature = private.sign(string_to_sign("POST", old_date).encode(), padding.PKCS1v15(),
                             hashes.SHA256())  # fmt: skip
    old_date["authorization"] = "Bearer " + base64.b64encode(signature).decode()
    cases = [
        (Request("POST", "/", {k: [v] for k, v in old_date.items()}, body, "h"),
         (400, "RequestTimeTooSkewed")),
        (variant(date="yesterday"), (400, "InvalidParam")),
        (variant(content_sha256="0" * 64), (401, "SignatureNotMatch")),
        (variant(authorization="Bearer AAAA"), (401, "SignatureNotMatch")),
        (variant(authorization="Basic x"), (401, "SignatureNotMatch")),
        (variant(authorization=None), (401, "SignatureNotMatch")),
        (variant(**{"x-kms-extra": "unsigned"}), (401, "SignatureNotMatch")),
        (variant(**{"x-kms-acccesskeyid": "KAAP.nobody"}), (404, "Unauthorized")),
        (variant(**{"x-kms-acccesskeyid": None}), (400, "MissingParameter")),
        (variant(**{"x-kms-signaturemethod": "HMAC"}), (400, "InvalidParam")),
        (variant(**{"x-kms-apiversion": "dkms-gcs-0.1"}), (400, "InvalidApiVersion")),
        (variant(**{"x-kms-apiname": "CreateKey"}), (400, "InvalidApiName")),
    ]
    for request, expected in cases:
        assert _code(service.handle(request)) == expected
    tampered = Request("POST", "/", good.headers, body + b"\x00", "127.0.0.1")
    assert _code(service.handle(tampered)) == (401, "SignatureNotMatch")
