"""The kmsbeam exception tree: every error kmsbeam raises on purpose is one of these.

::

    KmsBeamError
    ├── ConfigurationError        a caller mistake: bad key URI, unknown option, bad path
    ├── KeySourceError            the key source refused or failed
    │   ├── KeySourceUnavailableError   network, throttling, HSM busy: retryable
    │   ├── AccessDeniedError           credentials or policy do not allow the call
    │   └── KeyNotFoundError            no such key or alias in this source
    │       └── KeyDisabledError        the key exists but is disabled or pending deletion
    ├── FormatError               a file, manifest or store that kmsbeam cannot read
    ├── RecordError               one record cannot be processed (missing field, wrong type)
    └── AuthenticationError       ciphertext that does not authenticate (one fixed message)
        └── MalformedValueError   not a kmsbeam value at all (same rule: no detail)

Rules:
- Third-party exceptions (SDK, sqlite3, PKCS#11) are mapped at the boundary with
  ``raise Mine(msg) from exc``, to the most specific class above.
- No message, repr or log line ever contains key material, plaintext or a secret.
- ``AuthenticationError`` is deliberately opaque: tampered bytes, a truncated value, a value
  moved to another field or record, the wrong encryption context and a key from another key
  source all raise it with the same message, so a failure tells an attacker nothing.
- Caller mistakes in the Python API (wrong argument types) stay ``TypeError``/``ValueError``;
  ``ConfigurationError`` is also a ``ValueError`` so either can be caught.
"""

from __future__ import annotations

__all__ = [
    "AccessDeniedError",
    "AuthenticationError",
    "ConfigurationError",
    "FormatError",
    "KeyDisabledError",
    "KeyNotFoundError",
    "KeySourceError",
    "KeySourceUnavailableError",
    "KmsBeamError",
    "MalformedValueError",
    "RecordError",
]


class KmsBeamError(Exception):
    """Root of every error kmsbeam raises on purpose.

    ``code`` is the key source's own error code where there is one (for the KMS engine and
    emulator: the Alibaba Cloud KMS code, such as ``Forbidden.KeyNotFound``), else ``None``.
    """

    #: the field path a per-record failure happened at, set by the field decryptor
    field: str | None = None

    def __init__(self, message: str = "", *, code: str | None = None) -> None:
        super().__init__(message)
        self.code = code


class ConfigurationError(KmsBeamError, ValueError):
    """A caller mistake: a bad key URI, option, field path or file path."""


class KeySourceError(KmsBeamError):
    """A key source refused a request or failed to answer it."""

    retryable = False


class KeySourceUnavailableError(KeySourceError):
    """The key source could not be reached or is throttling: the call may be retried."""

    retryable = True


class AccessDeniedError(KeySourceError):
    """The credentials or the key policy do not allow this operation."""


class KeyNotFoundError(KeySourceError):
    """No key or alias of that name exists in the key source."""


class KeyDisabledError(KeyNotFoundError):
    """The key exists but cannot be used: disabled, pending deletion or pending import."""


class FormatError(KmsBeamError):
    """A file, manifest or keystore kmsbeam cannot read (not an encrypted value: see below)."""


class RecordError(KmsBeamError):
    """One record cannot be processed: a field is missing or holds a type with no encoding.

    Pipelines send the record to the dead-letter output with ``str(error)`` as the reason.
    """


_AUTH_MESSAGE = (
    "authentication failed: the ciphertext was modified, truncated or moved, "
    "or it was encrypted under another key or encryption context"
)
_MALFORMED_MESSAGE = "not a valid kmsbeam encrypted value"


class AuthenticationError(KmsBeamError):
    """Ciphertext did not authenticate. The message is fixed and carries no detail."""

    def __init__(self, message: str = _AUTH_MESSAGE, *, code: str | None = None) -> None:
        super().__init__(message, code=code)


class MalformedValueError(AuthenticationError):
    """The input is not a kmsbeam encrypted value (bad encoding, unknown version, too short)."""

    def __init__(self, message: str = _MALFORMED_MESSAGE, *, code: str | None = None) -> None:
        super().__init__(message, code=code)
