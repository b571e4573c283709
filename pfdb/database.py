"""The one ``DatabaseProxy``, the databases it is bound to, session scopes and the health check.

``init_database()`` is the only place a connection target is chosen: SQLite (WAL, foreign
keys, busy timeout) or pooled PostgreSQL. Models bind to the proxy at import, so one
process can be re-pointed (tests, a switch of URL) without re-importing anything.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ._peewee import enable_psycopg2
from ._peewee import peewee as pw
from .config import DatabaseURL, Settings, load_settings
from .errors import (
    ConfigError,
    DatabaseBusyError,
    DatabaseNotInitialisedError,
    DatabaseUnavailableError,
    PoolExhaustedError,
)

log = logging.getLogger("pfdb")

db = pw.DatabaseProxy()

_lock = threading.RLock()
_settings: Settings | None = None


def _unavailable(url: DatabaseURL, exc: BaseException) -> DatabaseUnavailableError:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if url.password:
        reason = reason.replace(url.password, "***")
    return DatabaseUnavailableError(
        f"cannot connect to {url.masked}: {reason}",
        hint="check DATABASE_URL and that the database server is running",
    )


_SQLITE_BUSY = 5  # primary result code; extended codes (BUSY_SNAPSHOT, …) keep it in the low byte


def _is_busy(exc: BaseException) -> bool:
    """SQLITE_BUSY, raw from sqlite3 or wrapped by peewee (whose first argument is the original)."""
    for candidate in (exc, *exc.args[:1]):
        code = getattr(candidate, "sqlite_errorcode", None)
        if code is not None:
            return code & 0xFF == _SQLITE_BUSY
    return "database is locked" in str(exc)


class SqliteDatabase(pw.SqliteDatabase):
    """SQLite that says which file it could not open instead of 'unable to open database file',
    and turns a busy timeout that ran out into ``DatabaseBusyError`` (Python API and CLI alike)."""

    def __init__(self, url: DatabaseURL, settings: Settings, **kwargs: Any):
        self.pfdb_url = url
        self.pfdb_settings = settings
        super().__init__(url.path, **kwargs)

    def _connect(self):
        start = time.monotonic()
        try:
            return super()._connect()
        except Exception as exc:  # sqlite3.OperationalError: unable to open database file
            if _is_busy(exc):  # a connection pragma met another process's lock
                raise self._busy(time.monotonic() - start, "opening the database") from exc
            raise _unavailable(self.pfdb_url, exc) from exc

    # Every statement that can meet another connection's lock passes one of these three.
    def execute_sql(self, sql, params=None):
        start = time.monotonic()
        try:
            return super().execute_sql(sql, params)
        except pw.OperationalError as exc:
            if _is_busy(exc):
                raise self._busy(time.monotonic() - start) from exc
            raise

    def begin(self, lock_type=None):
        start = time.monotonic()
        try:
            return super().begin(lock_type)
        except pw.OperationalError as exc:
            if _is_busy(exc):
                raise self._busy(time.monotonic() - start) from exc
            raise

    def commit(self):
        start = time.monotonic()
        try:
            return super().commit()
        except pw.OperationalError as exc:
            if _is_busy(exc):
                raise self._busy(time.monotonic() - start) from exc
            raise

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
    """Build the pooled PostgreSQL class on first use: psycopg2 and the pool load only then."""
    enable_psycopg2()
    from playhouse.pool import MaxConnectionsExceeded, PooledPostgresqlDatabase

    class PostgresqlDatabase(PooledPostgresqlDatabase):
        """Pooled PostgreSQL whose connect errors are pfdb errors with the password masked."""

        def __init__(self, url: DatabaseURL, settings: Settings, **kwargs: Any):
            self.pfdb_url = url
            self.pfdb_settings = settings
            super().__init__(url.database, **kwargs)

        def connect(self, reuse_if_open: bool = False):
            try:
                return super().connect(reuse_if_open)
            except MaxConnectionsExceeded as exc:
                raise PoolExhaustedError(
                    f"all {self._max_connections} pooled connections stayed in use for "
                    f"{self.pfdb_settings.pool_timeout:g} s",
                    hint="raise DATABASE_POOL_SIZE/DATABASE_MAX_OVERFLOW or close connections sooner",
                ) from exc
            except pw.OperationalError as exc:
                raise _unavailable(self.pfdb_url, exc) from exc

        def pool_usage(self) -> dict[str, int]:
            return {
                "in_use": len(self._in_use),
                "idle": len(self._connections),
                "max_connections": self._max_connections,
            }

        def __repr__(self) -> str:
            return f"<pfdb PostgresqlDatabase {self.pfdb_url.masked}>"

    return PostgresqlDatabase


_PG_CLASS = None


def build_database(settings: Settings) -> pw.Database:
    """A peewee database for ``settings``, not yet connected."""
    global _PG_CLASS
    url = settings.database_url
    if url.backend == "sqlite":
        if not url.is_memory:
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
        return SqliteDatabase(url, settings, pragmas=pragmas, timeout=settings.pool_timeout,
                              lock_type="IMMEDIATE")

    if _PG_CLASS is None:
        _PG_CLASS = _pooled_postgres_class()
    params: dict[str, Any] = dict(url.options)
    params.update({k: v for k, v in (("user", url.user), ("password", url.password),
                                     ("host", url.host), ("port", url.port)) if v is not None})
    return _PG_CLASS(
        url,
        settings,
        max_connections=settings.max_connections,
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


def init_database(url: str | None = None, **overrides: Any) -> pw.Database:
    """Bind ``pfdb.db`` to the database of ``url`` (default: ``DATABASE_URL`` or ``pfdb.db``).

    Overrides take settings by name (``pool_size=5``, ``echo=True``). Re-initialising
    closes the previous database and its pool first. With ``MIGRATION_AUTO_UPGRADE``
    pending migrations are applied before this returns.

    Example: ``init_database("sqlite:///shop.db")``
    """
    global _settings
    settings = load_settings(url, **overrides)
    with _lock:
        close_database()
        database = build_database(settings)
        db.initialize(database)
        _settings = settings
    _configure_echo(settings.echo)
    if settings.migration_auto_upgrade:
        from .migrations import migrate

        migrate()
    return database


def close_database() -> None:
    """Close every connection of the bound database (the whole pool) and unbind the proxy."""
    global _settings
    with _lock:
        current = db.obj
        if current is None:
            return
        if hasattr(current, "close_all"):
            current.close_all()
        elif not current.is_closed():
            current.close()
        db.initialize(None)
        _settings = None


def get_database() -> pw.Database:
    """The bound database, or a clear error when ``init_database()`` has not been called."""
    database = db.obj
    if database is None:
        raise DatabaseNotInitialisedError(
            "the database is not initialised", hint="call pfdb.init_database() first"
        )
    return database


def get_settings() -> Settings:
    get_database()
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
    database = get_database()
    opened = database.connect(reuse_if_open=True)
    try:
        with database.atomic():
            yield database
    finally:
        if opened and not database.is_closed() and not database.in_transaction():
            database.close()


session_scope = db_session_scope


@contextmanager
def db_read_scope() -> Iterator[pw.Database]:
    """Run a block that only reads in one consistent snapshot, never queueing behind writers.

    SQLite: a deferred ``BEGIN`` with ``PRAGMA query_only`` on (a write raises instead of
    failing later to upgrade the lock). PostgreSQL: ``REPEATABLE READ, READ ONLY``. Inside
    another scope it is a savepoint of that scope. Yields the bound database.

    Example: ``with db_read_scope(): n = Product.select().count()``
    """
    database = get_database()
    opened = database.connect(reuse_if_open=True)
    try:
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
    finally:
        if opened and not database.is_closed() and not database.in_transaction():
            database.close()


def for_update(query: pw.Select) -> pw.Select:
    """Lock the rows a write scope reads in order to change them, on either backend.

    PostgreSQL: ``SELECT … FOR UPDATE`` (without it two read-modify-write scopes lose an
    update). SQLite: the query unchanged; ``db_session_scope`` already holds the write lock.

    Example: ``row = for_update(Counter.select().where(Counter.id == 1)).get()``
    """
    return query.for_update() if get_database().for_update else query


def database_health_check() -> dict[str, Any]:
    """Probe the database with ``SELECT 1``; never raises.

    Returns ``status`` ('healthy'/'unhealthy'), ``connection_test``, ``backend``,
    ``latency_ms``, the masked ``database`` URL, ``server_version``, ``migrations``
    (``current`` and ``pending``), ``pool`` (PostgreSQL, else None) and ``error`` (None
    when healthy).
    """
    # Every key is always there (None when it does not apply): scripts read it as a schema.
    report: dict[str, Any] = {"status": "unhealthy", "connection_test": False, "backend": None, "database": None,
                              "latency_ms": None, "server_version": None, "migrations": None, "pool": None,
                              "error": None}
    try:
        settings = get_settings()
        database = get_database()
    except Exception as exc:
        report.update(backend=None, database=None, error=str(exc))
        return report
    url = settings.database_url
    report.update(backend=url.backend, database=url.masked)
    start = time.perf_counter()
    try:
        opened = database.connect(reuse_if_open=True)
        try:
            database.execute_sql("SELECT 1").fetchone()
            if url.backend == "sqlite":
                version = database.execute_sql("SELECT sqlite_version()").fetchone()[0]
            else:
                version = database.execute_sql("SHOW server_version").fetchone()[0]
        finally:
            if opened and not database.in_transaction():
                database.close()
    except Exception as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if url.password:
            message = message.replace(url.password, "***")
        report.update(latency_ms=round((time.perf_counter() - start) * 1000, 2), error=message)
        return report
    report.update(
        status="healthy",
        connection_test=True,
        latency_ms=round((time.perf_counter() - start) * 1000, 2),
        server_version=version,
    )
    if hasattr(database, "pool_usage"):
        report["pool"] = database.pool_usage()
    try:  # reads the history table only: peewee_migrate is not imported for this
        from .migrations import status

        state = status()
        report["migrations"] = {"current": state.current, "pending": list(state.pending)}
    except Exception as exc:
        report["migrations"] = {"error": str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}
    return report


def ensure_database_exists(settings: Settings) -> bool:
    """Create the database itself if it is missing (a new SQLite file, or CREATE DATABASE).

    Returns True when it was created. PostgreSQL databases are created through the
    server's ``postgres`` maintenance database with the same credentials.
    """
    url = settings.database_url
    if url.backend == "sqlite":
        return not url.is_memory and not Path(url.path).expanduser().exists()
    enable_psycopg2()
    import psycopg2

    params = dict(url.options)
    params.update({k: v for k, v in (("user", url.user), ("password", url.password),
                                     ("host", url.host), ("port", url.port)) if v is not None})
    try:
        psycopg2.connect(dbname=url.database, connect_timeout=10, **params).close()
        return False
    except psycopg2.OperationalError as exc:
        if "does not exist" not in str(exc):
            raise _unavailable(url, exc) from exc
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=10, **params)
    except psycopg2.OperationalError as exc:
        raise _unavailable(url, exc) from exc
    try:
        conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
        with conn.cursor() as cursor:
            from psycopg2 import sql

            cursor.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(url.database)))
    except psycopg2.Error as exc:
        raise DatabaseUnavailableError(
            f"database {url.database!r} does not exist and cannot be created: {str(exc).strip()}",
            hint="create it yourself or grant CREATEDB to the user",
        ) from exc
    finally:
        conn.close()
    return True


def wait_for_database(timeout: float = 30.0, interval: float = 0.5) -> dict[str, Any]:
    """Retry connecting until the database answers (containers start before their database).

    Returns ``{"attempts": n, "seconds": s}``; raises ``DatabaseUnavailableError`` at the timeout.
    """
    start = time.monotonic()
    attempts = 0
    while True:
        attempts += 1
        report = database_health_check()
        if report["status"] == "healthy":
            return {"attempts": attempts, "seconds": time.monotonic() - start}
        if time.monotonic() - start + interval > timeout:
            raise DatabaseUnavailableError(
                f"the database did not answer within {timeout:g} s ({attempts} attempts): {report.get('error')}",
                hint="check that the server is running and DATABASE_URL is right",
            )
        time.sleep(interval)
