"""Schema migrations: status, migrate, rollback, create, check. The only importer of peewee_migrate.

peewee-migrate supplies the migration file format, the ``Migrator`` operations and the
model diff. pfdb runs the files itself, because deploys need what its router lacks: each
migration in one transaction with its history row and its validation hook, a lock so
that replicas starting together apply every migration exactly once, and clear errors.

Locking: each step opens its transaction by taking the lock *before* it reads the history,
so a waiting process re-reads the history after the winner committed and finds nothing to
do. On PostgreSQL the lock is a transaction-level advisory lock (it works behind PgBouncer
in transaction pooling mode, see ``_step``); on SQLite it is ``BEGIN IMMEDIATE``.
"""

from __future__ import annotations

import datetime as dt
import functools
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import CodeType
from typing import Any

from . import hooks
from ._peewee import peewee as pw
from ._peewee import psycopg2_hidden
from .config import migrations_dir_setting
from .database import backend, borrow_connection, current_tenant, get_database, get_settings, writes_to_primary
from .errors import (
    ConfigError,
    DatabaseBusyError,
    DestructiveRollbackError,
    MigrationBlockedError,
    MigrationError,
    MigrationLockTimeout,
)
from .models import MODELS
from .models.fields import UTC

HISTORY_TABLE = "migratehistory"  # peewee-migrate's own, so its CLI still reads our history; named only here
DEFAULT_LOCK_TIMEOUT = 600.0
_FILE = re.compile(r"^(\d{3})_[^.]+\.py$")
# An arbitrary, fixed 64-bit key: every pfdb process on one server contends for it.
_PG_LOCK_KEY = 0x70666462_6D696772  # "pfdbmigr"
_PG_TENANT_LOCK_CLASS = 0x70666474  # "pfdt": with the schema's hash, one lock per tenant
# A migration whose DDL met MIGRATION_LOCK_TIMEOUT is tried again this many times, after
# LOCK_BACKOFF seconds, doubled each time: the blocker may end meanwhile, and in the pauses
# the traffic queued behind the DDL runs.
LOCK_RETRIES = 3
LOCK_BACKOFF = 0.5
# A contract step says so in its file, on a line of its own (read as text: see is_contract_step).
_CONTRACT_LINE = re.compile(r"^CONTRACT\s*=\s*True\b", re.MULTILINE)


# -- results ------------------------------------------------------------------------------
@dataclass(frozen=True)
class AppliedMigration:
    name: str
    applied_at: dt.datetime | None


@dataclass(frozen=True)
class MigrationStatus:
    """Where the database stands against the migration files."""

    database: str
    applied: tuple[AppliedMigration, ...]
    pending: tuple[str, ...]
    drift: tuple[str, ...] | None = None  # None: not checked
    unknown: tuple[str, ...] = ()  # applied in the database, no file for it
    contract_pending: tuple[str, ...] = ()  # the pending migrations that are contract steps

    @property
    def current(self) -> str | None:
        return self.applied[-1].name if self.applied else None

    @property
    def up_to_date(self) -> bool:
        return not self.pending

    @property
    def phase(self) -> str:
        """Where a blue-green deploy stands: ``expand applied, 1 contract step waiting``."""
        if not self.pending:
            return "up to date"
        contract = len(self.contract_pending)
        steps = f"{contract} contract step{'s' if contract != 1 else ''}"
        if self.pending[0] in self.contract_pending:
            return f"expand applied, {steps} waiting (pfdb migrate --contract)"
        expand = self.pending.index(self.contract_pending[0]) if contract else len(self.pending)
        pending = f"{expand} expand step{'s' if expand != 1 else ''} pending"
        return f"{pending}, then {steps}" if contract else pending

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "current": self.current,
            "applied": [
                {"name": m.name, "applied_at": m.applied_at.isoformat() if m.applied_at else None} for m in self.applied
            ],
            "pending": list(self.pending),
            "unknown": list(self.unknown),
            "up_to_date": self.up_to_date,
            "drift": None if self.drift is None else list(self.drift),
            "phase": self.phase,
            "contract_pending": list(self.contract_pending),
        }


@dataclass(frozen=True)
class MigrateResult:
    applied: tuple[str, ...]
    fake: bool = False
    dry_run: bool = False
    sql: tuple[str, ...] = ()  # the statements a dry run executed and rolled back
    backup: Any = None  # BackupResult when a backup was taken first
    contract_waiting: tuple[str, ...] = ()  # not applied: from the first pending contract step on

    def as_dict(self) -> dict[str, Any]:
        """The same keys every time (``sql`` empty unless a dry run, ``backup`` None unless taken)."""
        return {
            "applied": list(self.applied),
            "fake": self.fake,
            "dry_run": self.dry_run,
            "sql": list(self.sql),
            "backup": self.backup.as_dict() if self.backup is not None else None,
            "contract_waiting": list(self.contract_waiting),
        }


@dataclass(frozen=True)
class RollbackResult:
    rolled_back: tuple[str, ...]
    current: str | None
    backup: Any = None  # BackupResult when a backup was taken first
    drops: tuple[str, ...] = ()  # what the rollbacks dropped: "table products", "column products.notes"
    fake: bool = False  # history rows removed, rollback code not run

    def as_dict(self) -> dict[str, Any]:
        """The same keys every time (``backup`` None unless one was taken)."""
        return {
            "rolled_back": list(self.rolled_back),
            "current": self.current,
            "drops": list(self.drops),
            "backup": self.backup.as_dict() if self.backup is not None else None,
            "fake": self.fake,
        }


@dataclass(frozen=True)
class RollbackPlan:
    """What ``rollback(target)`` would undo, newest first, and what that would drop."""

    undo: tuple[str, ...]
    current: str | None  # the last migration left applied
    drops: dict[str, tuple[str, ...]]  # migration -> what its rollback drops; only those that drop

    @property
    def destructive(self) -> bool:
        return bool(self.drops)

    @property
    def summary(self) -> str:
        """One line: ``001_initial would drop table system_logs, … and 6 more``."""
        every = [d for ds in self.drops.values() for d in ds]
        shown = ", ".join(every[:3]) + (f" and {len(every) - 3} more" if len(every) > 3 else "")
        return f"{', '.join(self.drops)} would drop {shown}" if every else f"{', '.join(self.undo)} drops nothing"

    def as_dict(self) -> dict[str, Any]:
        return {
            "undo": list(self.undo),
            "current": self.current,
            "destructive": self.destructive,
            "drops": {name: list(d) for name, d in self.drops.items()},
        }


@dataclass(frozen=True)
class CreateResult:
    name: str | None  # None: nothing changed, nothing written
    path: Path | None
    changes: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path) if self.path else None, "changes": list(self.changes)}


@dataclass(frozen=True)
class DriftReport:
    """What an auto migration would contain; empty means the models match the migrations."""

    changes: tuple[str, ...]

    @property
    def has_drift(self) -> bool:
        return bool(self.changes)

    def as_dict(self) -> dict[str, Any]:
        return {"drift": self.has_drift, "changes": list(self.changes)}


# -- where the files are ------------------------------------------------------------------
def migrations_dir() -> Path:
    """The migration files: ``$PFDB_MIGRATIONS_DIR`` if set, else ``pfdb/_migrations`` in an
    installed wheel, else the checkout's top-level ``migrations/``."""
    override = migrations_dir_setting()
    if override:
        path = Path(override)
        if not path.is_dir():
            raise MigrationError(f"PFDB_MIGRATIONS_DIR {override} is not a folder")
        return path
    package = Path(__file__).resolve().parent
    for candidate in (package / "_migrations", package.parent / "migrations"):
        if candidate.is_dir():
            return candidate
    raise MigrationError("the migrations folder is missing", hint="reinstall pfdb")


def writable_migrations_dir() -> Path:
    """Where ``create()`` writes: ``$PFDB_MIGRATIONS_DIR``, else a checkout's ``migrations/``.

    An installed pfdb reads its migrations from inside site-packages; a new migration written
    there would be lost on the next upgrade and never reach version control, so it is refused.
    """
    if migrations_dir_setting():
        return migrations_dir()
    checkout = Path(__file__).resolve().parent.parent / "migrations"
    if checkout.is_dir():
        return checkout
    raise MigrationError(
        f"pfdb is installed as a package: its migrations are in {migrations_dir()}, where a new one would be lost",
        hint="set PFDB_MIGRATIONS_DIR to your project's migrations folder (a copy of pfdb's), or work in a checkout",
    )


def migration_names(directory: Path | None = None) -> list[str]:
    directory = directory or migrations_dir()
    return sorted(p.stem for p in directory.iterdir() if _FILE.match(p.name))


def resolve_name(target: str, names: Sequence[str]) -> str:
    """``"001"``, ``"1"`` or ``"001_initial"`` -> ``"001_initial"``; a clear error otherwise."""
    target = str(target).strip()
    if target in names:
        return target
    matches = [n for n in names if target.isdigit() and int(n[:3]) == int(target)]
    if len(matches) == 1:
        return matches[0]
    known = ", ".join(names) or "none"
    raise MigrationError(f"unknown migration {target!r}", hint=f"known migrations: {known}")


def is_contract_step(name: str, directory: Path | None = None) -> bool:
    """Whether migration ``name`` is a contract step: its file has the line ``CONTRACT = True``.

    A contract step removes what the previous release still uses (a column, a table), so
    ``migrate()`` stops before it until ``contract=True``. Read from the text, not by running
    the file: ``pfdb status`` shows the phase without loading peewee-migrate.
    """
    path = (directory or migrations_dir()) / f"{name}.py"
    try:
        return bool(_CONTRACT_LINE.search(path.read_text(encoding="utf-8")))
    except OSError:
        return False


def _gate(todo: list[str], directory: Path, contract: bool) -> tuple[list[str], list[str]]:
    """``todo`` split before its first contract step (unless ``contract``): (to apply, waiting)."""
    if contract:
        return todo, []
    for i, name in enumerate(todo):
        if is_contract_step(name, directory):
            return todo[:i], todo[i:]
    return todo, []


@functools.lru_cache(maxsize=128)
def _compiled(source: str, filename: str) -> CodeType:
    """A migration file's code, compiled once per process and text: a run loads each file again
    for every step it replays (1 ms a file; 4 s of the test suite's CPU)."""
    return compile(source, filename, "exec", dont_inherit=True)


def _load(name: str, directory: Path) -> dict[str, Any]:
    path = directory / f"{name}.py"
    try:
        source = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MigrationError(f"cannot read migration {name}: {exc.strerror}") from exc
    scope: dict[str, Any] = {"__file__": str(path), "__name__": f"pfdb_migration_{name}"}
    try:
        exec(_compiled(source, str(path)), scope)
    except Exception as exc:
        raise MigrationError(f"migration {name} cannot be loaded: {type(exc).__name__}: {exc}") from exc
    return scope


# -- history --------------------------------------------------------------------------------
def _parse_time(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError:
            return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _history(database: pw.Database) -> list[AppliedMigration]:
    if not database.table_exists(HISTORY_TABLE):
        return []
    cursor = database.execute_sql(f'SELECT name, migrated_at FROM "{HISTORY_TABLE}" ORDER BY id')
    return [AppliedMigration(name, _parse_time(at)) for name, at in cursor.fetchall()]


def _ensure_history_table(database: pw.Database) -> None:
    _patch_peewee_migrate()
    from peewee_migrate.models import MigrateHistory

    with database.bind_ctx([MigrateHistory]):
        MigrateHistory._meta.table_name = HISTORY_TABLE
        MigrateHistory.create_table(safe=True)


def _record(database: pw.Database, name: str) -> None:
    database.execute_sql(
        f'INSERT INTO "{HISTORY_TABLE}" (name, migrated_at) VALUES (%s, %s)'.replace("%s", database.param),
        (name, dt.datetime.now(UTC).replace(tzinfo=None)),
    )


def _unrecord(database: pw.Database, name: str) -> None:
    database.execute_sql(f'DELETE FROM "{HISTORY_TABLE}" WHERE name = {database.param}', (name,))


# -- peewee-migrate glue --------------------------------------------------------------------
def _patch_peewee_migrate() -> None:
    """Import peewee-migrate (without psycopg2: ~10 ms of ``pfdb status``) and fix its code
    generation where it writes migrations that cannot run."""
    with psycopg2_hidden():
        from peewee_migrate import auto

    # It writes ``rounding=ROUND_HALF_EVEN`` (a bare name, NameError when the migration
    # runs); the value is a plain string constant of the decimal module, so quote it.
    auto.FIELD_TO_PARAMS[pw.DecimalField] = lambda f: {
        "auto_round": f.auto_round,
        "decimal_places": f.decimal_places,
        "max_digits": f.max_digits,
        "rounding": repr(f.rounding),
    }
    # Its generated models keep peewee's legacy naming, so their indexes are named after
    # the class ("category_slug") while playhouse's drop_index and pfdb's models use the
    # table ("categories_slug"): every later diff drops and re-adds unchanged indexes,
    # and a generated drop_index misses the real one. Carry the model's naming over.
    if not getattr(auto.model_to_code, "pfdb_patched", False):
        original = auto.model_to_code

        def model_to_code(model_type, **kwargs):
            code = original(model_type, **kwargs)
            if not model_type._meta.legacy_table_names:
                line = f'table_name = "{model_type._meta.table_name}"'
                code = code.replace(line, f"{line}\n{auto.INDENT * 2}legacy_table_names = False", 1)
            return code

        model_to_code.pfdb_patched = True
        auto.model_to_code = model_to_code


def _migrator_class():
    from peewee_migrate import Migrator

    class PfdbMigrator(Migrator):
        """peewee-migrate's Migrator, able to drop an index beside a partial (ModelIndex) one."""

        def drop_index(self, model, *columns):
            # Its drop_index unpacks every entry of Meta.indexes as (columns, unique) and
            # fails on the ModelIndex objects that partial indexes are; set those aside.
            meta = self.__get_model__(model)._meta
            objects = [i for i in meta.indexes if not isinstance(i, (list, tuple))]
            meta.indexes = [i for i in meta.indexes if isinstance(i, (list, tuple))]
            try:
                return super().drop_index(model, *columns)
            finally:
                meta.indexes.extend(objects)

    return PfdbMigrator


# -- online DDL: indexes built CONCURRENTLY --------------------------------------------------------
class OnlineIndex:
    """An index a migration creates or drops with ``add_index_concurrently``/``drop_index_concurrently``.

    On PostgreSQL pfdb runs it ``CONCURRENTLY`` outside the step's transaction (which
    ``CREATE INDEX CONCURRENTLY`` refuses to run in), so writes to the table go on while it
    is built. Called as a plain operation (SQLite, or inside a dry run's transaction) it is
    the ordinary ``CREATE INDEX``. ``IF [NOT] EXISTS`` makes a retry after a crash harmless.
    """

    def __init__(self, database: Any, action: str, table: str, name: str, columns=(), unique=False, where=None):
        self.database, self.action, self.table, self.name = database, action, table, name
        self.columns, self.unique, self.where = tuple(columns), unique, where
        self.__name__ = f"{action}_index_concurrently"

    def sql(self, *, concurrently: bool) -> str:
        how = " CONCURRENTLY" if concurrently else ""
        if self.action == "drop":
            return f'DROP INDEX{how} IF EXISTS "{self.name}"'
        columns = ", ".join(f'"{c}"' for c in self.columns)
        where = f" WHERE {self.where}" if self.where else ""
        unique = "UNIQUE " if self.unique else ""
        return f'CREATE {unique}INDEX{how} IF NOT EXISTS "{self.name}" ON "{self.table}" ({columns}){where}'

    def __call__(self) -> None:
        self.database.execute_sql(self.sql(concurrently=False))


def add_index_concurrently(migrator: Any, model: Any, *columns: str, unique: bool = False, where: str | None = None):
    """In a migration: create an index without blocking writes (``CREATE INDEX CONCURRENTLY`` on PostgreSQL).

    The migration must hold only such index operations: PostgreSQL cannot build one inside
    a transaction, so pfdb runs them after the step's transaction and records the step
    when they succeeded. If the build fails it leaves an INVALID index; pfdb drops it, so
    the next ``pfdb migrate`` starts clean. SQLite: a plain ``CREATE INDEX``. ``pfdb lint``
    knows this as the safe recipe. Example: ``add_index_concurrently(migrator, "products", "name")``
    """
    migrator.add_index(model, *columns, unique=unique)  # keeps the schema state as add_index does
    op = migrator.__ops__.pop()
    from playhouse.migrate import make_index_name

    table, names = op.args[0], list(op.args[1])
    online = OnlineIndex(migrator.__database__, "create", table, make_index_name(table, names), names, unique, where)
    migrator.__ops__.append(online)


def drop_index_concurrently(migrator: Any, model: Any, *columns: str):
    """In a migration: drop the index on ``columns`` without blocking the table (``DROP INDEX CONCURRENTLY``).

    Like ``add_index_concurrently``, the migration must hold only such operations.
    Example: ``drop_index_concurrently(migrator, "products", "name")`` in a ``rollback``
    """
    migrator.drop_index(model, *columns)
    op = migrator.__ops__.pop()
    migrator.__ops__.append(OnlineIndex(migrator.__database__, "drop", op.args[0], op.args[1]))


def _drop_invalid_index(database: pw.Database, name: str) -> bool:
    """Drop index ``name`` if a failed ``CREATE INDEX CONCURRENTLY`` left it INVALID; True if it did."""
    row = database.execute_sql(
        "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE c.relname = %s AND pg_table_is_visible(c.oid)",
        (name,),
    ).fetchone()
    if row is None or row[0]:
        return False
    database.execute_sql(f'DROP INDEX CONCURRENTLY IF EXISTS "{name}"')
    return True


def _run_outside(name: str, ops: list[OnlineIndex], database: pw.Database, ddl_lock_timeout: float, action: str):
    """The online index operations of step ``name``, each in autocommit; an INVALID leftover is dropped.

    A session-level ``lock_timeout`` bounds their waits (a CONCURRENTLY build waits for every
    older transaction), except behind PgBouncer in transaction mode, where a session setting
    would stay on a server connection other clients use: there they wait as long as it takes
    (their lock blocks no reads or writes).
    """
    if _settings_of(database).transaction_pooled:
        ddl_lock_timeout = 0.0
    if ddl_lock_timeout:
        database.execute_sql(f"SET lock_timeout = '{_milliseconds(ddl_lock_timeout)}ms'")
    try:
        for op in ops:
            if op.action == "create":
                _drop_invalid_index(database, op.name)  # a build killed mid-way (pfdb itself interrupted)
            try:
                database.execute_sql(op.sql(concurrently=True))
            except Exception as exc:
                dropped = op.action == "create" and _drop_invalid_index(database, op.name)
                if _lock_timed_out(exc):
                    raise _LockTimedOut(name) from exc
                left = f"; the INVALID index {op.name} it left was dropped" if dropped else ""
                raise MigrationError(
                    f"{action} {name} failed: {type(exc).__name__}: {_one_line(exc)}{left}; "
                    "the migration is not recorded as applied"
                ) from exc
    finally:
        if ddl_lock_timeout and not database.is_closed():
            database.execute_sql("RESET lock_timeout")


class _NoRows:
    """The cursor of an offline twin: every statement 'succeeds' and returns nothing."""

    rowcount = 0
    lastrowid = None
    description = ()

    def fetchone(self):
        return None

    def fetchall(self):
        return []

    def fetchmany(self, size=None):
        return []

    def __iter__(self):
        return iter(())

    def close(self):
        pass


def _offline_twin(database: pw.Database) -> pw.Database:
    """A database of the same kind that never connects: what a fake run's ``migrate()`` gets.

    peewee-migrate fakes runs by patching peewee's ``Database.execute_sql`` and
    ``Model.select`` process-wide, which would swallow the queries other threads of an
    embedding application make meanwhile. A twin keeps the fake to the migration itself.
    """
    twin = pw.SqliteDatabase(None) if isinstance(database, pw.SqliteDatabase) else pw.PostgresqlDatabase(None)
    twin.execute_sql = lambda *args, **kwargs: _NoRows()
    return twin


def _migrator_for(database: pw.Database, names: Sequence[str], directory: Path):
    """A peewee-migrate ``Migrator`` holding the schema state after ``names``.

    Each migration is run with ``fake=True``: its operations are recorded, not executed,
    and the ``database`` it sees is an offline twin.
    """
    _patch_peewee_migrate()
    migrator = _migrator_class()(database)
    twin = _offline_twin(database)
    for name in names:
        migrate_fn = _load(name, directory).get("migrate")
        if migrate_fn is None:
            continue
        migrate_fn(migrator, twin, fake=True)
        migrator.__ops__ = []
    return migrator


def schema_tables(names: Sequence[str] | None = None) -> set[str]:
    """The tables the migrations ``names`` (default: every migration file) leave behind.

    What restore checks a backup against: its tables must be pfdb's. Tables a migration
    makes with raw SQL are not seen here (peewee-migrate only models ``create_model``).
    """
    directory = migrations_dir()
    names = migration_names(directory) if names is None else list(names)
    return {model._meta.table_name for model in _migrator_for(get_database(), names, directory).orm}


def _diff(database: pw.Database, directory: Path, *, reverse: bool = False) -> list[str]:
    _patch_peewee_migrate()
    from peewee_migrate.auto import diff_many

    migrator = _migrator_for(database, migration_names(directory), directory)
    source = list(migrator.orm)
    models = list(MODELS)
    if reverse:
        return diff_many(source, models, migrator, reverse=True)
    return diff_many(models, source, migrator)


def _cached_drift(database: pw.Database, directory: Path) -> list[str]:
    from . import _drift_cache

    key = _drift_cache.drift_key(MODELS, directory, backend())
    changes = _drift_cache.load(key)
    if changes is None:
        changes = _diff(database, directory)
        _drift_cache.store(key, changes)
    return changes


# -- locking and transactions ---------------------------------------------------------------
def _lock_key() -> tuple[str, tuple]:
    """The migration lock's key: the arguments of the advisory lock functions, and their values.

    A tenant's schema has a lock of its own (two-key form: pfdb's class, the schema's hash),
    so tenants on one server migrate side by side; the main schema keeps the one key.
    """
    tenant = current_tenant()
    if tenant is not None and tenant.schema:
        return "%s, hashtext(%s)", (_PG_TENANT_LOCK_CLASS, tenant.schema)
    return "%s", (_PG_LOCK_KEY,)


class _LockBusy(Exception):
    """Another process holds the migration lock: this attempt's transaction ends, to try again."""


def _try_lock_for_transaction(database: pw.Database) -> None:
    """Take the migration lock until this transaction ends, or raise ``_LockBusy`` at once.

    Trying (not a blocking ``pg_advisory_xact_lock``) so that a run between two of its
    steps takes the lock again at once instead of queueing behind a waiting process. The
    caller ends its transaction before it waits to try again: a waiter that kept it open
    held one of PgBouncer's server connections for as long as the other run took.
    """
    args, key = _lock_key()
    if not database.execute_sql(f"SELECT pg_try_advisory_xact_lock({args})", key).fetchone()[0]:
        raise _LockBusy


def _lock_timeout(timeout: float) -> MigrationLockTimeout:
    return MigrationLockTimeout(
        f"another process held the migration lock for more than {timeout:g} s",
        hint="wait for the other migration to finish, or raise --lock-timeout",
    )


class _Unsettled(Exception):
    """Another process changed the history since this run last read it: let it finish first."""


# How long a run that saw another process's migration commit waits before it looks again.
# Far above the gap between that process's commit and its next step, which it then takes.
_SETTLE_SECONDS = 0.25


@contextmanager
def _step(
    database: pw.Database, timeout: float, expected: list[str] | None = None, ddl_lock_timeout: float = 0.0
) -> Iterator[None]:
    """One migration's transaction, holding the migration lock. On SQLite: foreign keys off
    (table rebuilds must not cascade), the write lock taken first, and a foreign-key check
    before commit.

    PostgreSQL: a *transaction-level* advisory lock, taken first in the step's transaction
    and released by its commit. A session lock held for the whole run is what PgBouncer's
    transaction pooling breaks: the session belongs to the pooler, so the lock would stay
    on a server connection another client then uses (and re-enter it), and the unlock could
    run on a different one. Each step reads the history under the lock, so every migration
    still runs exactly once. ``expected`` is the history this run last saw: when another
    process has moved it meanwhile (its run is between two steps), this step lets go and
    looks again after a pause, so that one run applies a batch and the other waits for it.

    Every table lock the step then waits for is waited for at most ``ddl_lock_timeout``
    (``MIGRATION_LOCK_TIMEOUT``): an ALTER TABLE queued behind a long transaction would
    otherwise hold up every read and write queued behind it, for as long as that lasts.
    """
    if not isinstance(database, pw.SqliteDatabase):
        deadline = time.monotonic() + timeout
        while True:
            try:
                with database.atomic():
                    _try_lock_for_transaction(database)
                    seen = [m.name for m in _history(database)] if expected is not None else None
                    if seen == expected:
                        if ddl_lock_timeout:
                            database.execute_sql(f"SET LOCAL lock_timeout = '{_milliseconds(ddl_lock_timeout)}ms'")
                        yield
                        return
                    raise _Unsettled
            except _LockBusy:
                if time.monotonic() >= deadline:
                    raise _lock_timeout(timeout) from None
                time.sleep(0.1)
            except _Unsettled:
                expected = seen  # proceed once the history stood still for a pause
                if time.monotonic() + _SETTLE_SECONDS >= deadline:
                    raise _lock_timeout(timeout) from None
                time.sleep(_SETTLE_SECONDS)
        return
    database.pragma("foreign_keys", 0)  # only takes effect outside a transaction
    database.pragma("busy_timeout", int(timeout * 1000))
    try:
        try:
            txn = database.atomic("IMMEDIATE")
            txn.__enter__()
        except (pw.OperationalError, DatabaseBusyError) as exc:
            raise MigrationLockTimeout(
                f"another process held the database write lock for more than {timeout:g} s",
                hint="wait for the other migration to finish, or raise --lock-timeout",
            ) from exc
        try:
            yield
            problems = database.execute_sql("PRAGMA foreign_key_check").fetchall()
            if problems:
                table, rowid, parent, _ = problems[0]
                raise MigrationError(
                    f"{len(problems)} rows break a foreign key (first: {table} row {rowid} -> {parent})"
                )
        except BaseException:
            txn.__exit__(*sys.exc_info())
            raise
        else:
            txn.__exit__(None, None, None)
    finally:
        database.pragma("busy_timeout", int(_settings_of(database).pool_timeout * 1000))
        database.pragma("foreign_keys", 1)


def _settings_of(database: pw.Database) -> Any:
    """The settings ``database`` was built with (a rehearsal's scratch copy is not the bound one)."""
    return getattr(database, "pfdb_settings", None) or get_settings()


def _milliseconds(seconds: float) -> int:
    return max(1, round(seconds * 1000))


def _one_line(exc: BaseException) -> str:
    """psycopg2's message ends in a newline and may carry DETAIL/CONTEXT lines: one line of it."""
    return "; ".join(line.strip() for line in str(exc).strip().splitlines() if line.strip())


# -- waiting for table locks (PostgreSQL) -----------------------------------------------------------
class _LockTimedOut(Exception):
    """A step's DDL met lock_timeout; the step was rolled back and may be tried again."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name


def _lock_timed_out(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what it wraps) is PostgreSQL's lock_not_available (55P03)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if getattr(exc, "pgcode", None) == "55P03":
            return True
        exc = exc.__cause__ or exc.__context__
    return False


_BLOCKER = (
    "SELECT pid, state, query, EXTRACT(EPOCH FROM now() - xact_start) FROM pg_stat_activity "
    "WHERE pid = ANY(pg_blocking_pids(%s)) ORDER BY xact_start NULLS LAST LIMIT 1"
)


class _BlockerWatch:
    """Who holds the lock a step waits for, seen from a second connection while it waits.

    Once the lock wait times out, the blocker no longer blocks anyone and
    ``pg_blocking_pids`` cannot name it; so a thread looks while the step waits. It only
    connects when the step has run for a third of the lock timeout: a step that does not
    wait costs a thread, not a connection.
    """

    def __init__(self, database: pw.Database, ddl_lock_timeout: float):
        self.found: tuple | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        url = getattr(database, "pfdb_url", None)
        if isinstance(database, pw.SqliteDatabase) or not ddl_lock_timeout or url is None:
            return
        # Asked of the server: behind PgBouncer the client's own backend pid is the pooler's.
        self._pid = database.execute_sql("SELECT pg_backend_pid()").fetchone()[0]
        self._params = dict(url.driver_params(), dbname=url.database, connect_timeout=5)
        self._delay = min(0.2, ddl_lock_timeout / 3)
        self._interval = max(0.05, min(0.5, ddl_lock_timeout / 5))

    def __enter__(self) -> _BlockerWatch:
        if hasattr(self, "_pid"):
            self._thread = threading.Thread(target=self._watch, name="pfdb-lock-watch", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _watch(self) -> None:
        if self._stop.wait(self._delay):
            return
        import psycopg2

        try:
            conn = psycopg2.connect(**self._params)
        except Exception:
            return  # the fallback in _blocked_error looks after the fact
        try:
            conn.autocommit = True
            with conn.cursor() as cursor:
                while not self._stop.is_set():
                    cursor.execute(_BLOCKER, (self._pid,))
                    row = cursor.fetchone()
                    if row is not None:
                        self.found = row
                    self._stop.wait(self._interval)
        except Exception:
            pass
        finally:
            conn.close()


def _blocked_error(
    name: str, database: pw.Database, watch: _BlockerWatch | None, ddl_lock_timeout: float, attempts: int
) -> MigrationBlockedError:
    """The one-line error for a step that met the lock timeout on every try, naming the blocker."""
    found = watch.found if watch is not None else None
    if found is None:  # not seen while waiting: the oldest transaction holding a table lock here
        try:
            found = database.execute_sql(
                "SELECT a.pid, a.state, a.query, EXTRACT(EPOCH FROM now() - a.xact_start) "
                "FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                "WHERE l.granted AND l.locktype = 'relation' AND a.pid <> pg_backend_pid() "
                "AND a.datname = current_database() AND a.xact_start IS NOT NULL "
                "ORDER BY a.xact_start LIMIT 1"
            ).fetchone()
        except Exception:
            found = None
    waited = f"waited {ddl_lock_timeout:g} s for a lock on each of {attempts} tries"
    if found is None:
        return MigrationBlockedError(
            f"migration {name} {waited}; the blocking session had ended when pfdb looked",
            hint="run pfdb migrate again; raise MIGRATION_LOCK_TIMEOUT to wait longer",
            migration=name,
            attempts=attempts,
        )
    pid, state, query, age = found
    query = " ".join(str(query or "").split())
    shown = query if len(query) <= 120 else query[:117] + "..."
    age_text = f", its transaction open for {float(age):.0f} s" if age is not None else ""
    return MigrationBlockedError(
        f"migration {name} {waited}: blocked by pid {pid} ({state}{age_text}) running {shown!r}; "
        "nothing of it was applied",
        hint=f"let that transaction finish or end it (SELECT pg_terminate_backend({pid})), then run pfdb "
        "migrate again; MIGRATION_LOCK_TIMEOUT sets the wait",
        migration=name,
        pid=int(pid),
        query=query,
        attempts=attempts,
    )


def _backoff(attempt: int) -> float:
    return min(LOCK_BACKOFF * 2 ** (attempt - 1), 30.0)


_connection = borrow_connection


# -- backup before a change: a hook, because backups are not this module's (see set_backup_hook)
BackupHook = Callable[..., Any]


def set_backup_hook(hook: BackupHook | None) -> BackupHook | None:
    """Set what ``migrate()`` and ``rollback()`` call to take a backup first; returns the previous hook.

    ``hook(label=…)`` returns a ``BackupResult``. ``pfdb.lifecycle`` sets ``pfdb.maintenance.backup``
    when pfdb is imported: this module only knows the schema, and must not import the module
    that backs it up (that module reads the schema from here).
    """
    previous, hooks.backup_before_change = hooks.backup_before_change, hook
    return previous


def _take_backup(label: str = "") -> Any:
    if hooks.backup_before_change is None:
        raise MigrationError(
            "a backup before this change was asked for, and no backup function is set",
            hint="pass backup=False, or set one with pfdb.migrations.set_backup_hook()",
        )
    try:
        return hooks.backup_before_change(label=label)
    except ConfigError as exc:  # behind a transaction pooler without DATABASE_DIRECT_URL
        exc.hint = f"{exc.hint}; or skip the backup before a change: MIGRATION_BACKUP_BEFORE_UPGRADE=false"
        raise


def _run_hook(scope: dict[str, Any], hook: str, name: str, database: pw.Database) -> None:
    fn = scope.get(hook)
    if fn is None:
        return
    try:
        ok = fn(database)
    except Exception as exc:
        raise MigrationError(f"{hook} of {name} failed: {exc}; the step was rolled back") from exc
    if ok is False:
        raise MigrationError(f"{hook} of {name} returned False; the step was rolled back")


def _run_step(
    name: str, scope: dict[str, Any], migrator: Any, database: pw.Database, *, down: bool
) -> list[OnlineIndex] | None:
    """Run one step inside its transaction and record it; or, when it builds indexes
    CONCURRENTLY on PostgreSQL, return those to run after the transaction (nothing recorded)."""
    fn_name = "rollback" if down else "migrate"
    fn: Callable | None = scope.get(fn_name)
    action = "rollback of" if down else "migration"
    try:
        if fn is not None:
            fn(migrator, database, fake=False)
            outside = _online_ops(name, migrator, database)
            if outside:
                return outside
            migrator()
    except MigrationError:
        raise
    except Exception as exc:
        if _lock_timed_out(exc):
            raise _LockTimedOut(name) from exc
        raise MigrationError(
            f"{action} {name} failed: {type(exc).__name__}: {_one_line(exc)}; nothing of it was applied"
        ) from exc
    _finish_step(name, scope, database, down=down)
    return None


def _finish_step(name: str, scope: dict[str, Any], database: pw.Database, *, down: bool) -> None:
    """The history row and the validation hook of a step, in its transaction."""
    if down:
        _unrecord(database, name)
    else:
        _record(database, name)
    _run_hook(scope, "validate_rollback" if down else "validate_migrate", name, database)


def _online_ops(name: str, migrator: Any, database: pw.Database) -> list[OnlineIndex]:
    """The operations of a step that must run outside its transaction (PostgreSQL), taken out of ``migrator``."""
    online = [op for op in migrator.__ops__ if isinstance(op, OnlineIndex)]
    if online and len(online) != len(migrator.__ops__):  # refused on SQLite too: it would fail on PostgreSQL
        raise MigrationError(
            f"migration {name} mixes indexes built CONCURRENTLY with other operations; nothing of it was applied",
            hint="move add_index_concurrently()/drop_index_concurrently() into a migration of their own",
        )
    if not online or isinstance(database, pw.SqliteDatabase):
        return []  # SQLite: the plain CREATE INDEX, inside the step's transaction
    migrator.__ops__ = []
    return online


class _Recorder:
    """Collects the SQL a dry run executes (it runs, then everything is rolled back)."""

    # transaction plumbing and peewee-migrate's pragma probes, not the migration's SQL
    HIDDEN = ("SAVEPOINT", "RELEASE", "ROLLBACK", "PRAGMA FOREIGN_KEYS")

    def __init__(self, database: pw.Database):
        self.database, self.statements = database, []

    def __enter__(self):
        real = type(self.database).execute_sql

        def execute_sql(sql, params=None, *args, **kwargs):
            if not sql.lstrip().upper().startswith(self.HIDDEN):
                self.statements.append(sql if not params else f"{sql} -- params: {list(params)!r}")
            return real(self.database, sql, params, *args, **kwargs)

        self.database.execute_sql = execute_sql
        return self

    def __exit__(self, *exc):
        del self.database.execute_sql


class _DryRunDone(Exception):
    pass


# -- the API ----------------------------------------------------------------------------------
def status(*, drift: bool = False) -> MigrationStatus:
    """Applied migrations with their times, pending ones, and (``drift=True``) model drift.

    The drift answer is cached under a hash of the models, the migration files and the
    code that computes it (see ``pfdb._drift_cache``); ``check()`` always recomputes.
    """
    database = get_database()
    directory = migrations_dir()
    names = migration_names(directory)
    with _connection(database):
        applied = _history(database)
    done = {m.name for m in applied}
    pending = tuple(n for n in names if n not in done)
    return MigrationStatus(
        database=get_settings().database_url.masked,
        applied=tuple(applied),
        pending=pending,
        drift=tuple(_cached_drift(database, directory)) if drift else None,
        unknown=tuple(m.name for m in applied if m.name not in set(names)),
        contract_pending=tuple(n for n in pending if is_contract_step(n, directory)),
    )


@writes_to_primary("pfdb migrate")
def migrate(
    target: str | None = None,
    *,
    fake: bool = False,
    dry_run: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    backup: bool | None = None,
    contract: bool = False,
    lock_retries: int = LOCK_RETRIES,
) -> MigrateResult:
    """Apply pending migrations in order, each in its own transaction, up to ``target``.

    ``fake`` records them as applied without running them; ``dry_run`` runs them in a
    transaction that is rolled back and returns the SQL. With ``backup`` (default:
    ``MIGRATION_BACKUP_BEFORE_UPGRADE``) a backup is taken first when anything is pending.
    It stops before the first pending contract step (``CONTRACT = True``; the result's
    ``contract_waiting`` names what waits) unless ``contract``. On PostgreSQL a step whose
    DDL waits longer than ``MIGRATION_LOCK_TIMEOUT`` for a lock is rolled back and tried
    again ``lock_retries`` times, then ``MigrationBlockedError`` names the blocking session.
    ``lock_timeout`` is the wait for another pfdb's migration lock.

    Example: ``migrate()``, ``migrate("002")``, ``migrate(contract=True)``
    """
    database = get_database()
    directory = migrations_dir()
    names = migration_names(directory)
    target_name = resolve_name(target, names) if target else None
    backup_result = None
    if backup is None:
        backup = get_settings().migration_backup_before_upgrade
    with _connection(database):
        todo, waiting = _gate(_todo(database, names, target_name), directory, contract)
        if not todo:
            return MigrateResult(applied=(), fake=fake, dry_run=dry_run, contract_waiting=tuple(waiting))
        if dry_run:
            return _dry_run(database, directory, names, target_name, lock_timeout, contract)
        if backup and not fake and not get_settings().database_url.is_memory and _has_data(database):
            backup_result = _take_backup()
        applied, waiting = apply_pending(
            database,
            directory,
            names,
            target_name,
            fake=fake,
            lock_timeout=lock_timeout,
            contract=contract,
            lock_retries=lock_retries,
        )
    return MigrateResult(applied=tuple(applied), fake=fake, backup=backup_result, contract_waiting=tuple(waiting))


def apply_pending(
    database: pw.Database,
    directory: Path,
    names: list[str],
    target_name: str | None = None,
    *,
    fake: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    contract: bool = False,
    lock_retries: int = LOCK_RETRIES,
) -> tuple[list[str], list[str]]:
    """``migrate()``'s work on ``database`` (the bound one, or a rehearsal's copy): (applied, waiting).

    No backup, no connection handling: the caller holds a connection.
    """
    waiting: list[str] = []

    def pick(done: list[str]) -> str | None:
        nonlocal waiting
        todo, waiting = _gate(_todo(database, names, target_name, done), directory, contract)
        return todo[0] if todo else None

    # Under the lock: concurrent CREATE TABLE IF NOT EXISTS races on PostgreSQL.
    with _step(database, lock_timeout):
        _ensure_history_table(database)
    applied = _run_steps(
        database, directory, pick, down=False, fake=fake, lock_timeout=lock_timeout, lock_retries=lock_retries
    )
    return applied, waiting


def _run_steps(
    database: pw.Database,
    directory: Path,
    pick: Callable[[list[str]], str | None],
    *,
    down: bool,
    fake: bool = False,
    lock_timeout: float,
    lock_retries: int,
) -> list[str]:
    """The machine ``apply_pending`` and ``undo_applied`` share; returns the steps this process ran.

    Each step runs in a transaction of its own under the migration lock; indexes it builds
    ``CONCURRENTLY`` are built after its commit, outside it. A DDL lock timeout is retried
    with back-off, then fails naming the blocker. ``pick(history)`` names the next step, or
    None when there is nothing left; ``fake`` records steps without running them (apply only).
    """
    ddl_lock_timeout = _settings_of(database).migration_lock_timeout
    ran: list[str] = []
    migrator, state = None, None
    seen = [m.name for m in _history(database)]
    tries, watch = 0, None
    while True:
        outside, held, mine = None, False, True
        try:
            try:
                with _step(database, lock_timeout, expected=seen, ddl_lock_timeout=ddl_lock_timeout):
                    done = [m.name for m in _history(database)]
                    name = pick(done)
                    if name is None:
                        break
                    if not fake:
                        if state != done:
                            migrator, state = _migrator_for(database, done, directory), list(done)
                        scope = _load(name, directory)
                        with _BlockerWatch(database, ddl_lock_timeout) as watch:
                            outside = _run_step(name, scope, migrator, database, down=down)
                        held = bool(outside) and _hold_lock_past_commit(database)
                        if down:
                            state.pop()
                        else:
                            state.append(name)
                    else:
                        _record(database, name)
                if outside:
                    with _BlockerWatch(database, ddl_lock_timeout) as watch:
                        _run_outside(name, outside, database, ddl_lock_timeout, "rollback of" if down else "migration")
                    with _step(database, lock_timeout, ddl_lock_timeout=ddl_lock_timeout):
                        recorded = name in [m.name for m in _history(database)]  # see _hold_lock_past_commit
                        mine = recorded if down else not recorded
                        if mine:
                            _finish_step(name, scope, database, down=down)
            finally:
                if held:
                    _release_held_lock(database)
        except _LockTimedOut as exc:
            state = None  # the migrator holds the schema after the failed step: rebuild it
            tries += 1
            if tries > lock_retries:
                raise _blocked_error(exc.name, database, watch, ddl_lock_timeout, tries) from exc
            time.sleep(_backoff(tries))
            continue
        tries = 0
        if mine:
            ran.append(name)
        seen = done[:-1] if down else [*done, name]
    return ran


def _hold_lock_past_commit(database: pw.Database) -> bool:
    """Keep the migration lock while a step's indexes are built outside its transaction.

    The step's transaction-level lock ends with its commit, before the build; a session-level
    lock taken now (re-entrant: this session holds the transaction's) keeps every other pfdb
    out until the step is recorded. Behind PgBouncer in transaction mode a session lock would
    stay on a server connection other clients use, so none is taken there: another process
    may then build the same index meanwhile (``IF NOT EXISTS`` makes it harmless) and the
    step is recorded once, by whichever finishes first.
    """
    if _settings_of(database).transaction_pooled:
        return False
    args, key = _lock_key()
    database.execute_sql(f"SELECT pg_advisory_lock({args})", key)
    return True


def _release_held_lock(database: pw.Database) -> None:
    args, key = _lock_key()
    database.execute_sql(f"SELECT pg_advisory_unlock({args})", key)


def _has_data(database: pw.Database) -> bool:
    """A fresh, empty database needs no backup before its first migration."""
    return database.table_exists(HISTORY_TABLE) and bool(_history(database))


def _todo(database: pw.Database, names: list[str], target: str | None, done: list[str] | None = None) -> list[str]:
    done_set = set(done if done is not None else (m.name for m in _history(database)))
    if target is not None:
        if target in done_set:
            return []
        names = names[: names.index(target) + 1]
    return [n for n in names if n not in done_set]


def _dry_run(database, directory, names, target_name, lock_timeout, contract) -> MigrateResult:
    statements: list[str] = []
    applied: list[str] = []
    waiting: list[str] = []
    try:
        with _step(database, lock_timeout, ddl_lock_timeout=_settings_of(database).migration_lock_timeout):
            done = [m.name for m in _history(database)]
            todo, waiting = _gate(_todo(database, names, target_name, done), directory, contract)
            migrator = _migrator_for(database, done, directory)
            for name in todo:
                scope = _load(name, directory)
                with _Recorder(database) as rec:
                    fn = scope.get("migrate")
                    if fn is not None:
                        fn(migrator, database, fake=False)
                        # Shown, not run: CONCURRENTLY cannot run in the dry run's transaction.
                        for op in _online_ops(name, migrator, database):
                            rec.statements.append(op.sql(concurrently=True))
                        migrator()
                statements.extend(rec.statements)
                applied.append(name)
            raise _DryRunDone
    except _DryRunDone:
        pass
    except MigrationError:
        raise
    except Exception as exc:
        raise MigrationError(f"dry run failed: {type(exc).__name__}: {exc}; nothing was changed") from exc
    return MigrateResult(applied=tuple(applied), dry_run=True, sql=tuple(statements), contract_waiting=tuple(waiting))


# Operations of a rollback that throw data away: playhouse's drop_table and drop_column
# (what remove_model and remove_fields record), and raw SQL that drops or empties.
_DROPPING_SQL = re.compile(r"\b(DROP\s+(TABLE|COLUMN)|TRUNCATE|DELETE\s+FROM)\b", re.IGNORECASE)


def _describe_drops(ops: Sequence[Any]) -> list[str]:
    """What the recorded operations of one rollback would drop, in words."""
    from playhouse.migrate import Operation

    drops: list[str] = []
    for op in ops:
        if isinstance(op, Operation):
            fn = getattr(op.fn, "__name__", "")
            if fn == "drop_table":
                drops.append(f"table {op.args[0]}")
            elif fn == "drop_column":
                drops.append(f"column {op.args[0]}.{op.args[1]}")
            elif fn == "sql" and op.args and _DROPPING_SQL.search(str(op.args[0])):
                drops.append(f"SQL: {' '.join(str(op.args[0]).split())[:80]}")
        elif isinstance(op, pw.SQL):  # what migrator.sql() records on some peewee-migrate versions
            if _DROPPING_SQL.search(op.sql):
                drops.append(f"SQL: {' '.join(op.sql.split())[:80]}")
        elif isinstance(op, OnlineIndex):
            continue  # an index holds no data of its own
        elif getattr(op, "__name__", "") != "create_table":
            # migrator.run(fn): Python code that cannot be looked into, so assume the worst.
            drops.append(f"whatever {_run_target(op)} run by migrator.run() does")
    return drops


def _run_target(op: Any) -> str:
    """The function name behind peewee-migrate's ``lambda: func(*args, **kwargs)``."""
    code, cells = getattr(op, "__code__", None), getattr(op, "__closure__", None) or ()
    try:
        func = dict(zip(code.co_freevars, (c.cell_contents for c in cells), strict=False)).get("func")
    except (AttributeError, ValueError):
        func = None
    return getattr(func, "__name__", None) or getattr(op, "__name__", "a function")


def _rollback_drops(
    database: pw.Database, done: list[str], undo: Sequence[str], directory: Path
) -> dict[str, tuple[str, ...]]:
    """For each migration to undo, what its ``rollback`` would drop (replayed with ``fake=True``)."""
    found: dict[str, tuple[str, ...]] = {}
    twin = _offline_twin(database)
    for name in undo:
        fn = _load(name, directory).get("rollback")
        if fn is None:
            continue
        migrator = _migrator_for(database, done[: done.index(name) + 1], directory)
        try:
            fn(migrator, twin, fake=True)
        except Exception as exc:
            raise MigrationError(
                f"cannot tell what the rollback of {name} does: {type(exc).__name__}: {exc}",
                hint="fix its rollback(); nothing was changed",
            ) from exc
        drops = _describe_drops(migrator.__ops__)
        if drops:
            found[name] = tuple(drops)
    return found


def _plan(database: pw.Database, target: str | None, names: list[str], directory: Path) -> RollbackPlan:
    done = [m.name for m in _history(database)]
    if not done:
        raise MigrationError("there is nothing to roll back: no migration is applied")
    keep = _keep_after_rollback(target, names, done)
    undo = list(reversed(done[len(keep) :]))
    missing = [n for n in undo if n not in names]
    if missing:
        raise MigrationError(f"cannot roll back {missing[0]}: its file is missing from {directory}")
    return RollbackPlan(
        undo=tuple(undo), current=keep[-1] if keep else None, drops=_rollback_drops(database, done, undo, directory)
    )


def rollback_plan(target: str | None = None) -> RollbackPlan:
    """What ``rollback(target)`` would undo and drop, changing nothing (what ``pfdb rollback`` shows before asking).

    Example: ``rollback_plan("zero").drops["001_initial"]`` -> ``("table system_logs", …)``
    """
    database = get_database()
    directory = migrations_dir()
    with _connection(database):
        return _plan(database, target, migration_names(directory), directory)


@writes_to_primary("pfdb rollback")
def rollback(
    target: str | None = None,
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    destructive_ok: bool = False,
    backup: bool | None = None,
    fake: bool = False,
    lock_retries: int = LOCK_RETRIES,
) -> RollbackResult:
    """Undo migrations: the last one, everything after ``target`` (``"001"``), or all (``"zero"``).

    Each is undone in its own transaction; an unknown or not-applied target undoes nothing.
    A rollback that drops a table or column (see ``rollback_plan``) is refused with
    ``DestructiveRollbackError`` unless ``destructive_ok=True``. With ``backup`` (default:
    ``MIGRATION_BACKUP_BEFORE_UPGRADE``) a backup is taken first, as ``migrate()`` does.
    ``fake`` only removes the history rows (the undo of ``migrate(fake=True)``): no rollback
    code runs, nothing is dropped, so it needs no ``destructive_ok`` and takes no backup.
    Lock timeouts on PostgreSQL are retried ``lock_retries`` times, as in ``migrate()``.

    Example: ``rollback("001")``, ``rollback("zero", destructive_ok=True)``, ``rollback(fake=True)``
    """
    database = get_database()
    directory = migrations_dir()
    names = migration_names(directory)
    if fake:
        return _rollback_fake(database, target, names, lock_timeout)
    if backup is None:
        backup = get_settings().migration_backup_before_upgrade
    backup_result = None
    with _connection(database):
        plan = _plan(database, target, names, directory)
        if plan.drops and not destructive_ok:
            raise DestructiveRollbackError(
                f"rolling back {plan.summary}",
                hint="pass destructive_ok=True (pfdb rollback --yes) to confirm; a backup is taken first",
                migration=next(iter(plan.drops)),
                drops=tuple(d for ds in plan.drops.values() for d in ds),
            )
        done = [m.name for m in _history(database)]
        keep = done[: len(done) - len(plan.undo)]
        if plan.undo and backup and not get_settings().database_url.is_memory and _has_data(database):
            backup_result = _take_backup(label="pre-rollback-")
        undone = undo_applied(
            database, directory, keep, plan.undo, lock_timeout=lock_timeout, lock_retries=lock_retries
        )
    drops = tuple(d for name in undone for d in plan.drops.get(name, ()))
    return RollbackResult(
        rolled_back=tuple(undone), current=keep[-1] if keep else None, backup=backup_result, drops=drops
    )


def undo_applied(
    database: pw.Database,
    directory: Path,
    keep: list[str],
    undo: Sequence[str],
    *,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    lock_retries: int = LOCK_RETRIES,
) -> list[str]:
    """``rollback()``'s work on ``database``: undo, newest first, every applied step after ``keep``.

    ``undo`` is what the caller confirmed; a step applied meanwhile by another process is
    refused. Lock timeouts are retried as in ``apply_pending``. Returns what was undone.
    """

    def pick(done: list[str]) -> str | None:
        if len(done) <= len(keep) or done[: len(keep)] != keep:
            return None
        name = done[-1]
        if name not in undo:  # applied by another process since the plan: not confirmed
            raise MigrationError(
                f"{name} was applied while rolling back; it was left as it is",
                hint="run the rollback again to see what it would drop",
            )
        return name

    return _run_steps(database, directory, pick, down=True, lock_timeout=lock_timeout, lock_retries=lock_retries)


def _rollback_fake(database: pw.Database, target: str | None, names: list[str], lock_timeout: float) -> RollbackResult:
    """Remove the history rows ``rollback(target)`` would, newest first, without running any rollback.

    A migration whose file is gone can be unrecorded too: nothing of it is needed.
    """
    undone: list[str] = []
    with _connection(database):
        if not _history(database):
            raise MigrationError("there is nothing to roll back: no migration is applied")
        with _step(database, lock_timeout):
            done = [m.name for m in _history(database)]
            keep = _keep_after_rollback(target, names, done)
            for name in reversed(done[len(keep) :]):
                _unrecord(database, name)
                undone.append(name)
    return RollbackResult(rolled_back=tuple(undone), current=keep[-1] if keep else None, fake=True)


def _keep_after_rollback(target: str | None, names: list[str], done: list[str]) -> list[str]:
    if target is None:
        return done[:-1]
    if str(target).strip().lower() == "zero":
        return []
    name = resolve_name(target, names)
    if name not in done:
        raise MigrationError(f"migration {name} is not applied", hint=f"applied: {', '.join(done)}")
    return done[: done.index(name) + 1]


def check() -> DriftReport:
    """The changes an auto migration would contain now; CI fails on any.

    Example: ``assert not check().has_drift``
    """
    return DriftReport(changes=tuple(_diff(get_database(), migrations_dir())))


_SAFE_NAME = re.compile(r"[^a-z0-9]+")
TEMPLATE = '''"""{name}: {description}

Written by ``pfdb create-migration``; review it before you apply it. ``migrator`` holds
the schema as the earlier migrations left it (``migrator.orm["products"]``); see
peewee-migrate's Migrator for the operations. Optional hooks ``validate_migrate(database)``
and ``validate_rollback(database)`` run after the step, inside its transaction: raise (or
return False) to roll the step back.
"""

import peewee as pw
from peewee_migrate import Migrator


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    {migrate}


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    {rollback}
'''


def create(description: str, *, auto: bool = True, directory: Path | str | None = None) -> CreateResult:
    """Write the next numbered migration, e.g. ``002_add_product_weight.py``.

    With ``auto`` the body is generated from the model changes, and nothing is written
    when there are none; without it, a template to fill in.

    Example: ``create("add product weight")``
    """
    slug = _SAFE_NAME.sub("_", (description or "").lower()).strip("_")[:60].rstrip("_")
    if not slug:
        raise MigrationError(
            f"migration description {description!r} has no letters or digits",
            hint='describe the change, e.g. pfdb create-migration "add product weight"',
        )
    target_dir = Path(directory) if directory else writable_migrations_dir()
    database = get_database()
    names = migration_names(target_dir)
    number = max((int(n[:3]) for n in names), default=0) + 1
    name = f"{number:03d}_{slug}"
    changes: list[str] = []
    migrate_code = rollback_code = "pass"
    if auto:
        changes = _diff(database, target_dir)
        if not changes:
            return CreateResult(name=None, path=None, changes=())
        migrate_code = _indent(changes)
        rollback_code = _indent(_diff(database, target_dir, reverse=True)) or "pass"
    path = target_dir / f"{name}.py"
    text = TEMPLATE.format(name=name, description=description.strip(), migrate=migrate_code, rollback=rollback_code)
    path.write_text(text, encoding="utf-8")
    return CreateResult(name=name, path=path, changes=tuple(changes))


def _indent(changes: list[str]) -> str:
    code = "\n\n".join(changes)
    return re.sub(r"[ \t]+$", "", "\n    ".join(code.split("\n")), flags=re.MULTILINE).strip()


@dataclass(frozen=True)
class InitResult:
    database: str
    backend: str
    created: bool
    applied: tuple[str, ...]
    current: str | None
    pending: tuple[str, ...]
    backup: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "backend": self.backend,
            "created": self.created,
            "applied": list(self.applied),
            "current": self.current,
            "pending": list(self.pending),
            "backup": self.backup,
        }


def init(url: str | None = None, **overrides: Any) -> InitResult:
    """Create the database if needed, bind ``pfdb.db`` to it and apply every migration.

    Safe to run again: an up-to-date database is left as it is.
    Example: ``init("sqlite:///shop.db")``
    """
    from .config import load_settings
    from .database import bind_database, ensure_database_exists

    settings = load_settings(url, **overrides)  # read once: .env is not read again to bind
    created = ensure_database_exists(settings)
    database = bind_database(settings=settings)
    with _connection(database):  # one connection: a :memory: database lives only as long as it
        # A database without history serves no previous release: its contract steps wait for no one.
        result = migrate(contract=not _has_data(database))
        state = status()
    return InitResult(
        database=settings.database_url.masked,
        backend=settings.database_url.backend,
        created=created,
        applied=result.applied,
        current=state.current,
        pending=state.pending,
        backup=str(result.backup.path) if result.backup is not None else None,
    )
