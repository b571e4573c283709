"""Application policies: what happens around opening, migrating and probing the database.

The layer that composes the ones below it and that nothing below imports (the layers
contract in pyproject.toml holds it): ``database`` binds and connects, ``migrations`` knows
the schema, ``maintenance`` backs up and restores. The policies that join them live here:

- open the database and, with ``MIGRATION_AUTO_UPGRADE``, bring it up to date
  (``init_database``, what an application calls at start-up; no CLI command applies it);
- back up before a migration or rollback changes data (``MIGRATION_BACKUP_BEFORE_UPGRADE``):
  this module hands ``maintenance.backup`` to ``migrations`` as its backup hook;
- a health check that counts unapplied migrations as unhealthy (``database_health_check``);
- ``init``: create the database if needed, bind it, apply every migration;
- ``rehearse_migrations``: the pending migrations tried on a scratch copy first.

``pfdb.init_database`` and ``pfdb.database_health_check`` are this module's functions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import _writes, cache, hooks
from ._peewee import peewee as pw
from .config import load_settings
from .database import bind_database
from .database import database_health_check as _probe_health
from .text import first_line

if TYPE_CHECKING:
    from .migrations import InitResult

# ``migrations`` and ``maintenance`` are imported where they are used: ``import pfdb`` loads this
# module, and an application that never migrates should not pay for their import.
__all__ = ["backup_before_change", "database_health_check", "init", "init_database", "rehearse_migrations"]


def init_database(
    url: str | None = None, *, create: bool = True, read_only: bool = False, **overrides: Any
) -> pw.Database:
    """Bind ``pfdb.db`` to the database of ``url`` (default: ``DATABASE_URL`` or ``pfdb.db``).

    Overrides take settings by name (``pool_size=5``, ``echo=True``). Re-initialising
    closes the previous database and its pool first. With ``MIGRATION_AUTO_UPGRADE``
    pending migrations are applied before this returns (a backup first, as ``migrate()``
    takes one).

    SQLite: ``create=False`` never makes a file (a missing one is ``DatabaseNotFoundError``
    on first use, and a read-only one is ``ReadOnlyDatabaseError``); the CLI uses it for
    every command but ``init`` and ``migrate``. ``read_only=True`` opens the file read-only
    (``mode=ro`` when it cannot be written), so reads work on a read-only disk; it implies
    ``create=False``. A file pfdb creates is mode 0600, and so are its -wal and -shm.

    Example: ``init_database("sqlite:///shop.db")``
    """
    settings = load_settings(url, **overrides)  # once: bind_database takes them as they are
    database = bind_database(create=create, read_only=read_only, settings=settings)
    if settings.migration_auto_upgrade:
        from .migrations import migrate

        migrate()
    return database


def backup_before_change(label: str = "") -> Any:
    """The backup ``migrate()`` and ``rollback()`` take first: ``pfdb.maintenance.backup``.

    Imported when called: ``pfdb status`` and every other command that changes no schema
    do not pay for the backup machinery.
    """
    from .maintenance import backup

    return backup(label=label)


def _migration_state(report: dict[str, Any]) -> None:
    """Fill ``report["migrations"]``; unapplied migrations make the database unhealthy (the code
    expects tables or columns it does not have), with the reason in ``error``."""
    try:  # reads the history table and the file names only: peewee_migrate is not imported
        from .migrations import status

        state = status()
    except Exception as exc:
        report["migrations"] = {"error": first_line(exc)}
        return
    report["migrations"] = {"current": state.current, "pending": list(state.pending)}
    if state.pending:
        count = len(state.pending)
        report.update(
            status="unhealthy",
            error=f"{count} migration{'s' if count != 1 else ''} not applied "
            f"({', '.join(state.pending)}); run pfdb migrate",
        )


def database_health_check(timeout: float | None = None) -> dict[str, Any]:
    """Probe the database with ``SELECT 1`` and read its migration state; never raises.

    Returns ``status`` ('healthy'/'unhealthy'), ``connection_test``, ``backend``,
    ``latency_ms``, the masked ``database`` URL, ``server_version``, ``migrations``
    (``current`` and ``pending``), ``pool`` (PostgreSQL, else None), ``error`` (None when
    healthy) and ``cache`` (None without ``CACHE_URL``, else its ``status``: ``ok``, or
    ``degraded`` when Redis does not answer, which leaves the database healthy). Unapplied
    migrations make it unhealthy, saying which. On PostgreSQL the answer comes within
    ``timeout`` seconds (default ``DATABASE_CONNECT_TIMEOUT``, or 10 s).
    """
    report = _probe_health(timeout, checks=_migration_state)
    # The cache's state, never the database's health: with Redis down pfdb reads the database.
    report["cache"] = cache.status()
    return report


def init(url: str | None = None, **overrides: Any) -> InitResult:
    """Create the database if needed, bind ``pfdb.db`` to it and apply every migration (``pfdb init``).

    The work is ``pfdb.migrations.init``; the backup it may take comes from the hook set below.
    Example: ``init("sqlite:///shop.db").applied``
    """
    from .migrations import init as init_schema

    return init_schema(url, **overrides)


def rehearse_migrations(*, contract: bool = False) -> Any:
    """Rehearse the pending migrations on a scratch copy of the database (``pfdb migrate --rehearse``).

    The work is ``pfdb.rehearsal.rehearse``: apply, roll back, apply again on the copy, compare
    the schemas, drop the copy; the real database is only read. Returns a ``RehearsalResult``.
    Example: ``assert pfdb.rehearse_migrations().ok``
    """
    from .rehearsal import rehearse

    return rehearse(contract=contract)


# migrations only knows the schema; the backup it takes first is maintenance's, handed down here.
hooks.backup_before_change = backup_before_change
# The database layer sees every commit; the cache it invalidates sits above it.
_writes.after_commit = cache.after_commit
