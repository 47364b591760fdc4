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

# Importing this package registers the oss:// Beam FileSystem (and its pipeline options).
from kmsbeam.transforms._ossfs import OssFileSystem, OssOptions  # noqa: E402
from kmsbeam.transforms._objects import DecryptObjects, EncryptObjects  # noqa: E402

__all__ = ["DEAD_LETTER", "DecryptFields", "DecryptObjects", "DecryptRecords", "EncryptFields",
           "EncryptObjects", "EncryptRecords", "OssFileSystem", "OssOptions"]  # fmt: skip

# Parquet: Parquet Modular Encryption IO and cell-encrypted columns on Arrow tables.
from kmsbeam.transforms._parquet import ReadEncryptedParquet, WriteEncryptedParquet  # noqa: E402
from kmsbeam.transforms._parquet_cells import DecryptCells, EncryptCells, cells_schema  # noqa: E402

__all__ += ["DecryptCells", "EncryptCells", "ReadEncryptedParquet", "WriteEncryptedParquet",
            "cells_schema"]  # fmt: skip

# Rotation: rewrap data keys to a new master key, or re-encrypt with new data keys.
from kmsbeam.transforms._rotate import ReencryptFields, ReencryptRecords, RewrapDataKeys  # noqa: E402

__all__ += ["ReencryptFields", "ReencryptRecords", "RewrapDataKeys"]
