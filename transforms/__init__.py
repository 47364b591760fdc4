"""kmsbeam's Apache Beam transforms: field- and record-level envelope encryption.

::

    from kmsbeam.transforms import EncryptFields, DecryptFields, EncryptRecords, DecryptRecords
    enc = records | EncryptFields(["ssn", "contact.email"], key="local:alias/pii")
    good, dead = records | EncryptFields(["ssn"], key="local:alias/pii").with_dead_letters()
"""

from kmsbeam.transforms._transforms import (
    DEAD_LETTER,
    DecryptFields,
    DecryptRecords,
    EncryptFields,
    EncryptRecords,
)

__all__ = ["DEAD_LETTER", "DecryptFields", "DecryptRecords", "EncryptFields", "EncryptRecords"]
