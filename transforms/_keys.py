"""Creating ``local:alias/`` keys: an explicit step on the driver, before the pipeline is built.

Transforms never create keys (their ``expand()`` calls no key source) and workers only open
existing ones, so a job encrypting under a new local alias creates it first::

    for uri in create_local_keys("local:alias/pii"):
        print(f"kmsbeam: created key {uri} in the local keystore", file=sys.stderr)
    with beam.Pipeline() as p:
        ... | EncryptFields("local:alias/pii", ["ssn"])

kmsbeam never creates keys in a KMS or an HSM: other URIs are left alone (create those with
the console, ``aliyun kms``, the emulator's tools, or ``kmsbeam keys create``).
"""

from __future__ import annotations

from kmsbeam import KeyNotFoundError, open_key_source, parse_key_uri

__all__ = ["create_local_keys"]


def create_local_keys(*uris: str) -> list[str]:
    """Create each ``local:`` key among ``uris`` that does not exist yet, in the keystore of
    this process (``$KMSBEAM_HOME``); return the URIs created by this call (say so: data
    encrypted under a key cannot be decrypted without it, so it must be backed up)."""
    created: list[str] = []
    for uri in dict.fromkeys(uris):
        if parse_key_uri(uri).scheme != "local":
            continue
        try:
            open_key_source(uri)  # exists already (a missing key is never cached)
        except KeyNotFoundError:
            if open_key_source(uri, create=True).created:
                created.append(uri)
    return created
