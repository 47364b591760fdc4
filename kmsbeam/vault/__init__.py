"""Key vaults: wrapped data keys kept apart from the data (field value v2, record v2).

``KeyVault`` (``kmsbeam.vault.vault``) over a ``VaultStore`` (``kmsbeam.vault.store``) of
``VaultEntry`` files (``kmsbeam.vault.entry``, "Key-vault entry v1" in ``docs/FORMAT.md``).
"""

from kmsbeam.vault.entry import ENTRY_FORMAT, VaultEntry, entry_name, parse_entry_name
from kmsbeam.vault.store import LocalStore, VaultStore, open_store, register_store_opener
from kmsbeam.vault.vault import (
    MARKER, KeyVault, VaultEntryError, VaultEntryMissingError, check_vault_uri, key_id_of,
)  # fmt: skip

__all__ = [
    "ENTRY_FORMAT",
    "KeyVault",
    "LocalStore",
    "MARKER",
    "VaultEntry",
    "VaultEntryError",
    "VaultEntryMissingError",
    "VaultStore",
    "check_vault_uri",
    "entry_name",
    "key_id_of",
    "open_store",
    "parse_entry_name",
    "register_store_opener",
]
