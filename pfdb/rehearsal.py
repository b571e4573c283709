"""Migration rehearsal (``pfdb migrate --rehearse``): the pending migrations tried on a scratch copy.

"Always test migrations on a copy": this makes the copy, applies the pending migrations one
by one, rolls them back one by one and applies them again, and compares the schema after
each step with what it must be (after a rollback: the schema before that migration; after
the second apply: the schema of the first). Then the copy is dropped, on failure and Ctrl-C
too. The real database is only read: SQLite through the backup API from one read snapshot,
PostgreSQL as the template of ``CREATE DATABASE`` when nobody is connected to it, else
through ``pg_dump | pg_restore``.

The schema is compared in a canonical description per backend (``describe_schema``):
tables; columns with type, NOT NULL and default; indexes; constraints (PostgreSQL) or
foreign keys (SQLite). Column order is not compared: a rollback that adds a dropped column
back adds it at the end, and no query by name notices.
"""

from __future__ import annotations

import dataclasses
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from . import _pg_tools, _sqlite_tools
from ._peewee import peewee as pw
from .config import DatabaseURL, Settings, parse_database_url
from .database import (
    borrow_connection,
    build_database,
    close_whole,
    current_tenant,
    get_database,
    get_settings,
    require_sqlite_file,
    writes_to_primary,
)
from .errors import MigrationError, PfdbError, UsageError
from .migrations import (
    _gate,
    _history,
    apply_pending,
    migration_names,
    migrations_dir,
    undo_applied,
)
from .text import first_line, quote_identifier


@dataclass(frozen=True)
class RehearsalStep:
    """One timed step: ``copy``, ``apply``, ``rollback``, ``reapply`` or ``drop``."""

    action: str
    migration: str | None
    seconds: float
    ok: bool = True
    error: str | None = None
    differences: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "migration": self.migration,
            "seconds": round(self.seconds, 3),
            "ok": self.ok,
            "error": self.error,
            "differences": list(self.differences),
        }


@dataclass(frozen=True)
class RehearsalResult:
    """What the rehearsal did on the copy; ``ok`` is the verdict, ``failed`` names the migration."""

    database: str  # the real one, masked
    backend: str
    copy_method: str | None  # "backup API", "template", "pg_dump"; None: nothing to rehearse
    migrations: tuple[str, ...]
    steps: tuple[RehearsalStep, ...]
    rows: dict[str, dict[str, int]]  # table -> stage -> rows
    contract_waiting: tuple[str, ...] = ()
    copy_removed: bool = True

    @property
    def failed_step(self) -> RehearsalStep | None:
        return next((s for s in self.steps if not s.ok), None)

    @property
    def failed(self) -> str | None:
        step = self.failed_step
        return step.migration if step is not None else None

    @property
    def ok(self) -> bool:
        return self.failed_step is None and self.copy_removed

    def as_dict(self) -> dict[str, Any]:
        step = self.failed_step
        return {
            "ok": self.ok,
            "database": self.database,
            "backend": self.backend,
            "copy_method": self.copy_method,
            "migrations": list(self.migrations),
            "failed": self.failed,
            "error": step.error if step is not None else None,
            "differences": list(step.differences) if step is not None else [],
            "steps": [s.as_dict() for s in self.steps],
            "rows": self.rows,
            "contract_waiting": list(self.contract_waiting),
            "copy_removed": self.copy_removed,
        }


# -- the API -------------------------------------------------------------------------------------
@writes_to_primary("pfdb migrate --rehearse")  # the history and the copy come from the primary
def rehearse(*, contract: bool = False) -> RehearsalResult:
    """Rehearse what ``migrate(contract=contract)`` would apply, on a scratch copy of the bound database.

    Returns a ``RehearsalResult`` (``ok`` False, ``failed`` naming the migration, when a step
    fails or a schema differs). Raises ``MigrationError`` when the copy cannot be made.
    Example: ``assert rehearse().ok``
    """
    tenant = current_tenant()
    if tenant is not None:  # its schema (or file) is bound through the scope, the copy would not be
        raise UsageError(
            f"pfdb migrate --rehearse does not rehearse a tenant's migrations (tenant {tenant.name})",
            hint="rehearse the main database; a tenant's schema has the same migrations",
        )
    real = get_database()
    settings = get_settings()
    directory = migrations_dir()
    names = migration_names(directory)
    with borrow_connection(real):
        done = [m.name for m in _history(real)]
    todo, waiting = _gate([n for n in names if n not in done], directory, contract)
    url = settings.database_url
    if not todo:
        return RehearsalResult(url.masked, url.backend, None, (), (), {}, tuple(waiting))
    steps: list[RehearsalStep] = []
    rows: dict[str, dict[str, int]] = {}
    removed = False
    start = time.monotonic()
    copy = _sqlite_copy(real, settings) if url.backend == "sqlite" else _postgres_copy(real, settings)
    try:
        with copy as (scratch, method):
            steps.append(RehearsalStep("copy", None, time.monotonic() - start))
            with borrow_connection(scratch):
                _run(scratch, directory, names, done, todo, steps, rows)
            close_whole(scratch)
            start = time.monotonic()
    finally:
        removed = copy.removed
    steps.append(RehearsalStep("drop", None, time.monotonic() - start))
    return RehearsalResult(url.masked, url.backend, method, tuple(todo), tuple(steps), rows, tuple(waiting), removed)


def _run(
    scratch: pw.Database,
    directory: Path,
    names: list[str],
    done: list[str],
    todo: list[str],
    steps: list[RehearsalStep],
    rows: dict[str, dict[str, int]],
) -> None:
    """Apply, roll back and apply again, one migration at a time, comparing schemas; stop at the first failure."""
    schemas = [describe_schema(scratch)]  # schemas[i]: after the first i migrations of todo
    _count(scratch, rows, "before")
    for name in todo:
        if not _timed(steps, "apply", name, lambda n=name: apply_pending(scratch, directory, names, n, contract=True)):
            return
        schemas.append(describe_schema(scratch))
    _count(scratch, rows, "applied")
    for i in range(len(todo), 0, -1):
        name, keep = todo[i - 1], done + todo[: i - 1]

        def undo(name=name, keep=keep):
            undo_applied(scratch, directory, keep, [name])

        if not _timed(steps, "rollback", name, undo, expected=schemas[i - 1], scratch=scratch, what="rollback"):
            return
    _count(scratch, rows, "rolled_back")
    for i, name in enumerate(todo, start=1):
        again = lambda n=name: apply_pending(scratch, directory, names, n, contract=True)  # noqa: E731
        if not _timed(steps, "reapply", name, again, expected=schemas[i], scratch=scratch, what="reapply"):
            return
    _count(scratch, rows, "reapplied")


def _timed(
    steps: list[RehearsalStep],
    action: str,
    name: str,
    work: Any,
    *,
    expected: dict | None = None,
    scratch: pw.Database | None = None,
    what: str = "",
) -> bool:
    start = time.monotonic()
    try:
        work()
    except PfdbError as exc:
        steps.append(RehearsalStep(action, name, time.monotonic() - start, ok=False, error=str(exc)))
        return False
    seconds = time.monotonic() - start
    differences: list[str] = []
    if expected is not None and scratch is not None:
        differences = schema_differences(expected, describe_schema(scratch))
    if differences:
        error = (
            f"the rollback of {name} does not undo it: the schema differs from the one before {name}"
            if what == "rollback"
            else f"{name} applied again gives another schema than the first time"
        )
        steps.append(RehearsalStep(action, name, seconds, ok=False, error=error, differences=tuple(differences)))
        return False
    steps.append(RehearsalStep(action, name, seconds))
    return True


def _count(database: pw.Database, rows: dict[str, dict[str, int]], stage: str) -> None:
    for table in sorted(database.get_tables()):
        count = database.execute_sql(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]
        rows.setdefault(table, {})[stage] = int(count)


# -- the scratch copy ------------------------------------------------------------------------------
class _Copy:
    """A context manager yielding ``(scratch database, method)``; ``removed`` says the copy is gone."""

    removed = False

    def __init__(self, make: Any):
        self._make = make

    def __enter__(self) -> tuple[pw.Database, str]:
        self._cm = contextmanager(self._make)()
        return self._cm.__enter__()

    def __exit__(self, *exc: Any) -> Any:
        return self._cm.__exit__(*exc)


def _sqlite_copy(real: pw.Database, settings: Settings) -> _Copy:
    url = settings.database_url

    def make() -> Iterator[tuple[pw.Database, str]]:
        folder = Path(tempfile.mkdtemp(prefix="pfdb-rehearsal-"))
        scratch = None
        try:
            path = folder / "scratch.db"
            if url.is_memory:  # only reachable through its one connection
                import sqlite3

                if real.in_transaction():  # the backup would wait for that transaction forever
                    raise MigrationError(
                        "an in-memory database cannot be rehearsed inside a transaction",
                        hint="call rehearse_migrations() outside db_session_scope()",
                    )
                with borrow_connection(real):
                    target = sqlite3.connect(str(path))
                    try:
                        real.connection().backup(target)
                    finally:
                        target.close()
            else:
                _sqlite_tools.backup(str(require_sqlite_file(url)), path, timeout=settings.pool_timeout)
            scratch = build_database(_scratch_settings(settings, parse_database_url(f"sqlite:///{path}")))
            yield scratch, "backup API"
        finally:
            if scratch is not None and not scratch.is_closed():
                scratch.close()
            shutil.rmtree(folder, ignore_errors=True)
            copy.removed = not folder.exists()

    copy = _Copy(make)
    return copy


def _postgres_copy(real: pw.Database, settings: Settings) -> _Copy:
    # The server itself: behind PgBouncer (DATABASE_DIRECT_URL) the pooler knows no scratch database.
    url = settings.session_url("pfdb migrate --rehearse")
    name = f"{(url.database or 'pfdb')[:40]}_rehearsal_{uuid.uuid4().hex[:10]}"
    target = dataclasses.replace(url, database=name, raw=_with_database(url.raw, name))

    def make() -> Iterator[tuple[pw.Database, str]]:
        import psycopg2

        admin = _admin_connection(url)
        scratch = None
        created = False
        try:
            method = None
            # pfdb's own connections would count as users of the template: this thread's (unless
            # a transaction is open on it) goes back to the pool, and the pool's idle ones close.
            if not real.is_closed() and not real.in_transaction():
                real.close()
            if hasattr(real, "close_idle"):
                real.close_idle()
            with admin.cursor() as cursor:
                if _quiet(cursor, url.database):
                    try:  # a file-level copy: the fastest, but only of a database nobody uses
                        cursor.execute(
                            f"CREATE DATABASE {quote_identifier(name)} TEMPLATE {quote_identifier(url.database)}"
                        )
                        created, method = True, "template"
                    except psycopg2.Error:  # someone connected meanwhile (55006), or another refusal
                        pass  # pg_dump works whoever is connected
                if method is None:
                    # template0: what pg_restore wants (nothing added to template1 is in the way),
                    # and nobody can be connected to it to make CREATE DATABASE fail.
                    # The real database's encoding and locale, so its text sorts and compares alike.
                    cursor.execute(
                        "SELECT pg_encoding_to_char(encoding), datcollate, datctype FROM pg_database WHERE datname = %s",
                        (url.database,),
                    )
                    encoding, collate, ctype = cursor.fetchone()
                    cursor.execute(
                        f"CREATE DATABASE {quote_identifier(name)} TEMPLATE template0 ENCODING %s LC_COLLATE %s LC_CTYPE %s",
                        (encoding, collate, ctype),
                    )
                    created = True
                    with borrow_connection(real):
                        _pg_tools.copy_into(real, url, target, MigrationError)
                    method = "pg_dump"
            scratch = build_database(_scratch_settings(settings, target))
            yield scratch, method
        finally:
            if scratch is not None:
                scratch.close_all()
            if created:
                try:
                    with admin.cursor() as cursor:
                        cursor.execute(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)")
                        cursor.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (name,))
                        copy.removed = cursor.fetchone()[0] == 0
                except psycopg2.Error:
                    copy.removed = False
            else:
                copy.removed = True
            admin.close()

    copy = _Copy(make)
    return copy


def _quiet(cursor: Any, database: str, patience: float = 1.0) -> bool:
    """Whether nobody is connected to ``database``, waiting ``patience`` seconds for connections
    just closed (pfdb's own) to leave: a backend ends a moment after its client hung up.

    CREATE DATABASE … TEMPLATE waits up to 5 s for users of the template to leave, and new
    connections to it wait meanwhile: it is only tried on a database nobody uses.
    """
    deadline = time.monotonic() + patience
    while True:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (database,))
        if cursor.fetchone()[0] == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)


def _admin_connection(url: DatabaseURL) -> Any:
    """An autocommit connection to the server's ``postgres`` database: CREATE/DROP DATABASE run there."""
    import psycopg2

    params = dict(url.driver_params())
    params.setdefault("connect_timeout", 10)
    try:
        conn = psycopg2.connect(dbname="postgres", **params)
    except psycopg2.Error as exc:
        from .config import mask_secrets

        raise MigrationError(
            f"cannot connect to the server's postgres database to make the rehearsal's copy: "
            f"{mask_secrets(first_line(exc), url)}",
            hint="the user needs CREATEDB",
        ) from exc
    conn.autocommit = True
    return conn


def _with_database(raw: str, name: str) -> str:
    parts = urlsplit(raw)
    return urlunsplit(parts._replace(path="/" + quote(name)))


def _scratch_settings(settings: Settings, url: DatabaseURL) -> Settings:
    # Small pool, no auto upgrade, no pooler (the copy is reached directly); the rest (timeouts,
    # lock timeout) as the real database's.
    return dataclasses.replace(
        settings,
        database_url=url,
        pool_size=1,
        max_overflow=2,
        migration_auto_upgrade=False,
        pooler="none",
        direct_url=None,
        replica_urls=(),
    )


# -- the canonical schema --------------------------------------------------------------------------
def describe_schema(database: pw.Database) -> dict[str, dict[str, Any]]:
    """``{table: {"columns": {name: "type NULL|NOT NULL default …"}, "indexes": {name: definition},
    "constraints": {name: definition}}}``: what a rehearsal compares, the same on equal schemas."""
    if isinstance(database, pw.SqliteDatabase):
        return _describe_sqlite(database)
    return _describe_postgres(database)


def _describe_sqlite(database: pw.Database) -> dict[str, dict[str, Any]]:
    schema: dict[str, dict[str, Any]] = {}
    tables = [
        r[0]
        for r in database.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
    ]
    for table in tables:
        quoted = quote_identifier(table)
        columns = {
            name: f"{(kind or '').upper()} {'NOT NULL' if notnull else 'NULL'}"
            + (f" DEFAULT {default}" if default is not None else "")
            + (" PRIMARY KEY" if pk else "")
            for _, name, kind, notnull, default, pk in database.execute_sql(f"PRAGMA table_info({quoted})").fetchall()
        }
        indexes = {}
        for _, index, unique, origin, partial in database.execute_sql(f"PRAGMA index_list({quoted})").fetchall():
            cols = [r[2] for r in database.execute_sql(f"PRAGMA index_info({quote_identifier(index)})").fetchall()]
            sql = database.execute_sql("SELECT sql FROM sqlite_master WHERE name = ?", (index,)).fetchone()
            where = ""
            if partial and sql and sql[0] and " WHERE " in sql[0].upper():
                where = " WHERE " + " ".join(sql[0][sql[0].upper().rindex(" WHERE ") + 7 :].split())
            indexes[index] = f"{'UNIQUE ' if unique else ''}({', '.join(map(str, cols))}){where} [{origin}]"
        constraints = {
            f"fk {src}": f"REFERENCES {parent}({dst}) ON UPDATE {upd} ON DELETE {dele}"
            for _, _, parent, src, dst, upd, dele, _ in database.execute_sql(
                f"PRAGMA foreign_key_list({quoted})"
            ).fetchall()
        }
        schema[table] = {"columns": columns, "indexes": indexes, "constraints": constraints}
    return schema


def _describe_postgres(database: pw.Database) -> dict[str, dict[str, Any]]:
    schema: dict[str, dict[str, Any]] = {}
    for table, column, kind, notnull, default in database.execute_sql(
        "SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull, "
        "pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND a.attnum > 0 AND NOT a.attisdropped"
    ).fetchall():
        entry = schema.setdefault(table, {"columns": {}, "indexes": {}, "constraints": {}})
        entry["columns"][column] = f"{kind} {'NOT NULL' if notnull else 'NULL'}" + (
            f" DEFAULT {default}" if default is not None else ""
        )
    for table, index, definition, valid in database.execute_sql(
        "SELECT t.relname, c.relname, pg_get_indexdef(i.indexrelid), i.indisvalid FROM pg_index i "
        "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_class t ON t.oid = i.indrelid "
        "JOIN pg_namespace n ON n.oid = t.relnamespace WHERE n.nspname = current_schema()"
    ).fetchall():
        if table in schema:
            schema[table]["indexes"][index] = definition + ("" if valid else " INVALID")
    for table, name, definition in database.execute_sql(
        "SELECT t.relname, con.conname, pg_get_constraintdef(con.oid) FROM pg_constraint con "
        "JOIN pg_class t ON t.oid = con.conrelid JOIN pg_namespace n ON n.oid = t.relnamespace "
        "WHERE n.nspname = current_schema()"
    ).fetchall():
        if table in schema:
            schema[table]["constraints"][name] = definition
    return schema


def schema_differences(expected: dict[str, dict[str, Any]], actual: dict[str, dict[str, Any]]) -> list[str]:
    """What ``actual`` has that ``expected`` has not and the reverse, one line each: ``extra index …``."""
    out: list[str] = []
    for table in sorted(set(expected) | set(actual)):
        if table not in actual:
            out.append(f"missing table {table}")
            continue
        if table not in expected:
            out.append(f"extra table {table}")
            continue
        for part, word in (("columns", "column"), ("indexes", "index"), ("constraints", "constraint")):
            want, have = expected[table][part], actual[table][part]
            for item in sorted(set(want) | set(have)):
                where = f"{table}.{item}" if part == "columns" else f"{item} on {table}"
                if item not in have:
                    out.append(f"missing {word} {where}")
                elif item not in want:
                    out.append(f"extra {word} {where}: {have[item]}")
                elif want[item] != have[item]:
                    out.append(f"{word} {where} differs: {want[item]} before, {have[item]} after")
    return out
