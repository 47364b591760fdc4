"""A real emulator on a free loopback port, official SDK clients, and a raw signed-request
helper (signed by the SDK's own ``Utils.get_authorization``) for protocol-level tests."""

from __future__ import annotations

import hashlib
import http.client
import json
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from alibabacloud_kms20160120 import models
from alibabacloud_kms20160120.client import Client
from alibabacloud_tea_openapi.models import Config
from alibabacloud_tea_openapi.utils import Utils

from kmsbeam.emulator import AccessKey, EmulatorServer

ADMIN = ("admin", "admin-secret-3f9a")
INGEST = ("ingest", "ingest-secret-7b21")
READER = ("reader", "reader-secret-c0de")
TEMP = ("STS.temp", "temp-secret-5e5e", "sts-token-0a0a")

# Separation of duties: ingestion may only make data keys; the reader may only decrypt, and
# only keys tagged team=analytics; nobody but admin manages keys.
INGEST_POLICY = {"Version": "1", "Statement": [
    {"Effect": "Allow", "Action": ["kms:GenerateDataKey", "kms:GenerateDataKeyWithoutPlaintext",
                                   "kms:DescribeKey"], "Resource": "acs:kms:*:*:key/*"},
    {"Effect": "Allow", "Action": "kms:GenerateDataKey", "Resource": "acs:kms:*:*:alias/*"}]}  # fmt: skip
READER_POLICY = {"Version": "1", "Statement": [
    {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": "acs:kms:*:*:key/*",
     "Condition": {"StringEquals": {"kms:tag/team": "analytics"}}}]}  # fmt: skip


def client_for(endpoint: str, ak: str, secret: str, token: str | None = None) -> Client:
    return Client(Config(endpoint=endpoint, protocol="http", access_key_id=ak,
                         access_key_secret=secret, security_token=token))  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("kms-data")


@pytest.fixture(scope="module")
def server(data_dir: Path) -> Iterator[EmulatorServer]:
    keys = [
        AccessKey(*ADMIN),
        AccessKey(*INGEST, policy=INGEST_POLICY),
        AccessKey(*READER, policy=READER_POLICY),
        AccessKey(TEMP[0], TEMP[1], security_token=TEMP[2]),
    ]
    with EmulatorServer(data_dir, keys, rotation_check_seconds=None) as srv:
        yield srv


@pytest.fixture(scope="module")
def admin(server: EmulatorServer) -> Client:
    return client_for(server.endpoint, *ADMIN)


@pytest.fixture()
def key_id(admin: Client) -> str:
    """A fresh enabled key."""
    return str(admin.create_key(models.CreateKeyRequest(description="test")).body.key_metadata.key_id)


def sdk_error(call: Callable[[], Any]) -> Any:
    """The SDK exception a call raises (fails the test if it succeeds)."""
    try:
        call()
    except Exception as exc:  # the SDK's ClientException / ServerException / ...
        return exc
    pytest.fail("the call succeeded")


@dataclass
class Raw:
    status: int
    headers: dict[str, str]
    body: dict[str, Any]


class _SignMe:
    """What ``Utils.get_authorization`` reads: method, pathname, query and headers."""

    def __init__(self, method: str, query: Mapping[str, str], headers: dict[str, str]) -> None:
        self.method, self.pathname, self.query, self.headers = method, "/", dict(query), headers


def signed_headers(
    endpoint: str, action: str, query: Mapping[str, str], *, ak: str = ADMIN[0],
    secret: str = ADMIN[1], date: str | None = None, nonce: str | None = None,
    version: str = "2016-01-20", body: bytes = b"", method: str = "POST",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:  # fmt: skip
    headers = {
        "host": endpoint, "x-acs-version": version, "x-acs-action": action,
        "user-agent": "kmsbeam-tests", "accept": "application/json",
        "x-acs-date": date or time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "x-acs-signature-nonce": nonce or uuid.uuid4().hex,
        "x-acs-content-sha256": hashlib.sha256(body).hexdigest(), **(extra or {}),
    }  # fmt: skip
    headers["Authorization"] = Utils.get_authorization(
        _SignMe(method, query, headers), "ACS3-HMAC-SHA256",
        headers["x-acs-content-sha256"], ak, secret,
    )  # fmt: skip
    return headers


def send(endpoint: str, headers: Mapping[str, str], query: Mapping[str, str],
         body: bytes = b"", method: str = "POST") -> Raw:  # fmt: skip
    host, port = endpoint.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, "/?" + urlencode(query), body=body, headers=dict(headers))
        resp = conn.getresponse()
        raw = resp.read()
        return Raw(resp.status, {k.lower(): v for k, v in resp.getheaders()},
                   json.loads(raw) if raw else {})  # fmt: skip
    finally:
        conn.close()


def call_raw(endpoint: str, action: str, query: Mapping[str, str], **kw: Any) -> Raw:
    """One signed request (``kw`` as for ``signed_headers``)."""
    body = kw.get("body", b"")
    return send(endpoint, signed_headers(endpoint, action, query, **kw), query, body,
                kw.get("method", "POST"))  # fmt: skip
