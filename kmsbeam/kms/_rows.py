"""Row access to the keystore inside one open transaction: rows, not rules.

The engine decides what a state change means; this module only reads and writes rows of
the schema in ``_schema``. Every method runs inside the caller's transaction, so a change
of several rows (deleting a key, rotating it) is atomic.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from kmsbeam.kms._types import KEY_COLUMNS, KeyMetadata, KeyVersion

__all__ = ["StoreTransaction", "TokenRow"]

_KEY_SELECT = f"SELECT {', '.join(KEY_COLUMNS)} FROM keys"
_DUE = (
    "(key_state = 'PendingDeletion' AND delete_date != '' AND delete_date <= :now)"
    " OR (automatic_rotation = 'Enabled' AND next_rotation_date != ''"
    " AND next_rotation_date <= :now)"
    " OR (material_expire_time != '' AND material_expire_time <= :now)"
)

_NEXT_DUE = (  # the dates _DUE compares with :now
    "SELECT MIN(d) FROM (SELECT delete_date AS d FROM keys"
    " WHERE key_state = 'PendingDeletion' AND delete_date != ''"
    " UNION ALL SELECT next_rotation_date FROM keys"
    " WHERE automatic_rotation = 'Enabled' AND next_rotation_date != ''"
    " UNION ALL SELECT material_expire_time FROM keys WHERE material_expire_time != '')"
)


class TokenRow(NamedTuple):
    """One BYOK import token; ``private_key`` (PKCS#8 DER) never shows in a repr."""

    key_id: str
    wrapping_algorithm: str
    wrapping_key_spec: str
    private_key: bytes
    expire_unix: int

    def __repr__(self) -> str:
        return f"TokenRow(key_id={self.key_id!r}, expire_unix={self.expire_unix})"


class StoreTransaction:
    """Row access inside one open transaction (obtained from ``KeyStore.read``/``write``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    # -- keys -----------------------------------------------------------------------------
    def get_key(self, key_id: str) -> KeyMetadata | None:
        row = self._conn.execute(f"{_KEY_SELECT} WHERE key_id = ?", (key_id,)).fetchone()
        return None if row is None else KeyMetadata(*row)

    def list_keys(self) -> list[KeyMetadata]:
        rows = self._conn.execute(f"{_KEY_SELECT} ORDER BY creation_date, key_id").fetchall()
        return [KeyMetadata(*row) for row in rows]

    def insert_key(self, key: KeyMetadata) -> None:
        values = tuple(getattr(key, name) for name in KEY_COLUMNS)
        marks = ", ".join("?" * len(KEY_COLUMNS))
        self._conn.execute(f"INSERT INTO keys ({', '.join(KEY_COLUMNS)}) VALUES ({marks})", values)

    def update_key(self, key_id: str, **values: str) -> None:
        unknown = set(values) - set(KEY_COLUMNS[1:])
        if unknown:
            raise ValueError(f"not a key column: {sorted(unknown)}")
        if not values:
            return
        assignments = ", ".join(f"{name} = ?" for name in values)
        self._conn.execute(
            f"UPDATE keys SET {assignments} WHERE key_id = ?", (*values.values(), key_id)
        )

    def has_due(self, now: str) -> bool:
        """Whether any key has a deletion, rotation or material expiry at or before ``now``."""
        row = self._conn.execute(f"SELECT EXISTS (SELECT 1 FROM keys WHERE {_DUE})", {"now": now})
        return bool(row.fetchone()[0])

    def next_due(self) -> str:
        """The earliest date any deletion, rotation or material expiry falls due, ``""`` if
        none is scheduled: nothing is due while ``now`` (ISO 8601 UTC) is before it."""
        row = self._conn.execute(_NEXT_DUE).fetchone()
        return row[0] or ""

    def due_keys(self, now: str) -> list[KeyMetadata]:
        """The keys ``has_due`` is about (``now`` is ISO 8601 UTC, as the dates are)."""
        rows = self._conn.execute(f"{_KEY_SELECT} WHERE {_DUE} ORDER BY key_id", {"now": now})
        return [KeyMetadata(*row) for row in rows.fetchall()]

    def delete_key(self, key_id: str) -> None:
        """Delete a key and everything that names it; its version ids become tombstones."""
        self._conn.execute(
            "INSERT OR IGNORE INTO deleted_versions (key_version_id, key_id)"
            " SELECT key_version_id, key_id FROM key_versions WHERE key_id = ?",
            (key_id,),
        )
        for table in ("tags", "aliases", "import_tokens", "imported_material", "key_versions"):
            self._conn.execute(f"DELETE FROM {table} WHERE key_id = ?", (key_id,))
        self._conn.execute("DELETE FROM keys WHERE key_id = ?", (key_id,))

    def deleted_version_key(self, key_version_id: str) -> str | None:
        """The key id of a version whose key was deleted, or ``None``."""
        row = self._conn.execute(
            "SELECT key_id FROM deleted_versions WHERE key_version_id = ?", (key_version_id,)
        ).fetchone()
        return None if row is None else str(row[0])

    # -- versions -------------------------------------------------------------------------
    def insert_version(self, version: KeyVersion) -> None:
        self._conn.execute(
            "INSERT INTO key_versions (key_version_id, key_id, material, creation_date)"
            " VALUES (?, ?, ?, ?)",
            (version.key_version_id, version.key_id, version.material, version.creation_date),
        )

    def get_version(self, key_version_id: str) -> KeyVersion | None:
        """A version with its material (``b""`` while imported material is absent)."""
        row = self._conn.execute(
            "SELECT key_version_id, key_id, creation_date, material FROM key_versions"
            " WHERE key_version_id = ?",
            (key_version_id,),
        ).fetchone()
        return None if row is None else KeyVersion(row[0], row[1], row[2], bytes(row[3]))

    def list_versions(self, key_id: str) -> list[KeyVersion]:
        """The versions of a key, oldest first, without their material."""
        rows = self._conn.execute(
            "SELECT key_version_id, key_id, creation_date FROM key_versions WHERE key_id = ?"
            " ORDER BY creation_date, rowid",
            (key_id,),
        ).fetchall()
        return [KeyVersion(*row) for row in rows]

    def set_material(self, key_id: str, material: bytes) -> None:
        """Replace the material of every version of a key (``b""`` removes it)."""
        self._conn.execute(
            "UPDATE key_versions SET material = ? WHERE key_id = ?", (material, key_id)
        )

    # -- aliases --------------------------------------------------------------------------
    def get_alias(self, alias_name: str) -> str | None:
        """The key id an alias points to, or ``None``."""
        row = self._conn.execute(
            "SELECT key_id FROM aliases WHERE alias_name = ?", (alias_name,)
        ).fetchone()
        return None if row is None else str(row[0])

    def list_aliases(self, key_id: str | None = None) -> list[tuple[str, str]]:
        """``(alias_name, key_id)`` pairs sorted by alias name, optionally for one key."""
        if key_id is None:
            cur = self._conn.execute("SELECT alias_name, key_id FROM aliases ORDER BY alias_name")
        else:
            cur = self._conn.execute(
                "SELECT alias_name, key_id FROM aliases WHERE key_id = ? ORDER BY alias_name",
                (key_id,),
            )
        return [(str(a), str(k)) for a, k in cur.fetchall()]

    def put_alias(self, alias_name: str, key_id: str) -> None:
        """Create the alias or point it at another key."""
        self._conn.execute(
            "INSERT INTO aliases (alias_name, key_id) VALUES (?, ?)"
            " ON CONFLICT(alias_name) DO UPDATE SET key_id = excluded.key_id",
            (alias_name, key_id),
        )

    def delete_alias(self, alias_name: str) -> None:
        self._conn.execute("DELETE FROM aliases WHERE alias_name = ?", (alias_name,))

    # -- tags -----------------------------------------------------------------------------
    def get_tags(self, key_id: str) -> dict[str, str]:
        rows = self._conn.execute(
            "SELECT tag_key, tag_value FROM tags WHERE key_id = ? ORDER BY tag_key", (key_id,)
        ).fetchall()
        return {str(k): str(v) for k, v in rows}

    def put_tags(self, key_id: str, tags: Mapping[str, str]) -> None:
        self._conn.executemany(
            "INSERT INTO tags (key_id, tag_key, tag_value) VALUES (?, ?, ?)"
            " ON CONFLICT(key_id, tag_key) DO UPDATE SET tag_value = excluded.tag_value",
            [(key_id, k, v) for k, v in tags.items()],
        )

    def delete_tags(self, key_id: str, tag_keys: Iterable[str]) -> None:
        self._conn.executemany(
            "DELETE FROM tags WHERE key_id = ? AND tag_key = ?", [(key_id, k) for k in tag_keys]
        )

    # -- imported key material ------------------------------------------------------------
    def insert_token(self, token_hash: bytes, row: TokenRow) -> None:
        self._conn.execute(
            "INSERT INTO import_tokens (token_hash, key_id, wrapping_algorithm,"
            " wrapping_key_spec, private_key, expire_unix) VALUES (?, ?, ?, ?, ?, ?)",
            (token_hash, *row),
        )

    def get_token(self, token_hash: bytes) -> TokenRow | None:
        row = self._conn.execute(
            "SELECT key_id, wrapping_algorithm, wrapping_key_spec, private_key, expire_unix"
            " FROM import_tokens WHERE token_hash = ?",
            (token_hash,),
        ).fetchone()
        return None if row is None else TokenRow(row[0], row[1], row[2], bytes(row[3]), row[4])

    def purge_tokens(self, now_unix: int) -> None:
        """Forget the wrapping key pairs of every expired token."""
        self._conn.execute("DELETE FROM import_tokens WHERE expire_unix <= ?", (now_unix,))

    def get_check_value(self, key_id: str) -> bytes | None:
        row = self._conn.execute(
            "SELECT check_value FROM imported_material WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else bytes(row[0])

    def set_check_value(self, key_id: str, check_value: bytes) -> None:
        self._conn.execute(
            "INSERT INTO imported_material (key_id, check_value) VALUES (?, ?)"
            " ON CONFLICT(key_id) DO UPDATE SET check_value = excluded.check_value",
            (key_id, check_value),
        )
