"""The KMS engine's SQLite persistence: one ``keystore.db`` file holding keys, versions, aliases.

The store knows rows, not rules: the engine decides what a state change means. Every access
happens in a transaction (``read()`` or ``write()``, the latter ``BEGIN IMMEDIATE``), so many
threads and many processes (Beam workers) can share one file. SQLite errors are mapped to
kmsbeam errors here and never carry key material.

Caveats: the file holds master key material in the clear, protected only by its mode (0600)
and its directory's (0700). It is meant for development and tests, not production keys.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from kmsbeam.errors import (
    ConfigurationError,
    FormatError,
    KeySourceError,
    KeySourceUnavailableError,
)
from kmsbeam.kms._types import KEY_COLUMNS, KeyMetadata, KeyVersion

__all__ = ["KEYSTORE_FILENAME", "KeyStore", "StoreTransaction"]

KEYSTORE_FILENAME = "keystore.db"
SCHEMA_VERSION = 1
APPLICATION_ID = 0x6B6D7362  # "kmsb": marks the file as a kmsbeam keystore
BUSY_TIMEOUT_MS = 30_000

_SCHEMA = (
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
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

# Connections abandoned in a forked child: closing them there could disturb the parent's
# WAL, so they are kept alive, unused, for the life of the child process.
_ABANDONED: list[sqlite3.Connection] = []


class StoreTransaction:
    """Row access inside one open transaction (obtained from ``KeyStore.read``/``write``)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def get_key(self, key_id: str) -> KeyMetadata | None:
        row = self._conn.execute(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM keys WHERE key_id = ?", (key_id,)
        ).fetchone()
        return None if row is None else KeyMetadata(*row)

    def list_keys(self) -> list[KeyMetadata]:
        rows = self._conn.execute(
            f"SELECT {', '.join(KEY_COLUMNS)} FROM keys ORDER BY creation_date, key_id"
        ).fetchall()
        return [KeyMetadata(*row) for row in rows]

    def insert_key(self, key: KeyMetadata) -> None:
        values = tuple(getattr(key, name) for name in KEY_COLUMNS)
        marks = ", ".join("?" * len(KEY_COLUMNS))
        self._conn.execute(f"INSERT INTO keys ({', '.join(KEY_COLUMNS)}) VALUES ({marks})", values)

    def update_key(self, key_id: str, **values: str) -> None:
        unknown = set(values) - set(KEY_COLUMNS[1:])
        if unknown:
            raise ValueError(f"not a key column: {sorted(unknown)}")
        assignments = ", ".join(f"{name} = ?" for name in values)
        self._conn.execute(
            f"UPDATE keys SET {assignments} WHERE key_id = ?", (*values.values(), key_id)
        )

    def insert_version(self, version: KeyVersion) -> None:
        self._conn.execute(
            "INSERT INTO key_versions (key_version_id, key_id, material, creation_date)"
            " VALUES (?, ?, ?, ?)",
            (version.key_version_id, version.key_id, version.material, version.creation_date),
        )

    def get_version(self, key_version_id: str) -> KeyVersion | None:
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


class KeyStore:
    """A ``keystore.db`` file in ``directory``, shared safely by threads and processes.

    Args:
        directory: the keystore directory (created with mode 0700 if ``create``).
        create: create the directory and an empty keystore if missing. If ``False`` and the
            file does not exist, ``ConfigurationError`` is raised and nothing is created.

    Raises:
        FormatError: the file is not a kmsbeam keystore, or its schema is newer than this
            kmsbeam version understands.
    """

    def __init__(self, directory: str | os.PathLike[str], *, create: bool = True) -> None:
        self._directory = Path(directory).expanduser().absolute()
        self._path = self._directory / KEYSTORE_FILENAME
        self._create = create
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._conn: sqlite3.Connection | None = None
        with self._lock:
            self._connection()  # fail now, not on first use
        _STORES.add(self)

    @property
    def directory(self) -> Path:
        return self._directory

    @property
    def path(self) -> Path:
        return self._path

    def __repr__(self) -> str:
        return f"KeyStore({str(self._directory)!r})"

    @contextmanager
    def read(self) -> Iterator[StoreTransaction]:
        """A read transaction: a consistent snapshot of the keystore."""
        with self._transaction("BEGIN") as tx:
            yield tx

    @contextmanager
    def write(self) -> Iterator[StoreTransaction]:
        """A write transaction (``BEGIN IMMEDIATE``): one writer at a time across processes."""
        with self._transaction("BEGIN IMMEDIATE") as tx:
            yield tx

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def _forget_connection(self) -> None:
        """In a forked child: never use (or close) the parent's connection or lock."""
        self._lock = threading.RLock()
        if self._conn is not None:
            _ABANDONED.append(self._conn)
        self._conn, self._pid = None, os.getpid()

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[StoreTransaction]:
        if self._pid != os.getpid():  # forked outside os.fork (which _after_fork handles)
            self._forget_connection()
        with self._lock:
            conn = self._connection()
            try:
                conn.execute(begin)
            except sqlite3.Error as exc:
                raise self._mapped(exc) from exc
            try:
                yield StoreTransaction(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._mapped(exc) from exc
                raise

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self._conn = self._open()
            except sqlite3.Error as exc:
                raise self._mapped(exc) from exc
        return self._conn

    def _open(self) -> sqlite3.Connection:
        if not self._path.exists():
            if not self._create:
                raise ConfigurationError(f"there is no kmsbeam keystore at {self._path}")
            self._create_file()
        conn = sqlite3.connect(
            self._path.as_uri() + "?mode=rw",
            uri=True,
            timeout=BUSY_TIMEOUT_MS / 1000,
            isolation_level=None,
            check_same_thread=False,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            self._check_header(conn)
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA synchronous = FULL")  # a lost key means lost data
        except BaseException:
            conn.close()
            raise
        return conn

    def _create_file(self) -> None:
        """Build a complete keystore under a temporary name, then link it into place.

        Nobody ever sees a half-initialised file, and of several processes creating it at
        once exactly one wins (``os.link`` fails if the name exists); the rest use its file.
        """
        if not self._directory.is_dir():
            self._directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            os.chmod(self._directory, 0o700)  # mkdir's mode is subject to the umask
        tmp = self._directory / f".{KEYSTORE_FILENAME}.{os.getpid()}.{secrets.token_hex(6)}"
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file
                conn.execute("BEGIN IMMEDIATE")
                for statement in _SCHEMA:
                    conn.execute(statement)
                conn.execute("COMMIT")
            finally:
                conn.close()
            try:
                os.link(tmp, self._path)
            except FileExistsError:
                pass  # another process created it first: use theirs
        finally:
            for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                leftover.unlink(missing_ok=True)

    def _check_header(self, conn: sqlite3.Connection) -> None:
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if app_id != APPLICATION_ID:
            raise FormatError(f"{self._path} is not a kmsbeam keystore")
        if version > SCHEMA_VERSION:
            raise FormatError(
                f"the keystore at {self._path} has schema version {version}, newer than this "
                f"kmsbeam understands ({SCHEMA_VERSION}); upgrade kmsbeam"
            )
        if version != SCHEMA_VERSION:
            raise FormatError(f"the keystore at {self._path} has an unknown schema ({version})")

    def _mapped(self, exc: sqlite3.Error) -> Exception:
        name = getattr(exc, "sqlite_errorname", "")
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")):
            return KeySourceUnavailableError(
                f"the keystore at {self._path} stayed locked by another process for "
                f"{BUSY_TIMEOUT_MS // 1000} s; retry later",
                code="ServiceUnavailableTemporary",
            )
        if name.startswith(("SQLITE_NOTADB", "SQLITE_CORRUPT")):
            return FormatError(f"{self._path} is not a kmsbeam keystore or is damaged")
        return KeySourceError(
            f"the keystore at {self._path} failed ({name or type(exc).__name__})",
            code="InternalFailure",
        )


_STORES: weakref.WeakSet[KeyStore] = weakref.WeakSet()


def _after_fork() -> None:
    for store in list(_STORES):
        store._forget_connection()


os.register_at_fork(after_in_child=_after_fork)
