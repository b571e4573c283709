"""The one ``DatabaseProxy``, the databases it is bound to, session scopes and the health check.

``init_database()`` is the only place a connection target is chosen: SQLite (WAL, foreign
keys, busy timeout) or pooled PostgreSQL. Models bind to the proxy at import, so one
process can be re-pointed (tests, a switch of URL) without re-importing anything.
"""

from __future__ import annotations

import logging
import math
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
)

log = logging.getLogger("pfdb")

db = pw.DatabaseProxy()

_lock = threading.RLock()
_settings: Settings | None = None


# Connect errors that waiting does not cure, and what to do instead. The server words them
# (SQLSTATE is not available before a session exists); English messages are matched.
_PERMANENT = (
    ("password authentication failed", "check the password in DATABASE_URL"),
    ("no password supplied", "put the password in DATABASE_URL"),
    ("role \"", "check the user name in DATABASE_URL, or create that role on the server"),
    ("database \"", "run pfdb init to create the database, or check its name in DATABASE_URL"),
    ("no pg_hba.conf entry", "the server refuses this user or host: see its pg_hba.conf"),
)


def _unavailable(url: DatabaseURL, exc: BaseException) -> DatabaseUnavailableError:
    """The one connect error: masked, one line, and ``retryable`` False when waiting cannot help."""
    text = str(exc).strip()
    reason = text.splitlines()[0] if text else type(exc).__name__
    if url.password:
        reason = reason.replace(url.password, "***")
    hint = "check DATABASE_URL and that the database server is running"
    retryable = True
    for needle, fix in _PERMANENT:
        if needle in reason and (not needle.endswith('"') or "does not exist" in reason):
            hint, retryable = fix, False
            break
    error = DatabaseUnavailableError(f"cannot connect to {url.masked}: {reason}", hint=hint)
    error.retryable = retryable
    return error


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
    """Build the pooled PostgreSQL class on first use: psycopg2 loads only then."""
    enable_psycopg2()
    from .pool import PooledPostgresqlDatabase

    class PostgresqlDatabase(PooledPostgresqlDatabase):
        """pfdb's pool (pfdb/pool.py) with connect errors as pfdb errors, the password masked."""

        def __init__(self, url: DatabaseURL, settings: Settings, **kwargs: Any):
            self.pfdb_url = url
            self.pfdb_settings = settings
            super().__init__(url.database, **kwargs)

        def connect(self, reuse_if_open: bool = False):
            try:
                return super().connect(reuse_if_open)
            except pw.OperationalError as exc:
                raise _unavailable(self.pfdb_url, exc) from exc

        def prepare_connection(self, conn: Any) -> None:
            # Server-side, so it also ends a statement whose client went away.
            if self.pfdb_settings.statement_timeout:
                with conn.cursor() as cursor:
                    cursor.execute("SET statement_timeout = %s", (_milliseconds(self.pfdb_settings.statement_timeout),))

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


def database_health_check(timeout: float | None = None) -> dict[str, Any]:
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
    if url.backend == "sqlite":  # a file: nothing to wait for, and :memory: lives in this thread only
        _probe(database, url, report, start)
        return report
    # On PostgreSQL the probe runs in a helper thread, so a server that accepts connections
    # and never answers cannot hold the caller: the answer comes within ``timeout`` seconds
    # (default DATABASE_CONNECT_TIMEOUT, or 10 s when that is 0).
    bound = timeout if timeout is not None else (settings.connect_timeout or 10.0)
    probe_report = dict(report)
    try:
        call_within(bound, _probe, database, url, probe_report, start)
    except TimeoutError:
        report.update(latency_ms=round((time.perf_counter() - start) * 1000, 2),
                      error=f"no answer from {url.masked} within {bound:g} s")
        return report
    return probe_report


def _probe(database: pw.Database, url: DatabaseURL, report: dict[str, Any], start: float) -> None:
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
        return
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


def call_within(seconds: float, function: Any, *args: Any) -> Any:
    """``function(*args)`` in a daemon thread, given up after ``seconds`` with ``TimeoutError``.

    For probes of a server that may accept a connection and never answer: the caller gets
    its answer in time; a stuck probe ends on its own (connect timeout) or with the process.
    """
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = function(*args)
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
    opened = database.connect(reuse_if_open=True)
    try:
        database.execute_sql("SELECT 1").fetchone()
    finally:
        if opened and not database.in_transaction():
            database.close()


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
            if not getattr(exc, "retryable", True):
                raise
            reason, hint = exc.message, exc.hint
        except TimeoutError:
            reason, hint = f"{url.masked} accepted no connection in time", None
        except Exception as exc:  # a driver error past the connect (the server is starting up)
            reason, hint = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__, None
            if url.password:
                reason = reason.replace(url.password, "***")
        if time.monotonic() + interval >= deadline:
            raise DatabaseUnavailableError(
                f"the database did not answer within {timeout:g} s ({attempts} attempts): {reason}",
                hint=hint or "check that the server is running and DATABASE_URL is right",
            )
        time.sleep(interval)
