"""Request authentication: access keys, ACS3-HMAC-SHA256 signatures, timestamps and nonces.

The official SDK signs every request (FIELD-NOTES, "Alibaba Cloud KMS SDK")::

    canonical = METHOD \\n PATH \\n sorted query (k=quote(v, safe="~") joined by &) \\n
                signed headers ("name:value\\n" each, names lower case, sorted) \\n
                SignedHeaders (a;b;c) \\n hex sha256(body)
    signature = hex HMAC-SHA256(secret, "ACS3-HMAC-SHA256\\n" + hex sha256(canonical))
    Authorization: ACS3-HMAC-SHA256 Credential=AK,SignedHeaders=a;b,Signature=HEX

Checks, in order (the first failure answers): a well-formed ``Authorization`` header naming
the signed headers the protocol needs (``IncompleteSignature``), a known access key
(``InvalidAccessKeyId.NotFound``), the body hash and the signature
(``SignatureDoesNotMatch``), the STS token of a temporary key (``InvalidSecurityToken.*``),
``x-acs-date`` within 15 minutes of the server clock (``IllegalTimestamp``) and a signature
nonce never seen in that window (``SignatureNonceUsed``). Nonces are remembered until their
request's date leaves the window, across restarts when a file is given (``_nonces``); past
``max_nonces`` live entries new requests are throttled rather than nonces forgotten.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from kmsbeam.emulator._errors import ApiError
from kmsbeam.emulator._nonces import NonceCache
from kmsbeam.emulator._policy import Policy
from kmsbeam.errors import ConfigurationError

__all__ = ["ALGORITHM", "AccessKey", "Authenticator", "claimed_access_key"]

ALGORITHM = "ACS3-HMAC-SHA256"
WINDOW_SECONDS = 15 * 60
MAX_NONCE_LENGTH = 256
MEMO_LENGTH = 512  # query values up to this long are escaped once per distinct text
REQUIRED_SIGNED = (
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
)
Headers = Mapping[str, Sequence[str]]  # lower-case name -> values
_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~")


class AccessKey:
    """One access key the emulator accepts.

    Args:
        access_key_id: the AccessKey ID (not secret; appears in the audit log).
        secret: the AccessKey secret (never logged, printed or in a repr).
        policy: a RAM-style policy (``Policy``, its JSON text or parsed document); ``None``
            gives full access, any policy denies what it does not allow.
        security_token: makes this a temporary (STS) key: every request must carry this
            token in ``x-acs-security-token`` (the SDK's ``Config(security_token=...)``).
        expiration: for a temporary key, Unix seconds after which it is refused.
    """

    def __init__(
        self,
        access_key_id: str,
        secret: str,
        *,
        policy: Policy | Mapping[str, Any] | str | None = None,
        security_token: str | None = None,
        expiration: float | None = None,
    ) -> None:
        for name, value in (("access_key_id", access_key_id), ("secret", secret)):
            if not isinstance(value, str) or not value or value != value.strip():
                raise ConfigurationError(f"an access key's {name} is a non-empty string")
        if any(c in access_key_id for c in ",= \t"):
            raise ConfigurationError("an access key id cannot contain ',', '=' or spaces")
        if security_token is not None and (
            not isinstance(security_token, str) or not security_token
        ):
            raise ConfigurationError("a security token is a non-empty string")
        if expiration is not None and security_token is None:
            raise ConfigurationError("only a temporary key (with a security_token) expires")
        self.access_key_id = access_key_id
        self.secret = secret
        self.policy = policy if policy is None or isinstance(policy, Policy) else Policy(policy)
        self.security_token = security_token
        self.expiration = expiration

    @property
    def temporary(self) -> bool:
        return self.security_token is not None

    def __repr__(self) -> str:
        kind = "temporary" if self.temporary else "permanent"
        policy = "policy" if self.policy is not None else "full access"
        return f"AccessKey({self.access_key_id!r}, {kind}, {policy})"


def claimed_access_key(headers: Headers) -> str | None:
    """The access key id an ``Authorization`` header names (unverified; for the audit log)."""
    try:
        return _parse_authorization(headers)[0]
    except ApiError:
        return None


def _incomplete(message: str) -> ApiError:
    return ApiError("IncompleteSignature", message)


def _parse_authorization(headers: Headers) -> tuple[str, list[str], str]:
    values = headers.get("authorization")
    if not values or len(values) != 1:
        raise _incomplete("the request has no Authorization header (sign it with ACS3-HMAC-SHA256)")
    algorithm, _, rest = values[0].strip().partition(" ")
    if algorithm != ALGORITHM:
        raise _incomplete(f"the signature algorithm must be {ALGORITHM}")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, eq, value = part.strip().partition("=")
        if not eq or name in fields:
            raise _incomplete("the Authorization header is malformed")
        fields[name] = value
    if set(fields) != {"Credential", "SignedHeaders", "Signature"} or not fields["Credential"]:
        raise _incomplete("Authorization needs Credential, SignedHeaders and Signature")
    return fields["Credential"], fields["SignedHeaders"].split(";"), fields["Signature"]


class Authenticator:
    """Verifies signed requests against a fixed set of access keys (thread-safe)."""

    def __init__(
        self,
        keys: Mapping[str, AccessKey],
        *,
        clock: Callable[[], float] = time.time,
        max_nonces: int = 1_000_000,
        nonce_file: Path | None = None,
    ) -> None:
        """``nonce_file`` keeps the replay window across restarts (``_nonces``)."""
        self._keys = dict(keys)
        self._clock = clock
        self._nonces = NonceCache(max_nonces, nonce_file, clock())

    def close(self) -> None:
        self._nonces.close()

    @property
    def remembered_nonces(self) -> int:
        return len(self._nonces)

    def authenticate(
        self,
        method: str,
        path: str,
        query: Mapping[str, str],
        headers: Headers,
        body: bytes,
    ) -> AccessKey:
        """The access key that signed this request; ``ApiError`` if any check fails."""
        key_id, signed, signature = _parse_authorization(headers)
        missing = [h for h in REQUIRED_SIGNED if h not in signed]
        if missing:
            raise _incomplete(f"the signed headers must include {', '.join(missing)}")
        if "x-acs-security-token" in headers and "x-acs-security-token" not in signed:
            raise _incomplete("the signed headers must include x-acs-security-token")
        key = self._keys.get(key_id)
        if key is None:
            raise ApiError(
                "InvalidAccessKeyId.NotFound", "the AccessKey ID does not exist in our records"
            )
        lines = []
        for name in signed:
            values = headers.get(name)
            if not values or name != name.lower():
                raise _incomplete(f"the signed header {name} is missing from the request")
            value = values[0].strip() if len(values) == 1 else ",".join(
                sorted(v.strip() for v in values)
            )  # fmt: skip
            lines.append(f"{name}:{value}\n")
        payload = hashlib.sha256(body).hexdigest()
        if headers["x-acs-content-sha256"][0] != payload:
            raise ApiError("SignatureDoesNotMatch", "x-acs-content-sha256 is not the body's hash")
        canonical_query = "&".join(f"{k}={_quote(query[k])}" for k in sorted(query))
        canonical = "\n".join(
            (method, path, canonical_query, "".join(lines), ";".join(signed), payload)
        )
        to_sign = f"{ALGORITHM}\n{hashlib.sha256(canonical.encode('utf-8')).hexdigest()}"
        expected = hmac.digest(key.secret.encode("utf-8"), to_sign.encode("utf-8"), "sha256")
        # bytes, not str: compare_digest refuses non-ASCII text (a forged header would be a 500)
        given = signature.lower().encode("utf-8", "surrogateescape")
        if not hmac.compare_digest(expected.hex().encode("ascii"), given):
            raise ApiError(
                "SignatureDoesNotMatch",
                "the request signature does not match our calculation; server string to sign: "
                + to_sign.replace("\n", "\\n"),
            )
        now = self._clock()
        self._check_token(key, headers, now)
        date = _timestamp(headers["x-acs-date"][0])
        if date is None or abs(now - date) > WINDOW_SECONDS:
            raise ApiError(
                "IllegalTimestamp",
                "x-acs-date must be UTC like 2026-01-20T12:00:00Z, within 15 minutes of the "
                "server time",
            )
        nonce = headers["x-acs-signature-nonce"][0]
        if not 1 <= len(nonce) <= MAX_NONCE_LENGTH:
            raise _incomplete(f"x-acs-signature-nonce must be 1 to {MAX_NONCE_LENGTH} characters")
        if not self._nonces.add(f"{key_id}\0{nonce}", date + WINDOW_SECONDS, now):
            raise ApiError("SignatureNonceUsed", "the signature nonce has been used already")
        return key

    @staticmethod
    def _check_token(key: AccessKey, headers: Headers, now: float) -> None:
        sent = headers.get("x-acs-security-token")
        if key.security_token is None:
            if sent:
                raise ApiError(
                    "InvalidSecurityToken.MismatchWithAccessKey",
                    "a security token was sent with a permanent access key",
                )
            return
        if not sent or len(sent) != 1:
            raise ApiError(
                "InvalidSecurityToken.Malformed", "this temporary access key needs its token"
            )
        if not hmac.compare_digest(sent[0].encode(), key.security_token.encode()):
            raise ApiError(
                "InvalidSecurityToken.MismatchWithAccessKey",
                "the security token does not belong to this access key",
            )
        if key.expiration is not None and now >= key.expiration:
            raise ApiError("InvalidSecurityToken.Expired", "the security token has expired")


def _quote(value: str) -> str:
    """``quote(value, safe="~")``, skipping the work for values that need no escaping (and
    doing it once per distinct short value: the SDK sends the same context again and again)."""
    if _SAFE.issuperset(value):
        return value
    return _quote_memo(value) if len(value) <= MEMO_LENGTH else quote(value, safe="~")


@lru_cache(maxsize=4096)
def _quote_memo(value: str) -> str:
    return quote(value, safe="~")


@lru_cache(maxsize=64)  # the dates of the last seconds
def _timestamp(text: str) -> float | None:
    if len(text) != 20 or not text.endswith("Z"):
        return None
    try:
        return datetime.fromisoformat(text[:-1] + "+00:00").timestamp()
    except ValueError:
        return None
