"""kmsbeam: envelope encryption for data pipelines (the core layer; it never imports Beam).

A key source generates and wraps data keys; kmsbeam encrypts locally and stores only wrapped
keys. The Beam transforms live in ``kmsbeam.transforms``, runnable jobs and the CLI in
``kmsbeam.pipelines``.
"""

from kmsbeam.keys.cache import DataKeyCache, shared_cache
from kmsbeam.formats.codec import decode_value, encode_value
from kmsbeam.errors import (
    AccessDeniedError,
    AuthenticationError,
    ConfigurationError,
    FormatError,
    KeyDisabledError,
    KeyNotFoundError,
    KeySourceError,
    KeySourceUnavailableError,
    KmsBeamError,
    MalformedValueError,
    RecordError,
)
from kmsbeam.formats.fields import FieldDecryptor, FieldEncryptor
from kmsbeam.keys.source import DataKey, KeyInfo, KeySource, canonical_context, check_context
from kmsbeam.formats.paths import FieldPath, parse_paths
from kmsbeam.keys.calls import call_counts
from kmsbeam.keys.policy import DataKeyPolicy
from kmsbeam.keys.shelf import forget_data_keys
from kmsbeam.reasons import failure_reason
from kmsbeam.formats.records import RecordDecryptor, RecordEncryptor
from kmsbeam.keys.registry import keystore_home, open_key_source
from kmsbeam.keys.trust import TrustedKeySources, UntrustedKeySourceError
from kmsbeam.keys.uri import DEFAULT_KEY_URI, KeyUri, parse_key_uri

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_KEY_URI",
    "AccessDeniedError",
    "AuthenticationError",
    "ConfigurationError",
    "DataKey",
    "DataKeyCache",
    "DataKeyPolicy",
    "FieldDecryptor",
    "FieldEncryptor",
    "FieldPath",
    "FormatError",
    "KeyDisabledError",
    "KeyInfo",
    "KeyNotFoundError",
    "KeySource",
    "KeySourceError",
    "KeySourceUnavailableError",
    "KeyUri",
    "KmsBeamError",
    "MalformedValueError",
    "RecordDecryptor",
    "RecordEncryptor",
    "RecordError",
    "TrustedKeySources",
    "UntrustedKeySourceError",
    "__version__",
    "call_counts",
    "canonical_context",
    "check_context",
    "decode_value",
    "encode_value",
    "failure_reason",
    "forget_data_keys",
    "keystore_home",
    "open_key_source",
    "parse_key_uri",
    "parse_paths",
    "shared_cache",
]
