"""The wire protocol: ACS3 signatures, timestamps, nonces, STS tokens, actions, parameters,
and the Alibaba error document, tested with raw requests and with the SDK."""

from __future__ import annotations

import socket
import time
import uuid

import pytest
from alibabacloud_kms20160120 import models

from kmsbeam.emulator import EmulatorServer
from tests.emulator.conftest import (
    ADMIN,
    TEMP,
    call_raw,
    client_for,
    sdk_error,
    send,
    signed_headers,
)

ERROR_FIELDS = {"RequestId", "HostId", "Code", "Message", "Recommend"}


def _error(raw: object, status: int, code: str) -> None:
    assert (raw.status, raw.body.get("Code")) == (status, code), raw.body  # type: ignore[attr-defined]
    assert set(raw.body) == ERROR_FIELDS  # type: ignore[attr-defined]
    assert raw.headers["x-acs-request-id"] == raw.body["RequestId"]  # type: ignore[attr-defined]


def test_a_signed_raw_request_works(server: EmulatorServer) -> None:
    raw = call_raw(server.endpoint, "ListKeys", {"PageSize": "1"})
    assert raw.status == 200 and raw.body["PageSize"] == 1 and raw.body["RequestId"]
    assert raw.headers["content-type"].startswith("application/json")


def test_bad_signature(server: EmulatorServer) -> None:
    _error(call_raw(server.endpoint, "ListKeys", {}, secret="wrong"), 400, "SignatureDoesNotMatch")
    headers = signed_headers(server.endpoint, "ListKeys", {"PageSize": "1"})
    _error(send(server.endpoint, headers, {"PageSize": "2"}), 400, "SignatureDoesNotMatch")
    headers = signed_headers(server.endpoint, "ListKeys", {}, body=b"")
    _error(send(server.endpoint, headers, {}, body=b"PageSize=3"), 400, "SignatureDoesNotMatch")
    headers = signed_headers(server.endpoint, "ListKeys", {})
    headers["x-acs-action"] = "DescribeKey"  # a signed header changed in flight
    _error(send(server.endpoint, headers, {}), 400, "SignatureDoesNotMatch")


def test_sdk_with_a_wrong_secret(server: EmulatorServer) -> None:
    err = sdk_error(lambda: client_for(server.endpoint, ADMIN[0], "nope").list_keys(models.ListKeysRequest()))
    assert (err.code, err.status_code) == ("SignatureDoesNotMatch", 400)


def test_unknown_access_key(server: EmulatorServer) -> None:
    _error(call_raw(server.endpoint, "ListKeys", {}, ak="nobody"), 404, "InvalidAccessKeyId.NotFound")
    err = sdk_error(lambda: client_for(server.endpoint, "nobody", "x").list_keys(models.ListKeysRequest()))
    assert (err.code, err.status_code) == ("InvalidAccessKeyId.NotFound", 404)


def test_incomplete_signature(server: EmulatorServer) -> None:
    headers = signed_headers(server.endpoint, "ListKeys", {})
    del headers["Authorization"]
    _error(send(server.endpoint, headers, {}), 400, "IncompleteSignature")
    headers["Authorization"] = "ACS3-HMAC-SHA1 Credential=admin,SignedHeaders=host,Signature=00"
    _error(send(server.endpoint, headers, {}), 400, "IncompleteSignature")
    headers["Authorization"] = f"ACS3-HMAC-SHA256 Credential={ADMIN[0]},SignedHeaders=host,Signature=00"
    _error(send(server.endpoint, headers, {}), 400, "IncompleteSignature")


@pytest.mark.parametrize("offset", [-16 * 60, 16 * 60])
def test_stale_or_future_timestamp(server: EmulatorServer, offset: int) -> None:
    date = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + offset))
    _error(call_raw(server.endpoint, "ListKeys", {}, date=date), 400, "IllegalTimestamp")
    _error(call_raw(server.endpoint, "ListKeys", {}, date="yesterday"), 400, "IllegalTimestamp")


def test_replayed_nonce_is_rejected(server: EmulatorServer, key_id: str) -> None:
    query = {"KeyId": key_id}
    headers = signed_headers(server.endpoint, "DisableKey", query)
    assert send(server.endpoint, headers, query).status == 200
    _error(send(server.endpoint, headers, query), 400, "SignatureNonceUsed")
    # the same nonce signed by another access key is that key's own nonce
    nonce = headers["x-acs-signature-nonce"]
    assert call_raw(server.endpoint, "ListKeys", {}, ak=TEMP[0], secret=TEMP[1], nonce=nonce,
                    extra={"x-acs-security-token": TEMP[2]}).status == 200  # fmt: skip


def test_oversized_nonce_is_refused(server: EmulatorServer) -> None:
    _error(call_raw(server.endpoint, "ListKeys", {}, nonce="n" * 257), 400, "IncompleteSignature")


def test_unknown_action_and_version(server: EmulatorServer) -> None:
    _error(call_raw(server.endpoint, "MakeCoffee", {}), 404, "InvalidAction.NotFound")
    _error(call_raw(server.endpoint, "ListKeys", {}, version="2020-01-01"), 400, "InvalidVersion")
    _error(call_raw(server.endpoint, "ListKeys", {}, method="PUT"), 400, "UnsupportedHTTPMethod")
    assert call_raw(server.endpoint, "ListKeys", {}, method="GET").status == 200


def test_missing_and_unknown_parameters(server: EmulatorServer, key_id: str) -> None:
    _error(call_raw(server.endpoint, "DescribeKey", {}), 400, "MissingParameter")
    _error(call_raw(server.endpoint, "DescribeKey", {"KeyId": key_id, "Colour": "red"}), 400,
           "InvalidParameter")  # fmt: skip
    _error(call_raw(server.endpoint, "GenerateDataKey", {"KeyId": key_id, "EncryptionContext": "[1]"}),
           400, "InvalidParameter")  # fmt: skip
    _error(call_raw(server.endpoint, "ListKeys", {"PageNumber": "x"}), 400, "InvalidParameter")
    err = sdk_error(lambda: client_for(server.endpoint, *ADMIN).describe_key(models.DescribeKeyRequest()))
    assert (err.code, err.status_code) == ("MissingParameter", 400)


def test_form_body_parameters_are_read(server: EmulatorServer, key_id: str) -> None:
    body = f"KeyId={key_id}".encode()
    headers = signed_headers(server.endpoint, "DescribeKey", {}, body=body,
                             extra={"content-type": "application/x-www-form-urlencoded"})  # fmt: skip
    raw = send(server.endpoint, headers, {}, body=body)
    assert raw.status == 200 and raw.body["KeyMetadata"]["KeyId"] == key_id


def test_temporary_keys_need_their_token(server: EmulatorServer) -> None:
    ok = client_for(server.endpoint, TEMP[0], TEMP[1], TEMP[2])
    assert ok.list_keys(models.ListKeysRequest()).body.request_id
    err = sdk_error(lambda: client_for(server.endpoint, TEMP[0], TEMP[1]).list_keys(models.ListKeysRequest()))
    assert (err.code, err.status_code) == ("InvalidSecurityToken.Malformed", 400)
    err = sdk_error(lambda: client_for(server.endpoint, TEMP[0], TEMP[1], "forged").list_keys(
        models.ListKeysRequest()))  # fmt: skip
    assert err.code == "InvalidSecurityToken.MismatchWithAccessKey"
    err = sdk_error(lambda: client_for(server.endpoint, *ADMIN, TEMP[2]).list_keys(models.ListKeysRequest()))
    assert err.code == "InvalidSecurityToken.MismatchWithAccessKey"


def test_expired_temporary_key(tmp_path: object) -> None:
    from kmsbeam.emulator import AccessKey

    key = AccessKey("STS.old", "s", security_token="t", expiration=time.time() - 1)
    with EmulatorServer(tmp_path, [key], rotation_check_seconds=None) as srv:  # type: ignore[arg-type]
        err = sdk_error(lambda: client_for(srv.endpoint, "STS.old", "s", "t").list_keys(models.ListKeysRequest()))
        assert err.code == "InvalidSecurityToken.Expired"


def test_malformed_http_gets_a_json_error(server: EmulatorServer) -> None:
    host, port = server.endpoint.rsplit(":", 1)
    for request in (b"NONSENSE\r\n\r\n", b"POST / HTTP/1.1\r\nbad header\r\n\r\n",
                    b"POST / HTTP/1.1\r\nContent-Length: 99999999\r\n\r\n",
                    b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"):  # fmt: skip
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(request)
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 400") and b'"Code":"InvalidParameter"' in body, request


@pytest.mark.parametrize("eol", [b"\r\n", b"\n"])
def test_a_head_in_pieces_or_with_bare_newlines_is_read(server: EmulatorServer, eol: bytes) -> None:
    headers = signed_headers(server.endpoint, "ListKeys", {"PageSize": "1"})
    lines = [b"POST /?PageSize=1 HTTP/1.1"] + [f"{k}: {v}".encode() for k, v in headers.items()]
    head = eol.join([*lines, b"Content-Length: 0", b"Connection: close", b"", b""])
    host, port = server.endpoint.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(0, len(head), 97):
            sock.sendall(head[i : i + 97])
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK") and b'"PageSize":1' in data


def test_keep_alive_serves_many_calls_on_one_connection(server: EmulatorServer) -> None:
    import http.client
    from urllib.parse import urlencode

    host, port = server.endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        for _ in range(3):
            headers = signed_headers(server.endpoint, "ListKeys", {"PageSize": "1"})
            conn.request("POST", "/?" + urlencode({"PageSize": "1"}), body=b"", headers=headers)
            response = conn.getresponse()
            assert response.status == 200 and response.read()
    finally:
        conn.close()


def test_request_ids_are_unique(server: EmulatorServer) -> None:
    ids = {call_raw(server.endpoint, "ListKeys", {}).body["RequestId"] for _ in range(5)}
    assert len(ids) == 5 and all(uuid.UUID(i) for i in ids)
