"""The PKCS#11 HSM key source (``pkcs11:`` key URIs): KEKs that never leave the HSM.

::

    pkcs11:token=etl;object=kek-2026?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:KMSBEAM_PKCS11_PIN

``Pkcs11KeySource`` implements ``kmsbeam.keys.source.KeySource`` over any PKCS#11 module: the
HSM generates a 32-byte seed per data key, derives the DEK and a context tag from it with
CKM_SHA256_HMAC, and wraps the seed under the KEK with CKM_AES_KEY_WRAP (RFC 3394). The
wrapped-key layout is in ``kmsbeam.pkcs11._blob``; the URI attributes in
``kmsbeam.pkcs11._config``; per-process libraries, locking and fork in
``kmsbeam.pkcs11._library``; sessions, login and start-up retries in
``kmsbeam.pkcs11._session``; error mapping in ``kmsbeam.pkcs11._errors``.

- ``open_pkcs11_source(parsed_uri)``: what ``kmsbeam.open_key_source`` calls for ``pkcs11:``.
- ``wrapped_key_version(wrapped)``: the ``TOKEN/KEK-LABEL/KEK-ID-HEX`` a wrapped key names.
- ``create_kek(uri)``: create the KEK (``kmsbeam keys create --key pkcs11:...``).
- ``hsm_call_counts()``: PKCS#11 operations made by this process, by function name.
"""

from __future__ import annotations

from kmsbeam.pkcs11._config import PinSource, Pkcs11Config
from kmsbeam.pkcs11._library import call_counts as hsm_call_counts
from kmsbeam.pkcs11._blob import wrapped_key_version
from kmsbeam.pkcs11._source import Pkcs11KeySource, create_kek, open_pkcs11_source

__all__ = [
    "PinSource",
    "Pkcs11Config",
    "Pkcs11KeySource",
    "create_kek",
    "hsm_call_counts",
    "open_pkcs11_source",
    "wrapped_key_version",
]
