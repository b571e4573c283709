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


class SqliteDatabase(pw.SqliteDatabase):
    """SQLite that says which file it could not open instead of 'unable to open database file'."""

    def __init__(self, url: DatabaseURL, settings: Settings, **kwargs: Any):
        self.pfdb_url = url
        self.pfdb_settings = settings
        super().__init__(url.path, **kwargs)

    def _connect(self):
        try:
            return super()._connect()
        except Exception as exc:  # sqlite3.OperationalError: unable to open database file
            raise _unavailable(self.pfdb_url, exc) from exc

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
        return SqliteDatabase(url, settings, pragmas=pragmas, timeout=settings.pool_timeout)

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
    if not logging.getLogger().hasHandlers() and not logger.handlers:
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


def database_health_check() -> dict[str, Any]:
    """Probe the database with ``SELECT 1``; never raises.

    Returns ``status`` ('healthy'/'unhealthy'), ``connection_test``, ``backend``,
    ``latency_ms``, the masked ``database`` URL, ``server_version``, ``migrations``
    (``current`` and ``pending``), ``pool`` (PostgreSQL) and, when unhealthy, ``error``.
    """
    report: dict[str, Any] = {"status": "unhealthy", "connection_test": False}
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
