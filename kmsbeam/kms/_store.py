"""The KMS engine's SQLite persistence: one ``keystore.db`` file holding keys, versions, aliases.

The store knows rows (``_rows``), not rules: the engine decides what a state change means.
The schema is versioned (``_schema``); an older file is migrated in place when it is opened.
Every access happens in a transaction (``read()`` or ``write()``, the latter ``BEGIN
IMMEDIATE``), so many threads and many processes (Beam workers) can share one file. SQLite
errors are mapped to kmsbeam errors here and never carry key material. ``memo()`` lets the
engine keep what it read while the file is unchanged (one ``PRAGMA data_version`` a call).

Caveats: the file holds master key material (and the RSA private keys of unexpired BYOK
import tokens) in the clear, protected only by its mode (0600) and its directory's (0700).
It is meant for development and tests, not production keys. Opening refuses what ssh would
(symlinks, foreign owners, group/world-writable files and directories: ``_private_files``).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import threading
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from kmsbeam._private_files import check_private_dir, check_private_file, make_private_dir
from kmsbeam.errors import (
    ConfigurationError,
    FormatError,
    KeySourceError,
    KeySourceUnavailableError,
)
from kmsbeam.kms._rows import StoreTransaction
from kmsbeam.kms._schema import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, create_statements
from kmsbeam.process import Slot

__all__ = ["KEYSTORE_FILENAME", "KeyStore", "StoreTransaction"]

KEYSTORE_FILENAME = "keystore.db"
BUSY_TIMEOUT_MS = 30_000


class _Connection:
    """A keystore's connection in one process, the lock every transaction holds, and the
    memo of the file's contents as of ``data_version`` (see ``KeyStore.memo``)."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.conn: sqlite3.Connection | None = None
        self.memo: dict[Hashable, Any] = {}
        self.data_version = -1


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
        # kmsbeam.process: a forked child opens its own and never uses or closes the parent's
        self._here: Slot[_Connection] = Slot(_Connection)
        here = self._here.get()
        with here.lock:
            self._connection(here)  # fail now, not on first use

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

    def memo(self) -> dict[Hashable, Any]:
        """This process's memo of the file as it is now: what the caller stores there stays
        while the file is unchanged, and is gone from the next ``memo()`` once anything
        changed it (a commit by another connection or process, or any write of this one).

        One ``PRAGMA data_version`` tells: SQLite changes it when another connection has
        committed, and every ``write()`` here starts a new memo. Store only what was read
        after the call that returned this dict, so nothing older than the file is kept.
        """
        here = self._here.get()
        with here.lock:
            conn = self._connection(here)
            try:
                version = conn.execute("PRAGMA data_version").fetchall()[0][0]
            except sqlite3.Error as exc:
                raise self._mapped(exc) from exc
            if version != here.data_version:
                here.memo, here.data_version = {}, version
            return here.memo

    def close(self) -> None:
        """Close this process's connection (the next transaction opens another)."""
        here = self._here.reset()
        if here is not None:
            with here.lock:
                if here.conn is not None:
                    here.conn.close()
                here.conn = None

    @contextmanager
    def _transaction(self, begin: str) -> Iterator[StoreTransaction]:
        here = self._here.get()
        with here.lock:
            conn = self._connection(here)
            try:
                conn.execute(begin)
            except sqlite3.Error as exc:
                raise self._mapped(exc) from exc
            changes = conn.total_changes
            try:
                yield StoreTransaction(conn)
                conn.execute("COMMIT")
            except BaseException as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                if isinstance(exc, sqlite3.Error):
                    raise self._mapped(exc) from exc
                raise
            finally:
                # this connection's own writes leave data_version as it was
                if begin != "BEGIN" or conn.total_changes != changes:
                    here.memo = {}

    def _connection(self, here: _Connection) -> sqlite3.Connection:
        if here.conn is None:
            try:
                here.conn = self._open()
            except sqlite3.Error as exc:
                raise self._mapped(exc) from exc
        return here.conn

    def _open(self) -> sqlite3.Connection:
        self._check_permissions()
        if not os.path.lexists(self._path):
            if not self._create:
                raise ConfigurationError(f"there is no kmsbeam keystore at {self._path}")
            self._create_file()
            self._check_permissions()  # another process may have linked its file first
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
        tmp = self._directory / f".{KEYSTORE_FILENAME}.{os.getpid()}.{secrets.token_hex(6)}"
        os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                conn.execute("PRAGMA journal_mode = WAL")  # persistent: stored in the file
                conn.execute("BEGIN IMMEDIATE")
                for statement in create_statements():
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

    def _check_permissions(self) -> None:
        """What ssh would refuse (``kmsbeam._private_files``): a symlinked, foreign, or
        group/world-writable directory or file; a readable file of ours is narrowed to 0600.
        A missing directory is created 0700 (each level) when ``create`` is set."""
        if self._create and not os.path.lexists(self._directory):
            make_private_dir(self._directory, "the keystore directory")
        if os.path.lexists(self._directory) or self._create:
            check_private_dir(self._directory, "the keystore directory")
        for name in (self._path, Path(f"{self._path}-wal"), Path(f"{self._path}-shm")):
            check_private_file(name, "the keystore")

    def _check_header(self, conn: sqlite3.Connection) -> None:
        """Refuse foreign or newer files; migrate an older kmsbeam keystore in place."""
        app_id = int(conn.execute("PRAGMA application_id").fetchone()[0])
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if app_id != APPLICATION_ID:
            raise FormatError(f"{self._path} is not a kmsbeam keystore")
        if version > SCHEMA_VERSION:
            raise FormatError(
                f"the keystore at {self._path} has schema version {version}, newer than this "
                f"kmsbeam understands ({SCHEMA_VERSION}); upgrade kmsbeam"
            )
        if version < 1:
            raise FormatError(f"the keystore at {self._path} has an unknown schema ({version})")
        if version < SCHEMA_VERSION:
            self._migrate(conn)

    def _migrate(self, conn: sqlite3.Connection) -> None:
        """Bring the file to ``SCHEMA_VERSION`` in one write transaction.

        Processes opening the same old file at once serialise on ``BEGIN IMMEDIATE``; the
        version is read again inside the transaction, so only the first one migrates.
        """
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = int(conn.execute("PRAGMA user_version").fetchone()[0])
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {step + 1}")
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise

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

