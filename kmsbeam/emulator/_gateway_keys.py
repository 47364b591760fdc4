"""ClientKeys of the instance gateway: issuing them and checking every request's signature.

A ClientKey is an RSA-2048 key pair. ``issue`` writes the file the SDK reads
(``Config(client_key_file=..., password=...)``), mode 0600::

    {"KeyId": "KAAP.<uuid>", "PrivateKeyData": "<base64 PKCS#12 of the key and a
     self-signed certificate, encrypted with the password>"}

and remembers only the public key, with the optional list of keys (ids or aliases) the
ClientKey may use, in ``data_dir/gateway-client-keys.json`` (mode 0600), so ClientKeys keep
working across restarts.

A request is authenticated as the SDK signs it (``openapi_util.client.Client``)::

    string_to_sign = METHOD "\\n" content-sha256 "\\n" content-type "\\n" date "\\n"
                     (for each x-kms-* header, names sorted: name ":" trimmed value "\\n")
                     "/"                          # the SDK's canonicalized resource is "/"
                                                  # whenever a path is set (always "/")
    authorization  = "Bearer " base64(RSASSA-PKCS1-v1_5-SHA256(string_to_sign))

``content-sha256`` must be the upper-case hex SHA-256 of the body and ``date`` (RFC 1123)
within 15 minutes of the server's clock.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime
import email.utils
import fcntl
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID

from kmsbeam.emulator._errors import ApiError
from kmsbeam.emulator._gateway_tls import _write_private
from kmsbeam.errors import ConfigurationError

__all__ = ["CLIENT_KEYS_FILENAME", "ClientKey", "ClientKeys", "string_to_sign"]

CLIENT_KEYS_FILENAME = "gateway-client-keys.json"
SIGNATURE_METHOD = "RSA_PKCS1_SHA_256"
MAX_SKEW = 15 * 60
_SIGNED = ("content-sha256", "content-type", "date")


@dataclass(frozen=True)
class ClientKey:
    """A ClientKey the gateway knows: its id, public key, and the keys it may use
    (``None``: all)."""

    key_id: str
    public_key: rsa.RSAPublicKey
    keys: frozenset[str] | None

    def allows(self, *names: str) -> bool:
        """Whether any of ``names`` (the key as requested, its id, its aliases) is allowed."""
        return self.keys is None or any(name in self.keys for name in names)


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock across processes (two ``client-key`` commands at once)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def string_to_sign(method: str, headers: Mapping[str, str]) -> str:
    """The SDK's string to sign for a request with these (lower-case) headers."""
    head = "\n".join([method] + [headers.get(name, "") for name in _SIGNED]) + "\n"
    kms = "".join(f"{name}:{headers[name].strip()}\n" for name in sorted(headers)
                  if name.startswith("x-kms-"))  # fmt: skip
    return head + kms + "/"


def _auth_error(code: str, message: str) -> ApiError:
    status = {"SignatureNotMatch": 401, "Unauthorized": 404}.get(code, 400)
    return ApiError(code, message, status=status)


class ClientKeys:
    """The ClientKeys of one data dir (thread-safe)."""

    def __init__(self, data_dir: str | os.PathLike[str], *,
                 clock: Callable[[], float] = time.time) -> None:  # fmt: skip
        self.path = Path(data_dir).expanduser().absolute() / CLIENT_KEYS_FILENAME
        self._clock = clock
        self._lock = threading.Lock()
        self._keys: dict[str, ClientKey] = {}
        self._raw: dict[str, dict[str, object]] = {}
        self._stamp: tuple[int, int] | None = None
        with self._lock:
            self._reload()

    def _reload(self) -> None:
        """Read the file again if it changed (another process issued a ClientKey)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        if self._stamp == (st.st_mtime_ns, st.st_size):
            return
        os.chmod(self.path, 0o600)
        raw = json.loads(self.path.read_text("utf-8"))
        self._keys = {key_id: self._load(key_id, entry) for key_id, entry in raw.items()}
        self._raw, self._stamp = raw, (st.st_mtime_ns, st.st_size)

    @staticmethod
    def _load(key_id: str, entry: Mapping[str, object]) -> ClientKey:
        public = serialization.load_pem_public_key(str(entry["publicKey"]).encode("ascii"))
        if not isinstance(public, rsa.RSAPublicKey):
            raise ConfigurationError(f"the ClientKey {key_id} is not an RSA key")
        keys = entry.get("keys")
        if keys is not None and not isinstance(keys, list):
            raise ConfigurationError(f"the ClientKey {key_id} has a bad list of keys")
        allowed = None if keys is None else frozenset(str(k) for k in keys)
        return ClientKey(key_id, public, allowed)

    def issue(self, path: str | os.PathLike[str], password: str, *,
              keys: Iterable[str] | None = None) -> str:  # fmt: skip
        """Create a ClientKey, write its file to ``path`` (mode 0600); its id."""
        if not isinstance(password, str) or not password:
            raise ConfigurationError("a ClientKey needs a password")
        allowed = None if keys is None else sorted({str(k) for k in keys})
        key_id = f"KAAP.{uuid.uuid4()}"
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, key_id)])
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(private.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=3650))
            .sign(private, hashes.SHA256())
        )  # fmt: skip
        p12 = pkcs12.serialize_key_and_certificates(
            key_id.encode("ascii"), private, cert, None,
            serialization.BestAvailableEncryption(password.encode("utf-8")),
        )
        document = {"KeyId": key_id, "PrivateKeyData": base64.b64encode(p12).decode("ascii")}
        target = Path(path).expanduser().absolute()
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        _write_private(target, json.dumps(document).encode("utf-8"))
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ).decode("ascii")
        with self._lock, _file_lock(self.path.with_name(CLIENT_KEYS_FILENAME + ".lock")):
            self._reload()
            self._raw[key_id] = {"publicKey": public_pem, "keys": allowed,
                                 "created": now.strftime("%Y-%m-%dT%H:%M:%SZ")}  # fmt: skip
            _write_private(self.path, json.dumps(self._raw, indent=1).encode("utf-8"))
            self._keys[key_id] = self._load(key_id, self._raw[key_id])
        return key_id

    def authenticate(
        self, method: str, headers: Mapping[str, Sequence[str]], body: bytes
    ) -> ClientKey:
        """The ClientKey that signed this request.

        Raises:
            ApiError: ``MissingParameter``, ``InvalidParam``, ``RequestTimeTooSkewed``,
                ``Unauthorized`` (unknown ClientKey) or ``SignatureNotMatch``.
        """
        flat: dict[str, str] = {}
        for name, values in headers.items():
            if name.startswith("x-kms-") or name in _SIGNED or name == "authorization":
                if len(values) != 1:
                    raise ApiError("InvalidParameter", f"the header {name} is given twice")
                flat[name] = values[0]
        if flat.get("x-kms-signaturemethod") != SIGNATURE_METHOD:
            raise _auth_error("InvalidParam", "The Param x-kms-signaturemethod is invalid.")
        key_id = flat.get("x-kms-acccesskeyid")
        if not key_id:
            raise _auth_error("MissingParameter",
                              "Parameter x-kms-acccesskeyid does not exist in http header or body.")
        key = self._keys.get(key_id)
        if key is None:
            with self._lock:
                self._reload()
                key = self._keys.get(key_id)
        if key is None:
            raise _auth_error("Unauthorized", "The ClientKey does not exist in our records.")
        self._check_date(flat.get("date", ""))
        digest = hashlib.sha256(body).hexdigest().upper()
        if flat.get("content-sha256") != digest:
            raise _auth_error("SignatureNotMatch", "Signature is not matched.")
        scheme, _, signature = flat.get("authorization", "").partition(" ")
        try:
            raw = base64.b64decode(signature.strip(), validate=True)
            if scheme != "Bearer" or not raw:
                raise ValueError
            key.public_key.verify(raw, string_to_sign(method, flat).encode("utf-8"),
                                  padding.PKCS1v15(), hashes.SHA256())  # fmt: skip
        except (ValueError, binascii.Error, InvalidSignature):
            raise _auth_error("SignatureNotMatch", "Signature is not matched.") from None
        return key

    def _check_date(self, text: str) -> None:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            when = None
        if when is None or when.tzinfo is None:
            raise _auth_error("InvalidParam", "The Param Date is invalid.")
        if abs(when.timestamp() - self._clock()) > MAX_SKEW:
            raise _auth_error("RequestTimeTooSkewed",
                              "Request time exceeds server time more than 15 minutes.")
