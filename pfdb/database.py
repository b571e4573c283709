"""The one ``DatabaseProxy``, the databases it is bound to, session scopes and the health check.

``bind_database()`` is the only place a connection target is chosen: SQLite (WAL, foreign
keys, busy timeout) or pooled PostgreSQL. Models bind to the proxy at import, so one
process can be re-pointed (tests, a switch of URL) without re-importing anything.
"""

from __future__ import annotations

import contextvars
import errno
import functools
import logging
import math
import os
import sqlite3
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _writes
from ._peewee import enable_psycopg2
from ._peewee import peewee as pw
from .config import DatabaseURL, Settings, load_settings, mask_secrets
from .errors import (
    ConfigError,
    DatabaseBusyError,
    DatabaseNotFoundError,
    DatabaseNotInitialisedError,
    DatabaseUnavailableError,
    DiskFullError,
    PfdbError,
    ReadOnlyDatabaseError,
    SchemaMissingError,
    ServerInRecoveryError,
    UsageError,
)
from .replicas import ReplicaSet, primary
from .text import first_line

log = logging.getLogger("pfdb")


# -- the tenant-binding hook -----------------------------------------------------------------
@dataclass(frozen=True)
class TenantBinding:
    """Where one tenant's data lives, for the scope that works on it (``pfdb.tenant(name)``).

    ``database`` is the database object its statements go to (the main pool, another
    server's pool, or its own SQLite file); ``schema`` (PostgreSQL) is set as the only
    entry of ``search_path`` on every connection of that database this scope uses, and
    ``role`` (optional) is taken with ``SET ROLE``; both are reset when the connection
    goes back to the pool.
    """

    name: str
    database: Any
    settings: Settings
    schema: str | None = None
    role: str | None = None


# A context variable, not a global: each thread (and each asyncio task) has its own tenant.
_binding: contextvars.ContextVar[TenantBinding | None] = contextvars.ContextVar("pfdb_tenant", default=None)


class _RoutingProxy(pw.DatabaseProxy):
    """The ``DatabaseProxy`` models bind to: the bound database, or the current tenant's.

    ``obj`` is looked up on every use, so one set of models serves every tenant: inside
    ``bound_tenant(binding)`` it is ``binding.database``, elsewhere the database that
    ``bind_database`` bound.
    """

    __slots__ = ("_main",)

    def __setattr__(self, attr: str, value: Any) -> None:
        object.__setattr__(self, "_main" if attr == "obj" else attr, value)

    @property
    def obj(self) -> Any:
        binding = _binding.get()
        return binding.database if binding is not None else self._main


db = _RoutingProxy()

_lock = threading.RLock()
_settings: Settings | None = None


def current_tenant() -> TenantBinding | None:
    """The tenant this thread (or task) works on, or None for the main database."""
    return _binding.get()


def main_database() -> pw.Database | None:
    """The database ``bind_database`` bound, whatever tenant scope is active."""
    return db._main


@contextmanager
def bound_tenant(binding: TenantBinding | None) -> Iterator[TenantBinding | None]:
    """Route ``pfdb.db``, ``get_database()`` and ``get_settings()`` to ``binding`` for the block.

    ``None`` routes to the main database (the tenant registry is read that way). A connection
    the thread already holds gets the tenant's ``search_path`` now and the outer scope's back
    at the end; one checked out inside the block gets it at check-out (``apply_tenant``).
    """
    outer = _binding.get()
    if outer is not None and binding is not None and outer.name == binding.name:
        yield binding  # the same tenant again: nothing to switch
        return
    target = binding.database if binding is not None else db._main
    if target is not None and not target.is_closed() and target.in_transaction():
        raise UsageError(
            "cannot switch tenants inside a transaction",
            hint="enter pfdb.tenant(...) outside db_session_scope() and atomic()",
        )
    token = _binding.set(binding)
    try:
        _reapply(target)
        yield binding
    finally:
        _binding.reset(token)
        _reapply(target)
        if outer is not None and outer.database is not target:
            _reapply(outer.database)


def _reapply(database: Any) -> None:
    if database is not None and hasattr(database, "apply_tenant") and not database.is_closed():
        database.apply_tenant(database._state.conn)


# Connect errors that waiting does not cure, and what to do instead. The server words them
# (SQLSTATE is not available before a session exists); English messages are matched.
_PERMANENT = (
    ("password authentication failed", "check the password in DATABASE_URL"),
    ("no password supplied", "put the password in DATABASE_URL"),
    ('role "', "check the user name in DATABASE_URL, or create that role on the server"),
    ('database "', "create it with pfdb init, or correct the name in DATABASE_URL"),
    ("no pg_hba.conf entry", "the server refuses this user or host: see its pg_hba.conf"),
)


def _unavailable(url: DatabaseURL, exc: BaseException) -> DatabaseUnavailableError:
    """The one connect error: masked, one line, and ``retryable`` False when waiting cannot help."""
    reason = mask_secrets(first_line(exc), url)
    hint = "check DATABASE_URL and that the database server is running"
    retryable = True
    if url.backend == "sqlite":  # no server to blame: the file or its folder is the problem
        hint = "check DATABASE_URL and that the file and its folder exist and may be read (and written, to write)"
    else:
        for needle, fix in _PERMANENT:
            if needle in reason and (not needle.endswith('"') or "does not exist" in reason):
                hint, retryable = fix, False
                break
    error = DatabaseUnavailableError(f"cannot connect to {url.masked}: {reason}", hint=hint)
    error.retryable = retryable
    return error


# -- SQLite files: created owner-only, never invented, opened read-only when asked -------------
FILE_MODE = 0o600  # the database holds password hashes: owner only, like backups (SQLite
# gives the -wal and -shm files the mode of the database file)


def _sqlite_file(url: DatabaseURL) -> Path:
    path = Path(url.path).expanduser()
    if path.is_dir():  # sqlite3 would fail with 'unable to open database file'
        raise ConfigError(
            f"DATABASE_URL names a folder, not a database file: {path}",
            hint=f"name the file, e.g. sqlite:///{path / 'pfdb.db'}",
        )
    return path


def require_sqlite_file(url: DatabaseURL) -> Path:
    """The SQLite file of ``url``, or ``DatabaseNotFoundError`` saying to run ``pfdb init``."""
    path = _sqlite_file(url)
    if not path.exists():
        raise DatabaseNotFoundError(
            f"there is no SQLite database at {path}",
            hint="create it with pfdb init (or correct DATABASE_URL / --database-url)",
        )
    return path


@contextmanager
def translated_errors() -> Iterator[None]:
    """Raise ``DiskFullError``/``ReadOnlyDatabaseError``/``SchemaMissingError`` for a driver's error.

    For code that writes through the driver's own cursor (the feed importer's bulk upsert),
    which peewee's ``execute_sql`` never sees.
    """
    try:
        yield
    except PfdbError:
        raise
    except Exception as exc:
        settings = _settings
        translated = (
            _sqlite_error(settings.database_url, exc) or _schema_missing(settings.database_url, exc)
            if settings is not None
            else None
        )
        if translated is None:
            raise
        raise translated from exc


_READS_WORK = "read commands (status, info, export, backup) and init_database(url, read_only=True) work as they are"


def _check_writable(path: Path) -> None:
    """A write command on a file or folder it may only read: say which, before SQLite fails midway."""
    folder = path.resolve().parent
    if not os.access(path, os.W_OK):
        raise ReadOnlyDatabaseError(
            f"the SQLite database {path} is read-only (its permissions or a read-only disk)",
            hint=f"this command writes: run it where the file is writable; {_READS_WORK}",
        )
    companions_exist = all(Path(f"{path}{s}").exists() for s in ("-wal", "-shm"))
    if not os.access(folder, os.W_OK) and not companions_exist:
        raise ReadOnlyDatabaseError(
            f"the folder {folder} of the SQLite database is read-only; "
            f"SQLite must create {path.name}-wal and {path.name}-shm beside it to write",
            hint=f"this command writes: make the folder writable; {_READS_WORK}",
        )


def create_sqlite_file(path: Path) -> bool:
    """Create an empty database file with mode 0600 (an empty file is a valid empty database).

    SQLite would create it 0644 under the usual umask; creating it here first makes the
    file, and the -wal and -shm files SQLite copies its mode to, owner-only.
    Returns False when the file already existed.
    """
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
    except FileExistsError:
        return False
    return True


_NO_SHM = ("SQLITE_CANTOPEN", "SQLITE_READONLY_DIRECTORY", "SQLITE_READONLY_CANTINIT")


def open_sqlite(
    path: str | os.PathLike, *, read_only: bool, timeout: float, create: bool = False, **params: Any
) -> sqlite3.Connection:
    """Open a SQLite file with the sqlite3 defaults peewee uses (autocommit, ``timeout``).

    Read-only opens use SQLite's ``mode=ro`` when the file or its folder cannot be written.
    A WAL database opened that way needs its -shm file, which SQLite cannot create on a
    read-only folder: if no -wal file is there (every commit is in the main file, as after
    a clean close) the file is opened ``immutable=1``, which reads it without any lock or
    -shm; with a -wal left over (a crash, or a writer elsewhere) that would ignore
    committed data, so that case is an error saying what to do.
    Otherwise (writable) a read-only open is a normal one: the caller sets ``query_only``.
    """
    path = Path(path)
    uri = path.resolve().as_uri()
    if not read_only:
        return sqlite3.connect(
            f"{uri}?mode={'rwc' if create else 'rw'}", uri=True, timeout=timeout, isolation_level=None, **params
        )
    writable = os.access(path, os.W_OK) and os.access(path.resolve().parent, os.W_OK)
    if writable:
        return sqlite3.connect(f"{uri}?mode=rw", uri=True, timeout=timeout, isolation_level=None, **params)
    try:
        conn = sqlite3.connect(f"{uri}?mode=ro", uri=True, timeout=timeout, isolation_level=None, **params)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # opening is lazy: read now
        return conn
    except sqlite3.OperationalError as exc:
        # A read-only disk says CANTOPEN; a folder this user may not write, READONLY_DIRECTORY.
        if getattr(exc, "sqlite_errorname", "") not in _NO_SHM and "unable to open" not in str(exc):
            raise
        wal = Path(f"{path}-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise ReadOnlyDatabaseError(
                f"cannot read {path}: its {wal.name} holds commits not yet in the main file, and SQLite "
                f"cannot create {path.name}-shm in the read-only folder to read them",
                hint="open it once where it is writable (any pfdb write, e.g. pfdb optimize) to fold the WAL in",
            ) from exc
    return sqlite3.connect(f"{uri}?mode=ro&immutable=1", uri=True, timeout=timeout, isolation_level=None, **params)


def _sqlite_error(url: DatabaseURL, exc: BaseException) -> PfdbError | None:
    """A pfdb error for driver failures a person can act on: a full disk, a read-only file."""
    text = str(exc)
    if url.backend == "postgresql":
        if "No space left on device" in text or "could not extend file" in text:  # SQLSTATE 53100
            return DiskFullError(
                f"the disk of the PostgreSQL server of {url.masked} is full "
                f"({first_line(text)}); the transaction in progress was rolled back",
                hint="free disk space on the server, then run it again",
            )
        return None
    where = "memory" if url.is_memory else str(Path(url.path).expanduser())
    if "database or disk is full" in text:
        return DiskFullError(
            f"the disk holding {where} is full (SQLite: database or disk is full); "
            f"the transaction in progress was rolled back",
            hint="free disk space, then run it again",
        )
    if "readonly database" in text:
        return ReadOnlyDatabaseError(
            f"cannot write to {where}: the file or its folder is read-only ({text})",
            hint="run write commands where the database is writable",
        )
    return None


_UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE for a relation that does not exist


def _schema_missing(url: DatabaseURL, exc: BaseException) -> SchemaMissingError | None:
    """``SchemaMissingError`` for a query on a table that is not there, else None.

    SQLite words it 'no such table: x'; PostgreSQL gives SQLSTATE 42P01. Most often the
    database was never initialised (an empty file, a new PostgreSQL database).
    """
    original = getattr(exc, "orig", exc)  # peewee keeps the driver's exception there
    code = getattr(original, "pgcode", None)
    text = str(exc).strip()
    if code != _UNDEFINED_TABLE and not text.startswith("no such table"):
        return None
    reason = first_line(exc)
    return SchemaMissingError(
        f"the database {url.masked} has no pfdb schema ({reason})",
        hint="run pfdb init (pfdb.migrations.init() from Python); "
        "on a database that already holds data, run pfdb migrate",
    )


_SQLITE_BUSY = 5  # primary result code; extended codes (BUSY_SNAPSHOT, …) keep it in the low byte


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY, raw from sqlite3 or wrapped by peewee (whose first argument is the original)."""
    for candidate in (exc, *exc.args[:1]):
        code = getattr(candidate, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF == _SQLITE_BUSY
    return "database is locked" in str(exc)


class _TracksWrites:
    """Tells ``_writes`` what each statement may change and when it is committed or rolled back.

    The one place pfdb sees every write it makes through peewee (queries, ``save()``, raw
    ``execute_sql``): the Redis cache forgets a table after the commit that changed it. A
    statement outside any transaction is committed when it returns. A commit that raises
    may still have reached the server, so it counts as committed (one needless invalidation
    at worst). Costs one attribute read per statement when no cache is configured.
    """

    def execute_sql(self, sql, params=None):
        if not _writes.enabled:
            return super().execute_sql(sql, params)
        _writes.mark_sql(sql)
        try:
            return super().execute_sql(sql, params)
        finally:
            # The driver's own state too: a transaction begun by a bare BEGIN is one peewee
            # does not count, and its writes are not committed yet.
            if not self.in_transaction() and not self._driver_in_transaction():
                _writes.committed()

    def _driver_in_transaction(self) -> bool:
        conn = self._state.conn
        if conn is None:
            return False
        status = getattr(conn, "in_transaction", None)  # sqlite3
        if status is not None:
            return bool(status)
        try:  # psycopg2: a local libpq call, no round trip; 0 is idle, 4 a broken connection
            return conn.get_transaction_status() in (1, 2, 3)
        except Exception:
            return False

    def commit(self):
        try:
            return super().commit()
        finally:
            _writes.committed()

    def rollback(self):
        try:
            return super().rollback()
        finally:
            _writes.rolled_back()


class SqliteDatabase(_TracksWrites, pw.SqliteDatabase):
    """SQLite that says which file it could not open instead of 'unable to open database file',
    and turns a busy timeout that ran out into ``DatabaseBusyError`` (Python API and CLI alike)."""

    # "rwc": create the file (0600) when missing; "rw": it must exist; "ro": read only.
    pfdb_mode = "rwc"

    def __init__(self, url: DatabaseURL, settings: Settings, **kwargs: Any):
        self.pfdb_url = url
        self.pfdb_settings = settings
        super().__init__(url.path, **kwargs)

    def _connect(self):
        start = time.monotonic()
        if self.pfdb_url.is_memory:
            try:
                return super()._connect()
            except Exception as exc:
                raise _unavailable(self.pfdb_url, exc) from exc
        mode = self.pfdb_mode
        if mode == "rwc":
            path = _sqlite_file(self.pfdb_url)
            try:
                create_sqlite_file(path)
            except OSError as exc:  # a read-only disk or folder, a missing folder
                error = (
                    ReadOnlyDatabaseError
                    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
                    else DatabaseUnavailableError
                )
                raise error(
                    f"cannot create the SQLite database {path}: {exc.strerror}",
                    hint="point DATABASE_URL at a writable folder",
                ) from exc
        else:
            path = require_sqlite_file(self.pfdb_url)
        if mode != "ro":
            _check_writable(path)
        try:
            conn = open_sqlite(
                path, read_only=mode == "ro", timeout=self._timeout, create=mode == "rwc", **self.connect_params
            )
        except PfdbError:
            raise
        except Exception as exc:  # sqlite3.OperationalError: unable to open database file
            if _is_busy(exc):  # a connection pragma met another process's lock
                raise self._busy(time.monotonic() - start, "opening the database") from exc
            raise _unavailable(self.pfdb_url, exc) from exc
        try:
            self._add_conn_hooks(conn)
        except Exception as exc:
            conn.close()
            if _is_busy(exc):  # a connection pragma (journal_mode) met another process's lock
                raise self._busy(time.monotonic() - start, "opening the database") from exc
            raise (_sqlite_error(self.pfdb_url, exc) or _unavailable(self.pfdb_url, exc)) from exc
        return conn

    def _set_pragmas(self, conn):
        pragmas = self._pragmas
        if self.pfdb_mode == "ro":  # a reader changes no journal mode and refuses every write
            pragmas = [(k, v) for k, v in pragmas if k != "journal_mode"] + [("query_only", 1)]
        cursor = conn.cursor()
        for pragma, value in pragmas:
            cursor.execute(f"PRAGMA {pragma} = {value};")
        cursor.close()

    def rollback(self):
        # After SQLITE_FULL or an I/O error SQLite may have rolled the transaction back
        # itself; a second ROLLBACK would fail with 'cannot rollback - no transaction is
        # active' and hide the error that matters.
        if not self.is_closed() and not self._sqlite_in_transaction():
            return None
        return super().rollback()

    def _sqlite_in_transaction(self) -> bool:
        conn = self._state.conn
        return conn is None or conn.in_transaction

    # Every statement that can meet another connection's lock passes one of these three; each
    # also turns a full disk or a read-only file into the pfdb error that says so.
    def execute_sql(self, sql, params=None):
        if sql.startswith("ROLLBACK TO SAVEPOINT") and not self._sqlite_in_transaction():
            return None  # SQLite already rolled the whole transaction back (see rollback)
        start = time.monotonic()
        try:
            return super().execute_sql(sql, params)
        except pw.OperationalError as exc:
            translated = self._translate(exc, start)
            if translated is None:
                raise
            raise translated from exc

    def begin(self, lock_type=None):
        start = time.monotonic()
        try:
            return super().begin(lock_type)
        except pw.OperationalError as exc:
            translated = self._translate(exc, start)
            if translated is None:
                raise
            raise translated from exc

    def commit(self):
        start = time.monotonic()
        try:
            return super().commit()
        except pw.OperationalError as exc:
            translated = self._translate(exc, start)
            if translated is None:
                raise
            raise translated from exc

    def _translate(self, exc: pw.OperationalError, start: float) -> PfdbError | None:
        if _is_busy(exc):
            return self._busy(time.monotonic() - start)
        if "readonly database" in str(exc) and self.pfdb_mode != "ro" and self._query_only():
            return ReadOnlyDatabaseError(
                "a write inside db_read_scope(), whose transaction is read-only; nothing was written",
                hint="write inside db_session_scope()",
            )
        return _sqlite_error(self.pfdb_url, exc) or _schema_missing(self.pfdb_url, exc)

    def _query_only(self) -> bool:
        conn = self._state.conn
        try:
            return conn is not None and bool(conn.execute("PRAGMA query_only").fetchone()[0])
        except Exception:  # the connection is gone: then it was no read scope's refusal
            return False

    def _busy(self, waited: float, during: str = "") -> DatabaseBusyError:
        timeout = self.pfdb_settings.pool_timeout
        held = f"{waited:.1f}" if waited >= 0.1 else f"{waited:.3f}"
        if during:
            return DatabaseBusyError(
                f"another process held a lock on {self.pfdb_url.masked} for {held} s while {during} "
                f"(busy timeout {timeout:g} s)",
                hint="retry when the other writer is done, or raise DATABASE_POOL_TIMEOUT",
                waited=waited,
            )
        if waited < min(timeout, 1.0) / 2:
            # SQLite gave up without waiting: a transaction that began as a read cannot wait
            # for the write lock (SQLITE_BUSY_SNAPSHOT); only BEGIN IMMEDIATE can.
            return DatabaseBusyError(
                "another writer holds the database write lock and this transaction, "
                "begun DEFERRED and already reading, cannot wait for it",
                hint="write in db_session_scope() or an outermost db.atomic(): they take the lock when they begin",
                waited=waited,
            )
        return DatabaseBusyError(
            f"another writer held the database write lock for {held} s (busy timeout {timeout:g} s); "
            "nothing of this transaction was written",
            hint="retry when the other writer is done, or raise DATABASE_POOL_TIMEOUT",
            waited=waited,
        )

    def __repr__(self) -> str:
        return f"<pfdb SqliteDatabase {self.pfdb_url.masked}>"


def _pooled_postgres_class():
    """Build the pooled PostgreSQL class on first use: psycopg2 loads only then."""
    enable_psycopg2()
    from ._pg_session import prepare_session
    from .pool import PooledPostgresqlDatabase

    class PostgresqlDatabase(_TracksWrites, PooledPostgresqlDatabase):
        """pfdb's pool (pfdb/pool.py) with connect errors as pfdb errors, the password masked.

        With read replicas (``pfdb/replicas.py``) the primary's instance holds a ``ReplicaSet``
        in ``pfdb_replicas``, and ``execute`` asks it whether a replica answers a read outside a
        transaction (what was written, and when, it learns from ``pfdb._writes``). A replica's
        instance points at its primary in ``pfdb_primary`` and runs the primary's connection
        hooks, so per-connection state (a tenant's) is the same on both.
        """

        pfdb_replicas: Any = None
        pfdb_primary: Any = None

        def __init__(self, url: DatabaseURL, settings: Settings, **kwargs: Any):
            self.pfdb_url = url
            self.pfdb_settings = settings
            self._tenant_dirty: set[int] = set()  # id() of connections a tenant scope configured
            super().__init__(url.database, **kwargs)

        def execute(self, query, **context_options):
            replicas = self.pfdb_replicas
            if replicas is not None and not self.in_transaction():
                cursor = replicas.execute_read(query, context_options)
                if cursor is not None:
                    return cursor
            return super().execute(query, **context_options)

        def execute_sql(self, sql, params=None):
            try:
                return super().execute_sql(sql, params)
            except pw.ProgrammingError as exc:
                translated = _schema_missing(self.pfdb_url, exc)
                if translated is None:
                    raise
                raise translated from exc

        def connect(self, reuse_if_open: bool = False):
            try:
                opened = super().connect(reuse_if_open)
            except pw.OperationalError as exc:
                raise _unavailable(self.pfdb_url, exc) from exc
            if opened and _binding.get() is not None:
                try:
                    self.apply_tenant(self._state.conn, fresh=True)
                except BaseException:
                    conn = self._state.conn
                    self._state.reset()
                    self._discard(conn)
                    raise
            return opened

        def apply_tenant(self, conn: Any, *, fresh: bool = False) -> None:
            """Give a connection of this thread the current tenant's search_path and role, or none.

            Names go through ``sql.Identifier``: a tenant name never reaches SQL unquoted.
            Only the tenant's schema is on the path, so a table missing there is an error,
            never the main schema's table of that name. ``fresh``: the connection is known
            clean (just checked out), so there is nothing to reset.
            """
            from psycopg2 import sql

            binding = _binding.get()
            owner = self.pfdb_primary or self  # a replica's connections carry its primary's tenant
            if binding is not None and binding.database is owner and binding.schema:
                statement = sql.SQL("SET search_path TO {}; ").format(sql.Identifier(binding.schema))
                role = (
                    sql.SQL("SET ROLE {}").format(sql.Identifier(binding.role))
                    if binding.role
                    else sql.SQL("RESET ROLE")
                )
                owner._tenant_dirty.add(id(conn))
                with conn.cursor() as cursor:
                    cursor.execute(statement + role)
            elif not fresh and id(conn) in owner._tenant_dirty:
                self.reset_connection(conn)

        def prepare_connection(self, conn: Any) -> None:
            if self.pfdb_primary is not None:
                return self.pfdb_primary.prepare_connection(conn)
            # UTC and jsonb as text: see pfdb/_pg_session.py. PgBouncer tracks TimeZone per
            # client and sets it on whichever server connection runs the next transaction.
            prepare_session(conn)
            # Server-side, so it also ends a statement whose client went away. Behind a
            # transaction pooler a session SET would stay on one server connection and
            # reach other clients: there ``begin`` sets it per transaction instead.
            if self.pfdb_settings.statement_timeout and not self.pfdb_settings.transaction_pooled:
                with conn.cursor() as cursor:
                    cursor.execute("SET statement_timeout = %s", (_milliseconds(self.pfdb_settings.statement_timeout),))

        def reset_connection(self, conn: Any) -> None:
            if self.pfdb_primary is not None:
                return self.pfdb_primary.reset_connection(conn)
            # Nothing of a tenant's scope outlives the check-out: the next one starts clean.
            # Only a connection a tenant scope touched pays for the round trip.
            if id(conn) in self._tenant_dirty:
                with conn.cursor() as cursor:
                    cursor.execute("RESET search_path; RESET ROLE")
                self._tenant_dirty.discard(id(conn))
            return super().reset_connection(conn)

        def begin(self, *args: Any, **kwargs: Any) -> None:
            super().begin(*args, **kwargs)
            if self.pfdb_settings.statement_timeout and self.pfdb_settings.transaction_pooled:
                # SET LOCAL ends with the transaction, so it never outlives it on a shared
                # server connection. It takes no snapshot: SET TRANSACTION may still follow.
                self.cursor().execute(
                    "SET LOCAL statement_timeout = %s", (_milliseconds(self.pfdb_settings.statement_timeout),)
                )

        def __repr__(self) -> str:
            return f"<pfdb PostgresqlDatabase {self.pfdb_url.masked}>"

    return PostgresqlDatabase


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _connect_timeout(settings: Settings) -> int:
    """libpq's connect_timeout: whole seconds (it treats 1 as 2); 0 waits forever."""
    seconds = settings.connect_timeout
    return 0 if seconds <= 0 else max(2, math.ceil(seconds))


_PG_CLASS = None


def build_database(settings: Settings, *, create: bool = True) -> pw.Database:
    """A peewee database for ``settings``, not yet connected (``create``: may make its folder)."""
    global _PG_CLASS
    url = settings.database_url
    if url.backend == "sqlite":
        if not url.is_memory and create:
            parent = Path(url.path).expanduser().resolve().parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ConfigError(
                    f"cannot create the folder {parent} for the SQLite database ({exc.strerror})",
                    hint="point DATABASE_URL at a writable location",
                ) from exc
        pragmas = {
            # WAL lets readers run beside one writer; NORMAL sync is safe with WAL
            # (a power cut loses at most the last commits, never integrity).
            "journal_mode": "wal",
            "synchronous": "normal",
            "foreign_keys": 1,
            # How long a writer waits for the lock before 'database is locked'.
            "busy_timeout": int(settings.pool_timeout * 1000),
            "cache_size": -64 * 1024,  # 64 MiB of page cache (negative = KiB)
        }
        if url.is_memory:
            pragmas.pop("journal_mode")
        # Every outermost transaction (atomic(), db_session_scope) begins IMMEDIATE: it takes
        # the write lock first and waits for it on the busy timeout. A deferred BEGIN reads,
        # then fails at once when it tries to write after another writer committed (SQLite
        # cannot wait there without a deadlock). Readers use db_read_scope(): BEGIN DEFERRED.
        return SqliteDatabase(url, settings, pragmas=pragmas, timeout=settings.pool_timeout, lock_type="IMMEDIATE")

    if _PG_CLASS is None:
        _PG_CLASS = _pooled_postgres_class()
    database = _pooled(url, settings)
    if settings.replica_urls:  # each replica its own pool, sized like the primary's
        replicas = [_pooled(replica_url, settings) for replica_url in settings.replica_urls]
        for replica in replicas:
            replica.pfdb_primary = database
        database.pfdb_replicas = ReplicaSet(database, replicas, settings.replica_max_lag)
    return database


def _pooled(url: DatabaseURL, settings: Settings) -> pw.Database:
    params = url.driver_params()
    params.setdefault("connect_timeout", _connect_timeout(settings))  # the URL's own wins
    return _PG_CLASS(
        url,
        settings,
        max_connections=settings.max_connections,
        max_idle=settings.pool_size,
        stale_timeout=settings.pool_recycle or None,
        timeout=settings.pool_timeout,
        **params,
    )


_echo_handler: logging.Handler | None = None
_echo_previous_level: int | None = None


def _configure_echo(enabled: bool) -> None:
    """DATABASE_ECHO: peewee logs every query at DEBUG on the ``peewee`` logger.

    Turning it on raises that logger to DEBUG (and adds a stderr handler when logging is
    not configured); turning it off, or re-initialising without it, puts both back.
    """
    global _echo_handler, _echo_previous_level
    logger = logging.getLogger("peewee")
    if _echo_previous_level is not None:
        logger.setLevel(_echo_previous_level)
        _echo_previous_level = None
    if _echo_handler is not None:
        logger.removeHandler(_echo_handler)
        _echo_handler = None
    if not enabled:
        return
    _echo_previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    # peewee's logger carries a NullHandler of its own: only a handler that writes somewhere
    # (on it, or on the root logger) means the application already chose where SQL goes.
    writers = [h for h in (*logger.handlers, *logging.getLogger().handlers) if not isinstance(h, logging.NullHandler)]
    if not writers:
        _echo_handler = logging.StreamHandler(sys.stderr)
        _echo_handler.setFormatter(logging.Formatter("%(asctime)s peewee %(message)s"))
        logger.addHandler(_echo_handler)


def bind_database(
    url: str | None = None,
    *,
    create: bool = True,
    read_only: bool = False,
    settings: Settings | None = None,
    **overrides: Any,
) -> pw.Database:
    """Bind ``pfdb.db`` to the database of ``url`` (default: ``DATABASE_URL`` or ``pfdb.db``).

    Overrides take settings by name (``pool_size=5``, ``echo=True``); ``settings`` already
    read (``config.load_settings``) are used as they are, so a caller reads ``.env`` once.
    Re-initialising closes the previous database and its pool first. No policy runs here:
    ``pfdb.init_database`` (``pfdb.lifecycle``) adds ``MIGRATION_AUTO_UPGRADE``.

    SQLite: ``create=False`` never makes a file (a missing one is ``DatabaseNotFoundError``
    on first use, and a read-only one is ``ReadOnlyDatabaseError``); the CLI uses it for
    every command but ``init`` and ``migrate``. ``read_only=True`` opens the file read-only
    (``mode=ro`` when it cannot be written), so reads work on a read-only disk; it implies
    ``create=False``. A file pfdb creates is mode 0600, and so are its -wal and -shm.

    Example: ``bind_database("sqlite:///shop.db")``
    """
    global _settings
    if settings is None:
        settings = load_settings(url, **overrides)
    with _lock:
        close_database()
        database = build_database(settings, create=create and not read_only)
        if isinstance(database, SqliteDatabase):
            database.pfdb_mode = "ro" if read_only else "rwc" if create else "rw"
        db.initialize(database)
        _settings = settings
        # What each commit wrote: the cache forgets it, replicas must replay it before reads.
        _writes.enabled = settings.cache_url is not None or bool(settings.replica_urls)
    _configure_echo(settings.echo)
    return database


def close_database() -> None:
    """Close every connection of the bound database (the whole pool) and unbind the proxy."""
    global _settings
    with _lock:
        close_routed()
        current = db._main
        if current is None:
            return
        close_whole(current)
        db.initialize(None)
        _settings = None
        _writes.enabled = False


def close_whole(database: pw.Database) -> None:
    """Close a database pfdb built: its replicas' pools, its own pool (or its one connection)."""
    if getattr(database, "pfdb_replicas", None) is not None:
        database.pfdb_replicas.close()
    if hasattr(database, "close_all"):
        database.close_all()
    elif not database.is_closed():
        database.close()


@contextmanager
def bound_temporarily(url: str, **overrides: Any) -> Iterator[pw.Database]:
    """Bind ``pfdb.db`` to ``url`` for a block, then put back whatever was bound before.

    For operations that run pfdb's own functions (migrate, backup) against another database
    from inside an application: the application's database, its pool and its settings are
    left open and bound again afterwards, unlike ``bind_database``, which closes them. The
    database bound here is closed (its whole pool) on the way out. The proxy is global: other
    threads see the temporary binding while the block runs.

    Example: ``with bound_temporarily("sqlite:///copy.db"): migrate()``
    """
    global _settings
    settings = load_settings(url, **overrides)
    with _lock:
        previous, previous_settings, previous_writes = main_database(), _settings, _writes.enabled
        database = build_database(settings)
        db.initialize(database)
        _settings = settings
        _writes.enabled = settings.cache_url is not None or bool(settings.replica_urls)
    try:
        with bound_tenant(None):  # a caller's tenant scope must not route this block's statements
            yield database
    finally:
        with _lock:
            close_whole(database)
            db.initialize(previous)
            _settings = previous_settings
            _writes.enabled = previous_writes


# Databases other than the bound one that tenants live in (another server's pool, a tenant's
# SQLite file), built once per key and closed with the bound database.
_routed: dict[Any, pw.Database] = {}


def routed_database(key: Any, settings: Settings, *, create: bool = True) -> pw.Database:
    """The database for ``key`` (built from ``settings`` on first use), closed by ``close_database``."""
    with _lock:
        database = _routed.get(key)
        if database is None:
            database = _routed[key] = build_database(settings, create=create)
        return database


def close_routed(key: Any = None) -> None:
    """Close the routed databases (or the one of ``key``) and forget them."""
    with _lock:
        keys = list(_routed) if key is None else [key] if key in _routed else []
        databases = [_routed.pop(k) for k in keys]
    for database in databases:
        close_whole(database)


def get_database() -> pw.Database:
    """The bound database, or a clear error when ``init_database()`` has not been called."""
    database = db.obj
    if database is None:
        raise DatabaseNotInitialisedError("the database is not initialised", hint="call pfdb.init_database() first")
    return database


@contextmanager
def borrow_connection(database: pw.Database | None = None) -> Iterator[pw.Database]:
    """Use the thread's connection, opening one only if it has none, and give back only what was opened.

    The one way pfdb borrows a connection: a connection the caller already holds (or a
    transaction in progress) is left open; one opened here is closed (returned to the pool).
    """
    database = get_database() if database is None else database
    opened = database.connect(reuse_if_open=True)
    try:
        yield database
    finally:
        if opened and not database.is_closed() and not database.in_transaction():
            database.close()


def get_settings() -> Settings:
    """The settings of the bound database, or of the current tenant's (its URL is the tenant's)."""
    get_database()
    binding = _binding.get()
    if binding is not None:
        return binding.settings
    assert _settings is not None
    return _settings


def backend() -> str:
    """``"sqlite"`` or ``"postgresql"`` for the bound database."""
    return get_settings().database_url.backend


@contextmanager
def db_session_scope() -> Iterator[pw.Database]:
    """Run the block in a transaction: commit on success, roll back and re-raise on error.

    Opens a connection if the thread has none and gives it back (to the pool) afterwards;
    inside another scope it becomes a savepoint. Yields the bound database.
    On SQLite it takes the write lock when it begins (``BEGIN IMMEDIATE``), waiting up to
    the busy timeout, so read-then-write blocks never fail half-way; blocks that only read
    belong in ``db_read_scope()``. On PostgreSQL lock rows you read to change with
    ``for_update(query)``.
    """
    with borrow_connection() as database, database.atomic():
        yield database


def session_scope() -> AbstractContextManager[pw.Database]:
    """Deprecated: ``db_session_scope()``, the seed's name and the canonical one, under a second name."""
    warnings.warn("pfdb.session_scope() is deprecated: use pfdb.db_session_scope()", DeprecationWarning, stacklevel=2)
    return db_session_scope()


@contextmanager
def db_read_scope() -> Iterator[pw.Database]:
    """Run a block that only reads in one consistent snapshot, never queueing behind writers.

    SQLite: a deferred ``BEGIN`` with ``PRAGMA query_only`` on (a write raises instead of
    failing later to upgrade the lock). PostgreSQL: ``REPEATABLE READ, READ ONLY``. Inside
    another scope it is a savepoint of that scope. Yields the bound database.

    With read replicas (``DATABASE_REPLICA_URLS``) the whole block runs on one replica that
    has replayed this process's writes, in the same kind of transaction; else on the primary.

    Example: ``with db_read_scope(): n = Product.select().count()``
    """
    database = get_database()
    replicas = getattr(database, "pfdb_replicas", None)
    if replicas is not None and not database.in_transaction():
        with replicas.read_scope() as on_replica:
            if on_replica:
                with database.atomic():
                    database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    yield database
                return
    with borrow_connection() as database:
        if database.in_transaction():
            with database.atomic():
                yield database
            return
        sqlite = isinstance(database, pw.SqliteDatabase)
        if sqlite:
            database.execute_sql("PRAGMA query_only = 1")
        try:
            with database.atomic("DEFERRED") if sqlite else database.atomic():
                if not sqlite:  # must be the transaction's first statement
                    database.execute_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                yield database
        finally:
            if sqlite and not database.is_closed():
                database.execute_sql("PRAGMA query_only = 0")


def require_primary_server(what: str) -> None:
    """Refuse ``what`` (a command that writes) when ``DATABASE_URL`` is a PostgreSQL server in recovery.

    A read replica refuses every write anyway, but midway and in the server's words; this
    says it first, in one line, with the fix. SQLite: nothing to check.
    """
    url = get_settings().database_url
    if url.backend != "postgresql":
        return
    with borrow_connection() as database:
        in_recovery = database.execute_sql("SELECT pg_is_in_recovery()").fetchone()[0]
    if in_recovery:
        raise ServerInRecoveryError(
            f"{what} writes, and DATABASE_URL ({url.masked}) is a PostgreSQL server in recovery (a read replica)",
            hint="point DATABASE_URL (or --database-url) at the primary; replicas belong in DATABASE_REPLICA_URLS",
        )


def writes_to_primary(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate an operation that writes: it runs on the primary (its reads too), never on a replica URL.

    Inside, every read goes to the primary (``replicas.primary()``): a migration or an import
    must not decide from a replica's older copy. Then ``require_primary_server(what)``.
    """

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(function)
        def run(*args: Any, **kwargs: Any) -> Any:
            with primary():
                if db.obj is not None:  # an operation that binds the database checks once bound
                    require_primary_server(what)
                return function(*args, **kwargs)

        return run

    return decorate


def replica_report(timeout: float | None = None) -> list[dict[str, Any]] | None:
    """Each read replica measured now: masked ``url``, ``state``, ``lag_seconds``, ``replay_paused``, ``error``.

    ``state`` is ``ok``, ``lagging`` (more than ``DATABASE_REPLICA_MAX_LAG`` behind), ``down``
    (unreachable: retried with back-off), ``not in recovery`` (a primary, not a replica) or
    ``unknown``. None when no replica is configured. Each replica answers within ``timeout``
    seconds (default ``DATABASE_CONNECT_TIMEOUT``, or 10 s), else it is reported down.
    """
    replicas = getattr(get_database(), "pfdb_replicas", None)
    if replicas is None:
        return None
    return replicas.check_all(timeout if timeout is not None else (get_settings().connect_timeout or 10.0))


def for_update(query: pw.Select) -> pw.Select:
    """Lock the rows a write scope reads in order to change them, on either backend.

    PostgreSQL: ``SELECT … FOR UPDATE`` (without it two read-modify-write scopes lose an
    update). SQLite: the query unchanged; ``db_session_scope`` already holds the write lock.

    Example: ``row = for_update(Counter.select().where(Counter.id == 1)).get()``
    """
    return query.for_update() if get_database().for_update else query


def database_health_check(
    timeout: float | None = None, *, checks: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Probe the database with ``SELECT 1``; never raises.

    Returns ``status`` ('healthy'/'unhealthy'), ``connection_test``, ``backend``,
    ``latency_ms``, the masked ``database`` URL, ``server_version``, ``migrations``
    (None here: ``pfdb.database_health_check``, from ``pfdb.lifecycle``, fills it through
    ``checks``), ``pool`` (PostgreSQL, else None) and ``error`` (None when healthy).
    ``checks(report)`` runs after a good probe, within the same time bound, and may mark
    the report unhealthy: it is how the layer above adds what this one cannot know.
    ``replicas`` lists each read replica (``replica_report()``), None without any; a replica
    down or lagging leaves the status as it is (reads go to the primary), and says so there.
    """
    # Every key is always there (None when it does not apply): scripts read it as a schema.
    report: dict[str, Any] = {
        "status": "unhealthy",
        "connection_test": False,
        "backend": None,
        "database": None,
        "latency_ms": None,
        "server_version": None,
        "migrations": None,
        "pool": None,
        "replicas": None,
        "error": None,
    }
    try:
        settings = get_settings()
        database = get_database()
    except Exception as exc:
        report.update(backend=None, database=None, error=str(exc))
        return report
    report = _probe_primary(settings, database, report, timeout, checks)
    # Replicas never make the database unhealthy: reads go to the primary without them.
    if getattr(database, "pfdb_replicas", None) is not None:
        report["replicas"] = replica_report(timeout)
    return report


def _probe_primary(
    settings: Settings,
    database: pw.Database,
    report: dict[str, Any],
    timeout: float | None,
    checks: Callable[[dict[str, Any]], None] | None,
) -> dict[str, Any]:
    url = settings.database_url
    report.update(backend=url.backend, database=url.masked)
    start = time.perf_counter()
    if url.backend == "sqlite":  # a file: nothing to wait for, and :memory: lives in this thread only
        _probe(database, url, report, start, checks)
        return report
    # On PostgreSQL the probe runs in a helper thread, so a server that accepts connections
    # and never answers cannot hold the caller: the answer comes within ``timeout`` seconds
    # (default DATABASE_CONNECT_TIMEOUT, or 10 s when that is 0).
    bound = timeout if timeout is not None else (settings.connect_timeout or 10.0)
    probe_report = dict(report)
    try:
        call_within(bound, _probe, database, url, probe_report, start, checks)
    except TimeoutError:
        report.update(
            latency_ms=round((time.perf_counter() - start) * 1000, 2),
            error=f"no answer from {url.masked} within {bound:g} s",
        )
        return report
    return probe_report


def _probe(
    database: pw.Database,
    url: DatabaseURL,
    report: dict[str, Any],
    start: float,
    checks: Callable[[dict[str, Any]], None] | None = None,
) -> None:
    try:
        with borrow_connection(database):
            database.execute_sql("SELECT 1").fetchone()
            if url.backend == "sqlite":
                version = database.execute_sql("SELECT sqlite_version()").fetchone()[0]
            else:
                version = database.execute_sql("SHOW server_version").fetchone()[0]
    except Exception as exc:
        message = mask_secrets(first_line(exc), url)
        report.update(latency_ms=round((time.perf_counter() - start) * 1000, 2), error=message)
        return
    report.update(
        status="healthy",
        connection_test=True,
        latency_ms=round((time.perf_counter() - start) * 1000, 2),
        server_version=version,
    )
    if hasattr(database, "pool_usage"):
        report["pool"] = database.pool_usage()
    if checks is not None:
        with primary():  # the probe's thread: the migration state is the primary's
            checks(report)


def ensure_database_exists(settings: Settings) -> bool:
    """Create the database itself if it is missing (a new SQLite file, or CREATE DATABASE).

    Returns True when it was created. PostgreSQL databases are created through the
    server's ``postgres`` maintenance database with the same credentials.
    """
    url = settings.database_url
    if url.backend == "sqlite":
        return not url.is_memory and not Path(url.path).expanduser().exists()
    url = settings.direct_url or url  # a pooler may not route the maintenance database
    enable_psycopg2()
    import psycopg2

    params = url.driver_params()
    params.setdefault("connect_timeout", _connect_timeout(settings))  # the URL's own wins
    try:
        psycopg2.connect(dbname=url.database, **params).close()
        return False
    except psycopg2.OperationalError as exc:
        if "does not exist" not in str(exc):
            error = _unavailable(url, exc)
            if settings.transaction_pooled and settings.direct_url is None:
                # PgBouncer retrying its failed login to a missing database lets the client time out.
                error.hint = (
                    f"{error.hint}; if the database does not exist yet, PgBouncer cannot say so: "
                    "set DATABASE_DIRECT_URL (the server itself) so that pfdb can create it"
                )
            raise error from exc
        if settings.transaction_pooled and settings.direct_url is None:
            # Created through PgBouncer, it would still refuse it for a while (server_login_retry).
            error = DatabaseUnavailableError(
                f"database {url.database!r} does not exist, and behind PgBouncer pfdb creates it "
                f"only through a direct connection ({url.masked})",
                hint="set DATABASE_DIRECT_URL=postgresql://user:pass@server:5432/db (the server itself), "
                "or create the database yourself",
            )
            error.retryable = False
            raise error from exc
    try:
        conn = psycopg2.connect(dbname="postgres", **params)
    except psycopg2.OperationalError as exc:
        raise _unavailable(url, exc) from exc
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cursor:
            from psycopg2 import sql

            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
    except psycopg2.Error as exc:
        # Another process (a replica starting beside this one) created it first: 42P04
        # duplicate_database, or 23505 unique_violation on pg_database when both got past
        # the server's own existence check at once. Either way the database is there.
        if exc.pgcode in ("42P04", "23505"):
            return False

        raise DatabaseUnavailableError(
            f"database {url.database!r} does not exist and cannot be created: {str(exc).strip()}",
            hint="create it yourself or grant CREATEDB to the user",
        ) from exc
    finally:
        conn.close()
    return True


def call_within(seconds: float, function: Any, *args: Any) -> Any:
    """``function(*args)`` in a daemon thread, given up after ``seconds`` with ``TimeoutError``.

    For probes of a server that may accept a connection and never answer: the caller gets
    its answer in time; a stuck probe ends on its own (connect timeout) or with the process.
    """
    outcome: dict[str, Any] = {}

    context = contextvars.copy_context()  # the probe works on the caller's tenant

    def run() -> None:
        try:
            outcome["value"] = context.run(function, *args)
        except BaseException as exc:  # handed to the caller below
            outcome["error"] = exc

    thread = threading.Thread(target=run, name="pfdb-probe", daemon=True)
    thread.start()
    thread.join(max(0.0, seconds))
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


def _ping(database: pw.Database) -> None:
    with borrow_connection(database):
        database.execute_sql("SELECT 1").fetchone()


def wait_for_database(timeout: float = 30.0, interval: float = 0.5) -> dict[str, Any]:
    """Retry connecting until the database answers (containers start before their database).

    Each attempt is bounded by the time left, so this returns within about ``timeout``
    seconds even when the server accepts connections and never answers. Errors that waiting
    cannot cure (no such role or database, a wrong password) fail at once with their fix.
    Returns ``{"attempts": n, "seconds": s}``; raises ``DatabaseUnavailableError``.
    """
    database = get_database()
    url = get_settings().database_url
    start = time.monotonic()
    deadline = start + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            if url.backend == "sqlite":
                _ping(database)
            else:
                call_within(max(deadline - time.monotonic(), 0.05), _ping, database)
            return {"attempts": attempts, "seconds": time.monotonic() - start}
        except DatabaseUnavailableError as exc:
            if isinstance(exc, DatabaseNotFoundError) or not getattr(exc, "retryable", True):
                raise
            reason, hint = exc.message, exc.hint
        except TimeoutError:
            reason, hint = f"{url.masked} accepted no connection in time", None
        except Exception as exc:  # a driver error past the connect (the server is starting up)
            reason, hint = mask_secrets(first_line(exc), url), None
        if time.monotonic() + interval >= deadline:
            raise DatabaseUnavailableError(
                f"the database did not answer within {timeout:g} s ({attempts} attempts): {reason}",
                hint=hint or "check that the server is running and DATABASE_URL is right",
            )
        time.sleep(interval)
