"""kmsbeam's Apache Beam transforms: field- and record-level envelope encryption.

::

    from kmsbeam.transforms import EncryptFields, DecryptFields, create_local_keys
    create_local_keys("local:alias/pii")  # on the driver, before the pipeline: expand() creates nothing
    enc = records | EncryptFields("local:alias/pii", ["ssn", "contact.email"])
    good, dead = records | EncryptFields("local:alias/pii", ["ssn"]).with_dead_letters()

Every transform takes its key first, then what the key protects; ``with_dead_letters()`` is a
new transform returning ``(outputs, dead_letters)`` (``_base``).
"""

from kmsbeam.transforms._transforms import (
    DEAD_LETTER,
    DecryptFields,
    DecryptRecords,
    EncryptFields,
    EncryptRecords,
)
from kmsbeam.transforms._keys import create_local_keys
from kmsbeam.transforms._options import Encoding, RewrapMode

# Importing this package registers the oss:// Beam FileSystem (and its pipeline options).
from kmsbeam.transforms.ossfs import OssFileSystem, OssOptions  # noqa: E402
# ... and key vaults on every Beam filesystem (kmsbeam.vault.open_store).
from kmsbeam.transforms import vault_fs as _vault_fs  # noqa: E402,F401
from kmsbeam.transforms._objects import DecryptObjects, EncryptObjects  # noqa: E402

__all__ = ["DEAD_LETTER", "DecryptFields", "DecryptObjects", "DecryptRecords", "EncryptFields",
           "EncryptObjects", "EncryptRecords", "Encoding", "OssFileSystem", "OssOptions", "RewrapMode",
           "create_local_keys"]  # fmt: skip

# Parquet: Parquet Modular Encryption IO and cell-encrypted columns on Arrow tables.
from kmsbeam.transforms._parquet import WriteEncryptedParquet  # noqa: E402
from kmsbeam.transforms._parquet_read import ReadEncryptedParquet  # noqa: E402
from kmsbeam.transforms._parquet_cells import DecryptCells, EncryptCells, cells_schema  # noqa: E402

__all__ += ["DecryptCells", "EncryptCells", "ReadEncryptedParquet", "WriteEncryptedParquet",
            "cells_schema"]  # fmt: skip

# Rotation: rewrap data keys to a new master key, or re-encrypt with new data keys.
from kmsbeam.transforms._reencrypt import ReencryptFields, ReencryptRecords  # noqa: E402
from kmsbeam.transforms._rotate import RewrapDataKeys  # noqa: E402

__all__ += ["ReencryptFields", "ReencryptRecords", "RewrapDataKeys"]
