"""The keystore's SQL schema, by version, and the in-place migrations between versions.

A new file is built as version 1 followed by every migration, so a fresh keystore and a
migrated one have exactly the same tables. ``PRAGMA user_version`` records the version;
``KeyStore`` migrates an older file the first time it opens it, in one write transaction.

History:
    1. keys, key_versions, aliases, tags.
    2. keys.material_expire_time (imported key material that expires); import_tokens
       (BYOK wrapping key pairs, 24 h); imported_material (a check value that proves a
       re-import brings the same material); deleted_versions (versions of keys deleted
       after their pending window, so their blobs report ``Forbidden.KeyNotFound``).
       Keys whose rotation was on while they were not Enabled become ``Suspended``, and
       keys never rotated get ``last_rotation_date`` = their creation date (Alibaba's rule).
"""

from __future__ import annotations

__all__ = ["APPLICATION_ID", "MIGRATIONS", "SCHEMA_V1", "SCHEMA_VERSION", "create_statements"]

APPLICATION_ID = 0x6B6D7362  # "kmsb": marks the file as a kmsbeam keystore
SCHEMA_VERSION = 2

SCHEMA_V1 = (
    """CREATE TABLE keys (
        key_id TEXT PRIMARY KEY, description TEXT NOT NULL, key_state TEXT NOT NULL,
        key_spec TEXT NOT NULL, key_usage TEXT NOT NULL, protection_level TEXT NOT NULL,
        origin TEXT NOT NULL, creation_date TEXT NOT NULL, primary_key_version TEXT NOT NULL,
        delete_date TEXT NOT NULL, automatic_rotation TEXT NOT NULL,
        rotation_interval TEXT NOT NULL, next_rotation_date TEXT NOT NULL,
        last_rotation_date TEXT NOT NULL) STRICT""",
    """CREATE TABLE key_versions (
        key_version_id TEXT PRIMARY KEY, key_id TEXT NOT NULL REFERENCES keys(key_id),
        material BLOB NOT NULL, creation_date TEXT NOT NULL) STRICT""",
    "CREATE INDEX key_versions_by_key ON key_versions(key_id)",
    """CREATE TABLE aliases (
        alias_name TEXT PRIMARY KEY, key_id TEXT NOT NULL REFERENCES keys(key_id)) STRICT""",
    "CREATE INDEX aliases_by_key ON aliases(key_id)",
    """CREATE TABLE tags (
        key_id TEXT NOT NULL REFERENCES keys(key_id), tag_key TEXT NOT NULL,
        tag_value TEXT NOT NULL, PRIMARY KEY (key_id, tag_key)) STRICT""",
    f"PRAGMA application_id = {APPLICATION_ID}",
)

#: statements that take a file from version N to N + 1 (``user_version`` is set separately)
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "ALTER TABLE keys ADD COLUMN material_expire_time TEXT NOT NULL DEFAULT ''",
        """CREATE TABLE import_tokens (
            token_hash BLOB PRIMARY KEY, key_id TEXT NOT NULL REFERENCES keys(key_id),
            wrapping_algorithm TEXT NOT NULL, wrapping_key_spec TEXT NOT NULL,
            private_key BLOB NOT NULL, expire_unix INTEGER NOT NULL) STRICT""",
        "CREATE INDEX import_tokens_by_key ON import_tokens(key_id)",
        """CREATE TABLE imported_material (
            key_id TEXT PRIMARY KEY REFERENCES keys(key_id), check_value BLOB NOT NULL) STRICT""",
        """CREATE TABLE deleted_versions (
            key_version_id TEXT PRIMARY KEY, key_id TEXT NOT NULL) STRICT""",
        "UPDATE keys SET automatic_rotation = 'Suspended'"
        " WHERE automatic_rotation = 'Enabled' AND key_state != 'Enabled'",
        "UPDATE keys SET last_rotation_date = creation_date"
        " WHERE last_rotation_date = '' AND primary_key_version != ''",
    ),
}


def create_statements() -> list[str]:
    """Everything that builds a new, current keystore (run in one transaction)."""
    statements = list(SCHEMA_V1)
    for version in range(1, SCHEMA_VERSION):
        statements += MIGRATIONS[version]
    statements.append(f"PRAGMA user_version = {SCHEMA_VERSION}")
    return statements
