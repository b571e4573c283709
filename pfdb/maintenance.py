"""Backup, restore, info and optimize: one function each, for SQLite and PostgreSQL alike.

The backend work lives in ``_sqlite_tools`` (SQLite's online backup API) and ``_pg_tools``
(``pg_dump``/``pg_restore``); this module owns what both share: where a backup goes, how
it lands (a private temporary file renamed into place, mode 0600, never half-written
under its final name), the order of a restore (validate, safety copy, replace, report)
and the result objects the CLI prints.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _files, _pg_tools, _sqlite_tools, cache
from .database import (
    borrow_connection,
    current_tenant,
    get_database,
    get_settings,
    replica_report,
    require_sqlite_file,
    writes_to_primary,
)
from .errors import BackupError, RestoreError, UnsafePathError, UsageError
from .paths import check_output, database_files, same_file

FILE_MODE = 0o600  # a backup holds every password hash and setting: owner only
DIR_MODE = 0o700

Progress = Callable[[int, int], None]


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class BackupResult:
    path: Path
    backend: str
    size: int  # bytes
    duration: float  # seconds
    migration: str | None  # the last applied migration the backup contains
    leftovers: tuple[str, ...] = ()  # temporary files of earlier, killed backups, removed by this one

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "backend": self.backend,
            "size": self.size,
            "duration": round(self.duration, 3),
            "migration": self.migration,
            "leftovers": list(self.leftovers),
        }


@dataclass(frozen=True)
class RestoreResult:
    path: Path
    backend: str
    migration: str | None  # the migration version of the restored data
    safety_backup: BackupResult
    pending: tuple[str, ...]  # migrations the code has and the restored data lacks
    migrated: tuple[str, ...] = ()  # applied after the restore (MIGRATION_AUTO_UPGRADE)
    dropped: tuple[str, ...] = ()  # PostgreSQL: tables the backup did not have
    duration: float = 0.0
    unknown: tuple[str, ...] = ()  # applied in the backup, no migration file here (newer code)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "backend": self.backend,
            "migration": self.migration,
            "safety_backup": str(self.safety_backup.path),
            "pending": list(self.pending),
            "migrated": list(self.migrated),
            "dropped": list(self.dropped),
            "unknown": list(self.unknown),
            "duration": round(self.duration, 3),
        }


@dataclass(frozen=True)
class InfoResult:
    backend: str
    database: str  # the masked URL
    server_version: str
    size: int  # bytes: the SQLite file, or pg_database_size
    wal_size: int | None  # SQLite only
    settings: dict[str, Any]  # pragmas in force, or PostgreSQL settings
    tables: dict[str, int]  # table -> row count
    migrations: dict[str, Any]
    pool: dict[str, Any] | None  # PostgreSQL's pool settings and usage; None on SQLite
    path: str | None = None  # SQLite file
    cache: dict[str, Any] | None = None  # the Redis cache (pfdb.cache.status()); None without CACHE_URL
    replicas: list[dict[str, Any]] | None = None  # each read replica's state and lag; None without any

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "database": self.database,
            "path": self.path,
            "server_version": self.server_version,
            "size": self.size,
            "wal_size": self.wal_size,
            "settings": dict(self.settings),
            "tables": dict(self.tables),
            "migrations": dict(self.migrations),
            "pool": dict(self.pool) if self.pool is not None else None,
            "cache": dict(self.cache) if self.cache is not None else None,
            "replicas": [dict(r) for r in self.replicas] if self.replicas is not None else None,
        }


@dataclass(frozen=True)
class OptimizeResult:
    backend: str
    steps: tuple[str, ...]
    size_before: int
    size_after: int
    duration: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "steps": list(self.steps),
            "size_before": self.size_before,
            "size_after": self.size_after,
            "duration": round(self.duration, 3),
        }


# -- where a backup goes --------------------------------------------------------------------
def default_backup_dir() -> Path:
    """SQLite: ``backups/`` beside the database file. PostgreSQL: ``backups/`` in the working directory."""
    url = get_settings().database_url
    if url.backend == "sqlite" and not url.is_memory:
        folder = Path(url.path).expanduser().resolve().parent
        if current_tenant() is not None:  # a tenant's file sits in <db>.tenants/: backups beside the main file
            folder = folder.parent
        return folder / "backups"
    return Path.cwd() / "backups"


def _stamp() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def make_private_dirs(folder: Path) -> None:
    """Create ``folder`` and any missing parents, each 0700 whatever the umask.

    ``Path.mkdir(parents=True, mode=…)`` gives the parents the umask's mode (0777 under
    ``umask 000``) and the leaf ``mode & ~umask``; folders that hold backups are owner-only.
    Folders that already exist are left as they are.
    """
    missing = []
    for candidate in (folder, *folder.parents):
        if candidate.is_dir():
            break
        missing.append(candidate)
    for path in reversed(missing):
        try:
            path.mkdir(mode=DIR_MODE)
        except FileExistsError:
            if not path.is_dir():
                raise
            continue  # another process made it a moment ago: theirs, leave its mode
        os.chmod(path, DIR_MODE)


def _names(folder: Path, stem: str, suffix: str) -> list[Path]:
    """The names a new backup may take, in order; the first free one is claimed when it is complete."""
    make_private_dirs(folder)
    return [folder / (f"{stem}{suffix}" if n == 0 else f"{stem}-{n}{suffix}") for n in range(1000)]


def _target(path: str | os.PathLike | None, label: str = "") -> tuple[Path, list[Path] | None]:
    """The backup's final path, and the names to choose from when pfdb names it (else None)."""
    url = get_settings().database_url
    suffix = ".db" if url.backend == "sqlite" else ".dump"
    tenant = current_tenant()
    stem = f"tenant-{tenant.name}-{label}{_stamp()}" if tenant is not None else f"{url.name}-{label}{_stamp()}"
    if path is None:
        names = _names(default_backup_dir(), stem, suffix)
        return names[0], names
    target = Path(path).expanduser()
    if target.is_dir() or str(path).endswith(("/", os.sep)):
        names = _names(target, stem, suffix)
        return names[0], names
    check_output(target, what=f"the backup path {target}")
    try:
        make_private_dirs(target.parent)
    except OSError as exc:
        raise BackupError(
            f"cannot create the folder {target.parent}: {exc.strerror}", hint="choose a writable --backup-path"
        ) from exc
    return target, None


# -- backup -----------------------------------------------------------------------------------
def backup(path: str | os.PathLike | None = None, *, progress: Progress | None = None, label: str = "") -> BackupResult:
    """Write a consistent backup of the bound database while it stays in use.

    SQLite: SQLite's online backup API from one read snapshot. PostgreSQL: ``pg_dump -Fc``.
    Either way it goes to a temporary file in the target folder, is verified, then renamed
    into place with mode 0600. ``path`` is a file or a folder (default: ``default_backup_dir()``,
    named ``<database>-<UTC time>.db``/``.dump``). ``progress(done, total)`` is called with
    SQLite pages as the copy advances.

    Example: ``backup().path`` -> ``backups/pfdb-20261126T143000Z.db``
    """
    settings = get_settings()
    url = settings.database_url
    database = get_database()
    if url.is_memory:
        raise BackupError(
            "an in-memory database cannot be backed up", hint="use a file: DATABASE_URL=sqlite:///pfdb.db"
        )
    if url.backend == "sqlite":
        require_sqlite_file(url)  # before any folder is made for a backup of nothing
    else:
        # pg_dump sets search_path and more for its session before its snapshot transaction.
        dump_url = settings.session_url("pfdb backup (pg_dump)")
    start = time.monotonic()
    started = time.time()
    try:
        target, names = _target(path, label)
        # Leftovers of backups killed before they finished (their writer is gone): removed here.
        leftovers = _files.sweep(target.parent, started=started)
        tmp = _files.temp_for(target)  # mode 0600
    except OSError as exc:
        where = exc.filename or path or default_backup_dir()
        raise BackupError(
            f"cannot write a backup to {where}: {exc.strerror}", hint="choose a writable --backup-path"
        ) from exc
    try:
        if url.backend == "sqlite":
            migration = _sqlite_tools.backup(url.path, tmp, timeout=settings.pool_timeout, progress=progress)
        else:
            with _connection(database):
                tenant = current_tenant()
                _pg_tools.backup(database, dump_url, tmp, schema=tenant.schema if tenant is not None else None)
                migration = _pg_tools.last_migration(tmp, dump_url, database, BackupError)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, FILE_MODE)
        # Nothing carries the final name until the file is whole: a chosen name is replaced,
        # a generated one is linked to the first free candidate (never an empty placeholder).
        target = _files.claim(tmp, target) if names is None else _files.claim_free(tmp, names)
    except BaseException:
        tmp.unlink(missing_ok=True)
        Path(f"{tmp}-journal").unlink(missing_ok=True)
        raise
    return BackupResult(
        path=target,
        backend=url.backend,
        size=target.stat().st_size,
        duration=time.monotonic() - start,
        migration=migration,
        leftovers=tuple(str(p) for p in leftovers),
    )


_connection = borrow_connection


# -- restore ----------------------------------------------------------------------------------
def _require_file(source: Path) -> None:
    if not source.exists():
        raise RestoreError(f"backup file {source} does not exist", hint="pass the path pfdb backup printed")
    if not source.is_file():
        raise RestoreError(f"{source} is not a file", hint="pass the path of one backup file")
    if any(same_file(source, live) for live in database_files()):
        raise UnsafePathError(
            f"{source} is the live database itself, not a backup of it", hint="pass a file written by pfdb backup"
        )


def _recognise(source: Path, history: list[str], tables: set[str]) -> None:
    """Refuse a file that is not recognisably a pfdb backup, before anything is touched.

    Its history must start at pfdb's first migration, and it must hold pfdb's tables: every
    table the migrations it records create. A backup from newer code (migrations this code
    lacks, reported as ``unknown``) may have dropped or added tables, so then one pfdb table
    is enough; tables no migration here creates are allowed alongside pfdb's own.
    """
    from .migrations import HISTORY_TABLE, migration_names, schema_tables

    names = migration_names()
    refuse = "pass a file written by pfdb backup"
    if not history:
        raise RestoreError(
            f"{source} is not a pfdb backup: its {HISTORY_TABLE} table records no migration", hint=refuse
        )
    if names and history[0] != names[0]:
        raise RestoreError(
            f"{source} is not a pfdb backup: its migration history starts at {history[0]!r}, pfdb's at {names[0]!r}",
            hint=refuse,
        )
    ours = schema_tables() & tables
    if not ours:
        others = sorted(tables - {HISTORY_TABLE})
        raise RestoreError(
            f"{source} is not a pfdb backup: it holds none of pfdb's tables"
            + (f" (it has {', '.join(others[:5])})" if others else ""),
            hint=refuse,
        )
    if all(name in names for name in history):
        missing = sorted(schema_tables(history) - tables)
        if missing:
            raise RestoreError(
                f"{source} is not a whole pfdb backup: it lacks the tables {', '.join(missing)} "
                f"that its migrations create",
                hint=refuse,
            )


def _inspect(source: Path) -> tuple[str | None, set[str]]:
    """Prove ``source`` a whole pfdb backup for the bound backend; (last migration, tables). Read-only."""
    url = get_settings().database_url
    if url.backend == "sqlite":
        migration = _sqlite_tools.inspect_backup(source)
        history, tables = _sqlite_tools.contents(source)
    else:
        database = get_database()
        with _connection(database):
            tenant = current_tenant()
            history, tables = _pg_tools.inspect_backup(
                source, url, database, schema=tenant.schema if tenant is not None else None
            )
            migration = history[-1] if history else None  # one read of the dump's history, not two
    _recognise(source, history, tables)
    return migration, tables


@writes_to_primary("pfdb restore")
def restore(path: str | os.PathLike) -> RestoreResult:
    """Replace the bound database's contents with a backup, all at once.

    Nothing is touched until the file is proven whole and a pfdb backup of the right kind
    (its history starts at pfdb's first migration and it holds pfdb's tables);
    then a safety backup of the current data is written (``result.safety_backup``) and the
    backup is restored: on SQLite through the backup API into the live database (one write
    transaction), on PostgreSQL with ``pg_restore --single-transaction``. Pending migrations
    are applied afterwards when ``MIGRATION_AUTO_UPGRADE`` is on.

    Raises ``RestoreError`` with the current database unchanged.
    Example: ``restore("backups/pfdb-20261126T143000Z.db").migration``
    """
    from .migrations import migrate, status

    settings = get_settings()
    url = settings.database_url
    database = get_database()
    source = Path(path).expanduser()
    _require_file(source)
    if url.is_memory:
        raise RestoreError(
            "cannot restore into an in-memory database", hint="use a file: DATABASE_URL=sqlite:///pfdb.db"
        )
    if database.in_transaction():
        raise RestoreError("cannot restore inside a transaction", hint="call restore() outside db_session_scope()")
    if url.backend == "postgresql":
        # pg_restore's script sets search_path for the session (set_config(…, false)): through
        # a transaction pooler that setting would stay on a server connection other clients get.
        restore_url = settings.session_url("pfdb restore (pg_restore and psql)")
    start = time.monotonic()
    dropped: tuple[str, ...] = ()
    migration, dump_tables = _inspect(source)
    if url.backend == "sqlite":
        safety = backup(label="pre-restore-")
        # pfdb's own connection of this thread is closed so the restore's write lock is not
        # waiting on it; it reopens (and sees the restored data) on next use.
        if not database.is_closed():
            database.close()
        _sqlite_tools.restore(source, url.path, timeout=settings.pool_timeout)
    else:
        safety = backup(label="pre-restore-")
        with _connection(database):
            extra = _pg_tools.current_tables(database) - dump_tables
            dropped = tuple(sorted(extra))  # dropped inside the restore's own transaction
        # Close the whole pool first: an idle pooled connection is harmless, but one left in
        # a transaction holds locks that would make pg_restore's DROP TABLE wait (and then
        # fail on lock_timeout); and the pool must not hand out sessions that cached plans
        # of the tables about to be dropped and recreated.
        if hasattr(database, "close_all"):
            database.close_all()
        tenant = current_tenant()
        _pg_tools.restore(
            source,
            restore_url,
            database,
            lock_timeout=settings.pool_timeout,
            drop=extra,
            schema=tenant.schema if tenant is not None else None,
        )
    # Written by the backup API or pg_restore, which pfdb's statements never see: forget it all.
    cache.invalidate()
    state = status()
    migrated: tuple[str, ...] = ()
    if state.pending and settings.migration_auto_upgrade:
        migrated = migrate(backup=False).applied  # the safety copy is already on disk
        state = status()
    return RestoreResult(
        path=source,
        backend=url.backend,
        migration=migration,
        safety_backup=safety,
        pending=state.pending,
        migrated=migrated,
        dropped=dropped,
        duration=time.monotonic() - start,
        unknown=state.unknown,
    )


# -- info and optimize ------------------------------------------------------------------------
def _size(database: Any) -> int:
    url = get_settings().database_url
    if url.backend == "sqlite":
        sizes = _sqlite_tools.file_sizes(url.path) if not url.is_memory else {"file_size": 0, "wal_size": 0}
        return sizes["file_size"] + sizes["wal_size"]
    return _pg_tools.database_size(database)


def info() -> InfoResult:
    """What the bound database is: version, sizes, settings, row counts, migrations, pool.

    Example: ``info().tables["products"]``
    """
    from .migrations import status

    settings = get_settings()
    url = settings.database_url
    database = get_database()
    with _connection(database):
        if url.backend == "sqlite":
            details = _sqlite_tools.info(database, None if url.is_memory else url.path)
            size, wal = details["file_size"], details["wal_size"]
        else:
            details = _pg_tools.info(database)
            size, wal = details["database_size"], None
    state = status()
    migrations = {
        "current": state.current,
        "applied": [m.name for m in state.applied],
        "pending": list(state.pending),
        "up_to_date": state.up_to_date,
    }
    pool = None  # SQLite has no pool: its busy timeout is among the settings (busy_timeout)
    if url.backend == "postgresql":
        pool = {
            "pool_size": settings.pool_size,
            "max_overflow": settings.max_overflow,
            "max_connections": settings.max_connections,
            "pool_timeout": settings.pool_timeout,
            "pool_recycle": settings.pool_recycle,
            "pooler": settings.pooler,  # DATABASE_POOLER: docs/pgbouncer.md
            "direct_url": settings.direct_url.masked if settings.direct_url else None,
        }
        if hasattr(database, "pool_usage"):
            pool.update(database.pool_usage())
    return InfoResult(
        backend=url.backend,
        database=url.masked,
        path=details.get("path"),
        server_version=str(details["server_version"]),
        size=size,
        wal_size=wal,
        settings=details["settings"],
        tables=details["tables"],
        migrations=migrations,
        pool=pool,
        cache=cache.status(),
        replicas=replica_report() if url.backend == "postgresql" else None,
    )


@writes_to_primary("pfdb optimize")
def optimize() -> OptimizeResult:
    """SQLite: ANALYZE, PRAGMA optimize, VACUUM, WAL checkpoint. PostgreSQL: VACUUM (ANALYZE).

    Needs a connection with no transaction open (VACUUM cannot run inside one).
    Example: ``optimize().size_after``
    """
    url = get_settings().database_url
    database = get_database()
    if database.in_transaction():
        raise UsageError(
            "optimize cannot run inside a transaction (VACUUM refuses to)",
            hint="call optimize() outside db_session_scope()",
        )
    start = time.monotonic()
    with _connection(database):
        before = _size(database)
        steps = _sqlite_tools.optimize(database) if url.backend == "sqlite" else _pg_tools.optimize(database)
        after = _size(database)
    return OptimizeResult(
        backend=url.backend, steps=tuple(steps), size_before=before, size_after=after, duration=time.monotonic() - start
    )


def human_size(size: int | None) -> str:
    """``147456`` -> ``"144.0 KiB"``: for people; ``as_dict()`` keeps bytes."""
    if size is None:
        return "-"
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"  # pragma: no cover


def check_backup(path: str | os.PathLike) -> str | None:
    """Validate a backup file for the bound database without changing anything.

    Returns the last migration it contains; raises ``RestoreError`` naming what is wrong.
    Example: ``check_backup("backups/pfdb-20261126T143000Z.db")`` -> ``"001_initial"``
    """
    source = Path(path).expanduser()
    _require_file(source)
    return _inspect(source)[0]
