"""Server-side checks of OSS request signatures, V1 (HMAC-SHA1) and V4 (OSS4-HMAC-SHA256).

Written from OSS's published signing rules for the loopback test server: a request is
accepted only if its signature, recomputed with the secret the server holds for the access
key id, matches, its date is within 15 minutes, and an STS credential's token is present.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from urllib.parse import quote

__all__ = ["SignatureRejected", "verify"]

MAX_SKEW_SECONDS = 15 * 60
#: query parameters that V1 signs (the "sub-resources"); other parameters are not signed
SUBRESOURCES = frozenset("""
    acl append bucketInfo callback callback-var cname comp continuation-token cors delete endTime
    lifecycle live location logging objectInfo objectMeta partNumber policy position qos referer
    replication replicationLocation replicationProgress requestPayment response-cache-control
    response-content-disposition response-content-encoding response-content-language
    response-content-type response-expires restore security-token sequential startTime stat status
    style styleName symlink tagging uploadId uploads versionId versioning versions vod website
    x-oss-process x-oss-traffic-limit
""".split())  # fmt: skip
V4_DEFAULT_SIGNED = ("content-type", "content-md5")


class SignatureRejected(Exception):
    """Why a request's authentication failed: an OSS error code and a message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _hmac(key: bytes, msg: str, algo: str = "sha256") -> bytes:
    return hmac.new(key, msg.encode("utf-8"), algo).digest()


def _check_time(when: datetime, now: datetime) -> None:
    if abs((now - when).total_seconds()) > MAX_SKEW_SECONDS:
        raise SignatureRejected("RequestTimeTooSkewed", "the request time is too far from the server's")


def _secret(keys: Mapping[str, tuple[str, str | None]], key_id: str, headers: Mapping[str, str]) -> str:
    if key_id not in keys:
        raise SignatureRejected("InvalidAccessKeyId", "the OSS access key id you provided does not exist")
    secret, token = keys[key_id]
    if token is not None and not hmac.compare_digest(headers.get("x-oss-security-token", ""), token):
        raise SignatureRejected("InvalidSecurityToken", "the security token you provided is invalid")
    return secret


def _v1(method: str, path_key: str, query: Sequence[tuple[str, str]], headers: Mapping[str, str],
        secret: str, signature: str) -> None:  # fmt: skip
    oss = sorted((k, v) for k, v in headers.items() if k.startswith("x-oss-"))
    sub = sorted((k, v) for k, v in query if k in SUBRESOURCES)
    resource = path_key + ("?" + "&".join(f"{k}={v}" if v else k for k, v in sub) if sub else "")
    date = headers.get("x-oss-date", "") or headers.get("date", "")
    text = "\n".join([method, headers.get("content-md5", ""), headers.get("content-type", ""), date,
                      "".join(f"{k}:{v}\n" for k, v in oss) + resource])  # fmt: skip
    expected = base64.b64encode(_hmac(secret.encode("utf-8"), text, "sha1")).decode("ascii")
    if not hmac.compare_digest(expected, signature):
        raise SignatureRejected("SignatureDoesNotMatch", "the request signature we calculated does not match")


def _enc(text: str, keep_slash: bool) -> str:
    return quote(text, safe="-_.~" + ("/" if keep_slash else ""))


def _v4(method: str, path_key: str, query: Sequence[tuple[str, str]], headers: Mapping[str, str],
        secret: str, fields: Mapping[str, str], region: str, now: datetime) -> None:  # fmt: skip
    key_id, _, scope = fields["Credential"].partition("/")
    day, scope_region, product, terminal = (scope.split("/") + ["", "", "", ""])[:4]
    if scope_region != region or product != "oss" or terminal != "aliyun_v4_request":
        raise SignatureRejected("SignatureDoesNotMatch", f"the credential scope must be for region {region}")
    stamp = headers.get("x-oss-date", "")
    try:
        when = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    except ValueError:
        raise SignatureRejected("AccessDenied", "x-oss-date is missing or malformed") from None
    if not stamp.startswith(day):
        raise SignatureRejected("SignatureDoesNotMatch", "the credential date is not the request date")
    _check_time(when, now)
    extra = sorted(h.strip().lower() for h in fields.get("AdditionalHeaders", "").split(";") if h.strip())
    signed = sorted((k, v) for k, v in headers.items()
                    if k.startswith("x-oss-") or k in V4_DEFAULT_SIGNED or k in extra)  # fmt: skip
    params = sorted((_enc(k, False), _enc(v, False)) for k, v in query)
    canonical = "\n".join([
        method, _enc(path_key, True), "&".join(f"{k}={v}" if v else k for k, v in params),
        "".join(f"{k}:{v}\n" for k, v in signed), ";".join(extra),
        headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
    ])  # fmt: skip
    digest = hashlib.sha256(canonical.encode("utf-8")).hexdigest()
    to_sign = f"OSS4-HMAC-SHA256\n{stamp}\n{scope}\n{digest}"
    key = ("aliyun_v4" + secret).encode("utf-8")
    for part in (day, region, "oss", "aliyun_v4_request"):
        key = _hmac(key, part)
    expected = hmac.new(key, to_sign.encode("utf-8"), "sha256").hexdigest()
    if not hmac.compare_digest(expected, fields.get("Signature", "")):
        raise SignatureRejected("SignatureDoesNotMatch", "the request signature we calculated does not match")


def verify(
    method: str,
    path_key: str,
    query: Sequence[tuple[str, str]],
    headers: Mapping[str, str],
    keys: Mapping[str, tuple[str, str | None]],
    region: str,
    body_sha256: str | None = None,
    now: datetime | None = None,
) -> str:
    """Check one request's signature; returns the access key id that signed it.

    Args:
        path_key: ``/bucket/key`` decoded (``/bucket/`` for bucket requests).
        query: the decoded query parameters.
        headers: lower-case header names to values as received.
        keys: access key id -> (secret, STS token or None).
        region: the server's region (V4 scope).
        body_sha256: hex SHA-256 of the body, checked when the request signed its payload.

    Raises:
        SignatureRejected: with the OSS error code to answer.
    """
    now = now or datetime.now(timezone.utc)
    auth = headers.get("authorization", "")
    if auth.startswith("OSS "):
        key_id, _, signature = auth[4:].rpartition(":")
        secret = _secret(keys, key_id, headers)
        try:
            when = parsedate_to_datetime(headers.get("date", ""))
        except (TypeError, ValueError):
            raise SignatureRejected("AccessDenied", "the Date header is missing or malformed") from None
        _check_time(when if when.tzinfo else when.replace(tzinfo=timezone.utc), now)
        _v1(method, path_key, query, headers, secret, signature)
        return key_id
    if auth.startswith("OSS4-HMAC-SHA256 "):
        fields: dict[str, str] = dict(re.findall(r"(\w+)=([^,\s]*)", auth[17:]))
        if "Credential" not in fields or "Signature" not in fields:
            raise SignatureRejected("AccessDenied", "malformed OSS4-HMAC-SHA256 authorization")
        key_id = fields["Credential"].partition("/")[0]
        secret = _secret(keys, key_id, headers)
        payload = headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")
        if payload != "UNSIGNED-PAYLOAD" and body_sha256 is not None and payload != body_sha256:
            raise SignatureRejected("InvalidDigest", "x-oss-content-sha256 does not match the body")
        _v4(method, path_key, query, headers, secret, fields, region, now)
        return key_id
    raise SignatureRejected("AccessDenied", "anonymous access is not allowed")
