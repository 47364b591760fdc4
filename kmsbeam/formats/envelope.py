"""Envelope v1 and v2: the byte layout shared by encrypted field values and encrypted records.

v2 (field value v2 0x03, record v2 0x04: key-vault values) is v1 with the header
``fmt || K || 0x00`` (18 bytes): the wrapped key lives in a key vault (``kmsbeam.vault``), named
by K; the counter, ciphertext and AAD are v1's, labels included (so a v1 value and a v2 value
of the same data key differ in their headers only). v1:

::

    offset      size   field
    0           1      format byte: 0x01 field value v1, 0x02 record v1
    1           2      L, length of the wrapped key, big-endian
    3           L      wrapped key: kind byte || key source blob   (kmsbeam.keys.source)
    3+L         16     K, the data key's commitment: HMAC-SHA256(DEK, COMMIT_LABEL)[:16]
    19+L        P      zero padding, P = (-(19 + L)) mod 3, so the header is 3k bytes long
    H = 19+L+P  4      counter C, big-endian; the AES-GCM nonce is 8 zero bytes || C
    H+4         n+16   AES-256-GCM ciphertext of the typed plaintext (kmsbeam.formats.codec), tag last

    AAD = label || len(name) (2 bytes, big-endian) || UTF-8 name || K || binding
      label   b"kmsbeam.field.v1" or b"kmsbeam.record.v1"
      name    the field path (field values) or the payload field name (records)
      K       the key commitment above: names the data key, whichever master key wraps it
      binding the record identity: codec encoding of a dict of the bound cleartext fields,
              keys sorted; empty when nothing is bound

The AAD names the data key by its commitment, not by its wrapped form, so rewrapping a data
key to another master key (rotation) replaces the header and leaves bytes H.. unchanged. A
reader checks K against the unwrapped key before decrypting: a wrapped key swapped for
another one fails, and no ciphertext opens under two keys (AES-GCM alone is not committing).

Text form: URL-safe base64 without ``=`` padding of the whole value. Because the header is a
multiple of 3 bytes, its base64 text is a fixed prefix computed once per data key.

Nonce rule: one ``Sealer`` per freshly generated data key, used from one thread; the counter
starts at 0 and the sealer refuses to go past 2**32 values, so a (key, nonce) pair never
repeats. Data keys are never persisted in plaintext, so a crashed worker cannot reuse one.
"""

from __future__ import annotations

from kmsbeam.formats._layout import (
    COMMIT_LABEL, FIELD_V1, FIELD_V2, MAX_VALUES_PER_KEY, RECORD_V1, RECORD_V2, V2, V2_OF,
    ParsedValue, from_text, from_text_joint, from_text_many, key_commitment, make_header, parse,
    reheader, to_text,
)  # fmt: skip
from kmsbeam.formats._opener import KeyCipher, Opener, open_value
from kmsbeam.formats._sealer import Sealer

__all__ = [
    "COMMIT_LABEL",
    "FIELD_V1",
    "FIELD_V2",
    "KeyCipher",
    "MAX_VALUES_PER_KEY",
    "Opener",
    "RECORD_V1",
    "RECORD_V2",
    "V2",
    "V2_OF",
    "ParsedValue",
    "Sealer",
    "from_text",
    "from_text_joint",
    "from_text_many",
    "key_commitment",
    "make_header",
    "open_value",
    "parse",
    "reheader",
    "to_text",
]
