"""The exception tree every pfdb caller sees, with the CLI exit code of each.

Driver exceptions (sqlite3, psycopg2, peewee's pool, peewee-migrate's bare
``RuntimeError``) are translated into these at the boundary, ``raise … from``,
so a caller catches one hierarchy and a person reads one clear line.
This module imports nothing of pfdb.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


class PfdbError(Exception):
    """Base of every error pfdb raises on purpose.

    ``hint`` says how to fix it; ``exit_code`` is what the CLI exits with.
    """

    exit_code = EXIT_FAILED

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ConfigError(PfdbError):
    """A setting (environment, ``.env`` or argument) has a value pfdb cannot use."""

    exit_code = EXIT_USAGE


class UsageError(PfdbError):
    """A command was called with arguments it does not take."""

    exit_code = EXIT_USAGE


class UnsafePathError(UsageError):
    """A command was asked to write over the live database, its own input, or a file it reads."""


class DatabaseNotInitialisedError(PfdbError):
    """The proxy is used before ``init_database()`` bound it."""


class SchemaMissingError(PfdbError):
    """A query met a table that is not there: the database has no pfdb schema yet (or is behind the code).

    Translated at the database boundary from SQLite's 'no such table' and PostgreSQL's
    undefined_table (42P01), so Python callers and the CLI read the same one line.
    """


class DatabaseUnavailableError(PfdbError):
    """The database cannot be reached or opened."""


class DatabaseNotFoundError(DatabaseUnavailableError):
    """There is no database at the configured place, and this command does not create one."""


class ReadOnlyDatabaseError(DatabaseUnavailableError):
    """A write needs a file or folder this process may only read (permissions, read-only disk)."""


class DiskFullError(PfdbError):
    """The disk (or SQLite's page limit) ran out of space; the failed transaction was rolled back."""


class PoolExhaustedError(DatabaseUnavailableError):
    """Every pooled connection stayed checked out past the pool timeout."""


class DatabaseBusyError(PfdbError):
    """Another writer held SQLite's write lock for the whole busy timeout.

    The database is fine and nothing of this transaction was written; it can be retried.
    ``waited`` is how long this one waited, in seconds.
    """

    def __init__(self, message: str, hint: str | None = None, waited: float = 0.0):
        super().__init__(message, hint)
        self.waited = waited


class ValidationError(PfdbError, ValueError):
    """A model value is invalid; ``field`` names it. Raised before any write."""

    def __init__(self, field: str, message: str, hint: str | None = None):
        super().__init__(f"{field}: {message}", hint)
        self.field = field


class DuplicateError(PfdbError):
    """A unique business key (SKU, email, slug, …) is already taken."""

    def __init__(self, key: str, value: object, model: str | None = None):
        what = f"a {model} with" if model else "a row with"
        super().__init__(f"{what} {key} {value!r} already exists")
        self.key = key
        self.value = value


class NotFoundError(PfdbError):
    """A row asked for by its key does not exist."""


class MigrationError(PfdbError):
    """A migration could not be created, applied or rolled back."""


class DestructiveRollbackError(MigrationError):
    """A rollback would drop tables or columns and the caller did not say that is intended.

    ``migration`` is the first migration whose rollback drops something; ``drops`` lists
    what every rollback asked for would drop (``"table products"``, ``"column products.notes"``).
    """

    exit_code = EXIT_USAGE

    def __init__(self, message: str, hint: str | None = None, *, migration: str = "", drops: tuple[str, ...] = ()):
        super().__init__(message, hint)
        self.migration = migration
        self.drops = drops


class MigrationLockTimeout(MigrationError):
    """Another process held the migration lock for longer than the timeout."""


class MigrationBlockedError(MigrationError):
    """A migration's DDL waited ``MIGRATION_LOCK_TIMEOUT`` for a lock on every try (PostgreSQL).

    Nothing of the migration was applied. ``migration`` names it; ``pid`` and ``query`` the
    session that held the lock (None when it had gone by the time pfdb looked); ``attempts``
    how often it was tried.
    """

    def __init__(
        self,
        message: str,
        hint: str | None = None,
        *,
        migration: str = "",
        pid: int | None = None,
        query: str | None = None,
        attempts: int = 0,
    ):
        super().__init__(message, hint)
        self.migration = migration
        self.pid = pid
        self.query = query
        self.attempts = attempts


class BackupError(PfdbError):
    """A backup could not be written or verified."""


class RestoreError(PfdbError):
    """A backup could not be restored; the current database is untouched."""


class CopyError(PfdbError):
    """A database could not be copied; the target is as it was before."""


class FeedError(PfdbError):
    """A feed file cannot be read at all (as opposed to single bad rows)."""


class ConnectionLostError(DatabaseUnavailableError):
    """The server closed a connection in use (restart, terminated backend); the work in flight is undone."""


class CacheError(PfdbError):
    """The Redis cache was needed and is not there (``pfdb cache-clear`` without ``CACHE_URL``
    or with Redis down). Lookups never raise it: they read the database instead."""


class ServerInRecoveryError(ReadOnlyDatabaseError):
    """A command that writes was pointed at a PostgreSQL server in recovery (a read replica).

    A configuration mistake (exit 2): the fix is the primary's URL in ``DATABASE_URL``.
    """

    exit_code = EXIT_USAGE


class TenantError(PfdbError):
    """A tenant could not be created, dropped or moved; the registry says where it still is."""
