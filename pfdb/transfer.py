"""Copying a whole pfdb database to another, on either backend, verified: ``pfdb copy``.

The source is read as one snapshot while it stays live (SQLite: one read transaction;
PostgreSQL: REPEATABLE READ, READ ONLY), a table at a time, streamed in batches: memory
holds one batch, never a table. The target is first brought to the source's schema version
with pfdb's own migrations, then filled in ONE transaction, verified inside it, and only
then committed. So a failure or a kill leaves the target as it was (or, for a new
database, empty; a new SQLite file appears under its name only when complete).

Rows move and are verified in one canonical form, PostgreSQL's COPY text of the row
(``_copy_format``: decimals to their places, times in UTC, JSON in jsonb's spelling).
PostgreSQL writes it itself; SQLite's rows are rendered into it. Verification does not trust
the writer: per table, the row count and an order-independent checksum of those lines are
computed from what was read out of the source and from what the target returns once
written (PostgreSQL's own COPY output of what it stored; SQLite's stored rows rendered
again), and must match. Into PostgreSQL the source's lines are the COPY's input, so a value
it reads differently from how it was rendered (a rounding, a time zone, an escape) is a
difference, not a silent change.

Into PostgreSQL, foreign keys and secondary indexes are dropped for the load and built
again after it, from the catalogue's own definitions, inside the same transaction.
"""

from __future__ import annotations

import io
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import _copy_format, cache
from ._files import process_alive
from ._peewee import peewee as pw
from .config import DatabaseURL, Settings, load_settings, mask_secrets, parse_database_url
from .database import bound_temporarily, ensure_database_exists
from .errors import CopyError, UsageError
from .migrations import HISTORY_TABLE, migrate, migration_names
from .paths import same_file
from .text import first_line, quote_identifier

BATCH_ROWS = 5000
_MASK64 = (1 << 64) - 1

Progress = Callable[[str, int, int], None]  # (table, rows copied, rows in the table)


@dataclass(frozen=True)
class TableCopy:
    """One table's verdict: rows and checksum read from the source, and from the target."""

    table: str
    rows: int
    checksum: str
    target_rows: int
    target_checksum: str

    @property
    def ok(self) -> bool:
        return self.rows == self.target_rows and self.checksum == self.target_checksum

    def as_dict(self) -> dict[str, Any]:
        return {
            "table": self.table,
            "rows": self.rows,
            "checksum": self.checksum,
            "target_rows": self.target_rows,
            "target_checksum": self.target_checksum,
            "ok": self.ok,
        }


@dataclass(frozen=True)
class CopyResult:
    source: str  # masked URLs
    target: str
    migration: str | None  # the schema version both now have
    tables: tuple[TableCopy, ...]
    rows: int
    created: bool  # the target database was created
    backup: str | None  # the target's backup taken before --replace
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "migration": self.migration,
            "tables": [t.as_dict() for t in self.tables],
            "rows": self.rows,
            "created": self.created,
            "backup": self.backup,
            "seconds": round(self.seconds, 3),
        }


# -- each column's kind ---------------------------------------------------------------------------
def _kind(field: pw.Field | None) -> str:
    """How a column's values are written in COPY text (``_copy_format``), from its model field."""
    if field is None:
        return "text"
    if isinstance(field, pw.ForeignKeyField):
        return _kind(field.rel_field)
    if isinstance(field, pw.BooleanField):
        return "bool"
    if isinstance(field, pw.DecimalField):
        return f"decimal.{int(field.decimal_places)}"
    if isinstance(field, (pw.IntegerField, pw.AutoField, pw.BigIntegerField)):
        return "int"
    if isinstance(field, pw.DateTimeField):
        return "datetime"
    if isinstance(field, pw.UUIDField):
        return "uuid"
    from .models.fields import JSONField

    if isinstance(field, JSONField):
        return "json"
    return "text"


class _LineSink(io.TextIOBase):
    """Where ``COPY ... TO STDOUT`` writes: handed on a batch of whole lines at a time."""

    def __init__(self, handle: Callable[[list[str]], None]):
        self.handle = handle
        self.chunks: list[str] = []
        self.carry = ""

    def write(self, data: str) -> int:
        self.chunks.append(data)
        if len(self.chunks) >= BATCH_ROWS:
            self.consume()
        return len(data)

    def consume(self) -> None:
        data = self.carry + "".join(self.chunks)
        self.chunks = []
        cut = data.rfind("\n") + 1  # whole lines only; a row split across writes waits
        self.carry = data[cut:]
        if cut:
            lines = data[:cut].split("\n")
            lines.pop()
            self.handle(lines)

    def finish(self) -> None:
        self.consume()
        if self.carry:
            raise CopyError("the rows could not be read: COPY output ended inside a row")


# -- one side of the copy ------------------------------------------------------------------------
def _pg_params(url: DatabaseURL) -> dict[str, Any]:
    params = url.driver_params()
    params.setdefault("connect_timeout", 10)
    return params


class _Side:
    """A raw connection to one database, opened without the pfdb proxy."""

    def __init__(self, url: DatabaseURL):
        self.url = url
        self.conn: Any = None

    @property
    def sqlite(self) -> bool:
        return self.url.backend == "sqlite"

    def open(self, path: str | None = None) -> _Side:
        try:
            if self.sqlite:
                self.conn = sqlite3.connect(path or self.url.path, isolation_level=None, timeout=30)
                self.conn.execute("PRAGMA foreign_keys = ON")
            else:
                from ._peewee import enable_psycopg2

                enable_psycopg2()
                import psycopg2

                self.conn = psycopg2.connect(dbname=self.url.database, **_pg_params(self.url))
                from ._pg_session import prepare_session

                prepare_session(self.conn)  # UTC and jsonb as text, as pfdb's own pool does
                with self.conn.cursor() as cur:
                    cur.execute("SET DateStyle = 'ISO'")  # the timestamp text _copy_format writes
                self.conn.commit()
        except Exception as exc:
            reason = first_line(exc)
            reason = mask_secrets(reason, self.url)  # the userinfo password and ?password= alike
            raise CopyError(f"cannot open {self.url.masked}: {reason}") from exc
        return self

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def cursor(self):
        return self.conn.cursor()

    def tables(self) -> set[str]:
        cur = self.cursor()
        if self.sqlite:
            cur.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        else:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")
        return {row[0] for row in cur.fetchall()}

    def history(self) -> list[str]:
        if HISTORY_TABLE not in self.tables():
            return []
        cur = self.cursor()
        cur.execute(f'SELECT name FROM "{HISTORY_TABLE}" ORDER BY id')
        return [row[0] for row in cur.fetchall()]

    def columns(self, table: str) -> list[str]:
        cur = self.cursor()
        if self.sqlite:
            cur.execute(f'PRAGMA table_info("{table}")')
            return [row[1] for row in cur.fetchall()]
        cur.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s ORDER BY ordinal_position",
            (table,),
        )
        return [row[0] for row in cur.fetchall()]

    def count(self, table: str) -> int:
        cur = self.cursor()
        cur.execute(f'SELECT COUNT(*) FROM "{table}"')
        return int(cur.fetchone()[0])

    def read_lines(
        self,
        table: str,
        columns: list[str],
        kinds: list[str],
        handle: Callable[[list[str], list[tuple] | None], None],
        *,
        order: str | None = None,
        values: bool = False,
    ) -> None:
        """Hand the table's rows to ``handle`` a batch at a time, each row as its COPY text line.

        PostgreSQL writes the lines itself (``COPY TO``); SQLite's rows are rendered into them
        (``_copy_format.lines_function``) and, when ``values``, handed on beside them.
        """
        column_list = ", ".join(quote_identifier(c) for c in columns)
        order_by = f" ORDER BY {order}" if order else ""
        if not self.sqlite:
            sink = _LineSink(lambda lines: handle(lines, None))
            if order:
                sql = f'COPY (SELECT {column_list} FROM "{table}"{order_by}) TO STDOUT (FORMAT text)'
            else:
                sql = f'COPY "{table}" ({column_list}) TO STDOUT (FORMAT text)'
            self.cursor().copy_expert(sql, sink)
            sink.finish()
            return
        lines = _copy_format.lines_function(kinds)
        cur = self.cursor()
        cur.execute(f'SELECT {column_list} FROM "{table}"{order_by}')
        while True:
            rows = cur.fetchmany(BATCH_ROWS)
            if not rows:
                break
            handle(lines(rows), rows if values else None)
        cur.close()

    def checksum(self, table: str, columns: list[str], kinds: list[str]) -> tuple[int, int]:
        """(rows, summed line hashes) of the table as this database now holds it."""
        found = [0, 0]

        def add(lines: list[str], _: Any) -> None:
            found[0] += len(lines)
            found[1] = (found[1] + _copy_format.sum_lines(lines)) & _MASK64

        self.read_lines(table, columns, kinds, add)
        return found[0], found[1]


# -- the plan --------------------------------------------------------------------------------------
def _plan() -> list[tuple[str, dict[str, pw.Field], str]]:
    """pfdb's tables in an order that satisfies their foreign keys, with each one's row order.

    Categories refer to their parent: copied by level, a parent always comes before its children.
    """
    from .models import MODELS

    plan = []
    for model in pw.sort_models(MODELS):
        meta = model._meta
        order = '"level", "id"' if meta.table_name == "categories" else '"id"'
        plan.append((meta.table_name, {f.column_name: f for f in meta.sorted_fields}, order))
    return plan


def _same_database(source: DatabaseURL, target: DatabaseURL) -> bool:
    if source.backend != target.backend:
        return False
    if source.backend == "sqlite":
        if source.is_memory or target.is_memory:
            return False
        return same_file(Path(source.path).expanduser(), Path(target.path).expanduser())
    return ((source.host or "localhost"), source.port or 5432, source.database) == (
        (target.host or "localhost"),
        target.port or 5432,
        target.database,
    )


def _settings_for(url: str, **overrides: Any) -> Settings:
    """Settings for a URL named on the command line: DATABASE_POOLER and DATABASE_DIRECT_URL
    describe DATABASE_URL, not this one (copy wants direct URLs: docs/pgbouncer.md)."""
    return load_settings(url, pooler="none", direct_url=None, **overrides)


def _bound(url: str):
    """Bind ``pfdb.db`` to a URL named on the command line for pfdb's own migrate and backup.

    The application's replicas, cache and pooler settings describe its DATABASE_URL, not this
    one: a copy target is reached directly, without replicas, and its cache is invalidated as a
    whole at the end (``cache.invalidate_database``).
    """
    return bound_temporarily(
        url, pooler="none", direct_url=None, replica_urls=(), cache_url=None, migration_auto_upgrade=False
    )


# -- the copy ----------------------------------------------------------------------------------
def copy_database(
    source_url: str, target_url: str, *, replace: bool = False, progress: Progress | None = None
) -> CopyResult:
    """Copy every pfdb table and row from ``source_url`` to ``target_url``, verified.

    The target is migrated to the source's schema version first (a missing database or
    SQLite file is created). A target that already holds pfdb data is refused unless
    ``replace``, which backs the target up first. Raises ``CopyError`` (nothing changed in
    the target) when the versions differ, the source has migrations this pfdb does not know,
    or verification fails.

    Example: ``copy_database("sqlite:///shop.db", "postgresql://app@db/shop").rows``
    """
    start = time.monotonic()
    source = parse_database_url(source_url)
    target = parse_database_url(target_url)
    if _same_database(source, target):
        raise UsageError("the source and the target are the same database", hint="copy to another database")
    if source.backend == "sqlite" and not source.is_memory and not Path(source.path).expanduser().is_file():
        raise CopyError(f"there is no database at {source.masked}", hint="check the source URL")
    if source.is_memory or target.is_memory:
        raise UsageError("an in-memory database cannot be copied from or to", hint="use a file")

    known = migration_names()
    src = _Side(source).open()
    try:
        history = src.history()
        if not history:
            raise CopyError(f"{source.masked} has no pfdb schema", hint="check the source URL (pfdb init creates one)")
        unknown = [name for name in history if name not in known]
        if unknown:
            raise CopyError(
                f"the source has migrations this pfdb does not know: {', '.join(unknown)}",
                hint="copy with the pfdb version that wrote it",
            )
        version = history[-1]
        return _copy(src, source, target, target_url, version, replace, progress, start)
    finally:
        src.close()


def _copy(
    src: _Side,
    source: DatabaseURL,
    target: DatabaseURL,
    target_url: str,
    version: str,
    replace: bool,
    progress: Progress | None,
    start: float,
) -> CopyResult:
    created = False
    backup_path: str | None = None
    final_path: Path | None = None
    write_path: str | None = None
    if target.backend == "sqlite":
        final_path = Path(target.path).expanduser().resolve()
        if not final_path.exists():
            # A new file is built beside its final name and renamed into place when verified.
            final_path.parent.mkdir(parents=True, exist_ok=True)
            _remove_leftovers(final_path)
            write_path = str(final_path.parent / f".{final_path.name}.copy-{os.getpid()}.tmp")
            created = True
    else:
        created = ensure_database_exists(_settings_for(target_url))

    migrate_url = f"sqlite:///{write_path}" if write_path else target_url
    dst = _Side(target)
    try:
        dst.open(write_path)
        if write_path:
            os.chmod(write_path, 0o600)  # it will hold password hashes: owner only, like pfdb's own files
        target_history = dst.history()
        if target_history and target_history[-1] != version:
            raise CopyError(
                f"the target is at migration {target_history[-1]} and the source at {version}",
                hint="migrate or roll back one of them so both are at the same version",
            )
        stray = dst.tables() - {name for name, _, _ in _plan()} - {HISTORY_TABLE}
        if not target_history and stray:
            raise CopyError(
                f"the target holds tables that are not pfdb's ({', '.join(sorted(stray)[:5])})",
                hint="copy into an empty database",
            )
        has_data = bool(target_history) and any(dst.count(name) for name, _, _ in _plan() if name in dst.tables())
        if has_data and not replace:
            raise CopyError(
                f"the target {target.masked} already holds pfdb data",
                hint="pass --replace (replace=True) to replace it; a backup of it is taken first",
            )
        dst.close()
        if not target_history:
            with _bound(migrate_url):
                migrate(version, backup=False)
        elif has_data:
            with _bound(target_url):
                from .maintenance import backup

                backup_path = str(backup(label="pre-copy-").path)
        dst.open(write_path)
        tables = _fill(src, dst, replace=has_data, progress=progress)
        dst.close()
        if write_path and final_path is not None:
            os.replace(write_path, final_path)
            write_path = None
    except BaseException:
        dst.close()
        if write_path:
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(write_path + suffix).unlink(missing_ok=True)
        raise
    # The target's rows were written on a connection of the copy's own, after its commit:
    # whatever the cache held for that database (under --replace, its old data) is forgotten.
    cache.invalidate_database(target_url)
    return CopyResult(
        source=source.masked,
        target=target.masked,
        migration=version,
        tables=tuple(tables),
        rows=sum(t.rows for t in tables),
        created=created,
        backup=backup_path,
        seconds=time.monotonic() - start,
    )


def _remove_leftovers(final_path: Path) -> None:
    """Temporary files of an earlier copy to this name whose process is gone."""
    for leftover in final_path.parent.glob(f".{final_path.name}.copy-*.tmp*"):
        pid = leftover.name.split(".copy-", 1)[1].split(".", 1)[0]
        if pid.isdigit() and not process_alive(int(pid)):
            leftover.unlink(missing_ok=True)


def _fill(src: _Side, dst: _Side, *, replace: bool, progress: Progress | None) -> list[TableCopy]:
    """Read the source's snapshot into the target in one transaction, verify, commit."""
    if src.sqlite:
        src.conn.execute("BEGIN")  # deferred: a read snapshot that writers do not wait for
    else:
        src.conn.rollback()  # set_session needs no transaction open; the next query starts the snapshot
        src.conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    try:
        present = src.tables()
        plan = [(name, fields, order) for name, fields, order in _plan() if name in present]
        if dst.sqlite:
            dst.conn.execute("BEGIN IMMEDIATE")
            dst.conn.execute("PRAGMA defer_foreign_keys = ON")
        cur = dst.cursor()
        if replace:
            if dst.sqlite:
                for name, _, _ in reversed(plan):
                    cur.execute(f'DELETE FROM "{name}"')
            else:
                cur.execute("TRUNCATE " + ", ".join(f'"{name}"' for name, _, _ in plan) + " RESTART IDENTITY CASCADE")
        # Indexes and foreign keys are built once after the load rather than row by row during
        # it (a third of the load's time at 100,000 products), in the same transaction.
        rebuild = [] if dst.sqlite else _drop_indexes_and_foreign_keys(cur, [name for name, _, _ in plan])
        results = []
        for name, fields, order in plan:
            columns = src.columns(name)
            kinds = [_kind(fields.get(c)) for c in columns]
            rows, total = _load(src, dst, name, columns, kinds, order, progress)
            target_rows, target_total = dst.checksum(name, columns, kinds)
            results.append(TableCopy(name, rows, f"{total:016x}", target_rows, f"{target_total:016x}"))
        for statement in rebuild:
            cur.execute(statement)
        bad = [t for t in results if not t.ok]
        if bad:
            t = bad[0]
            raise CopyError(
                f"verification failed for table {t.table}: the source has {t.rows} rows "
                f"(checksum {t.checksum}), the target {t.target_rows} (checksum {t.target_checksum}); "
                "nothing was kept"
            )
        if not dst.sqlite:
            _set_sequences(cur, [name for name, fields, _ in plan if "id" in fields])
        dst.conn.commit() if not dst.sqlite else dst.conn.execute("COMMIT")
    except BaseException as exc:
        if dst.conn is not None:
            if dst.sqlite:
                if dst.conn.in_transaction:
                    dst.conn.execute("ROLLBACK")
            else:
                dst.conn.rollback()
        if _driver_error(exc):
            # e.g. a row PostgreSQL cannot read, rows whose foreign keys point nowhere, a lost server
            reason = first_line(exc)
            raise CopyError(
                f"the copy failed: {reason}; nothing was kept",
                hint="if the target refused rows of the source, correct them there and copy again",
            ) from exc
        raise
    finally:
        if src.sqlite:
            if src.conn.in_transaction:
                src.conn.execute("COMMIT")
        else:
            src.conn.rollback()
    return results


def _driver_error(exc: BaseException) -> bool:
    """sqlite3's or psycopg2's own errors (psycopg2 is imported only for PostgreSQL)."""
    return isinstance(exc, sqlite3.Error) or type(exc).__module__.partition(".")[0] == "psycopg2"


def _load(
    src: _Side, dst: _Side, table: str, columns: list[str], kinds: list[str], order: str, progress: Progress | None
) -> tuple[int, int]:
    """Stream one table from the source into the target; return (rows, summed line hashes) as read.

    The source's rows arrive as COPY text lines: their hashes are the source's checksum, and
    into PostgreSQL the same lines are the COPY's input. SQLite is given values: the source's
    own (read beside the lines) or, from PostgreSQL, each line's fields read back.
    """
    total_rows = src.count(table)
    found = [0, 0]

    def count(lines: list[str]) -> None:
        found[0] += len(lines)
        found[1] = (found[1] + _copy_format.sum_lines(lines)) & _MASK64
        if progress is not None:
            progress(table, found[0], total_rows)

    if not dst.sqlite:
        with _CopyInThread(dst, table, columns) as writer:

            def copy_in(lines: list[str], _: Any) -> None:
                writer.put("\n".join(lines) + "\n")
                count(lines)

            src.read_lines(table, columns, kinds, copy_in, order=order)
        return found[0], found[1]

    marks = ", ".join("?" for _ in columns)
    insert = f'INSERT INTO "{table}" ({", ".join(quote_identifier(c) for c in columns)}) VALUES ({marks})'
    readers = [_copy_format.from_copy_text(kind) for kind in kinds]

    def insert_rows(lines: list[str], values: list[tuple] | None) -> None:
        if values is None:  # PostgreSQL's COPY text: each field read back as SQLite stores it
            values = [tuple([f(v) for f, v in zip(readers, line.split("\t"), strict=True)]) for line in lines]
        dst.conn.executemany(insert, values)
        count(lines)

    src.read_lines(table, columns, kinds, insert_rows, order=order, values=src.sqlite)
    return found[0], found[1]


class _CopyInThread:
    """One ``COPY ... FROM STDIN`` per table, run in a thread that is fed batches of COPY text.

    psycopg2 releases the GIL while it sends and while PostgreSQL parses and inserts, so the
    next source batch is read, hashed and encoded meanwhile. The queue holds one batch: memory
    stays at a few batches. An error in either thread stops both before the transaction is
    rolled back; the connection is never used by two threads at once.
    """

    def __init__(self, dst: _Side, table: str, columns: list[str]):
        column_list = ", ".join(quote_identifier(c) for c in columns)
        self.sql = f'COPY "{table}" ({column_list}) FROM STDIN (FORMAT text)'
        self.cursor = dst.cursor()
        self.queue: queue.Queue[str] = queue.Queue(maxsize=1)
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=f"pfdb-copy-{table}", daemon=True)

    def _run(self) -> None:
        try:
            self.cursor.copy_expert(self.sql, self, size=1 << 20)
        except BaseException as exc:  # handed to the main thread
            self.error = exc

    def read(self, size: int = -1) -> str:
        """psycopg2 reads the COPY data here: the next batch, or '' at the end of the table."""
        return self.queue.get()

    def put(self, text: str) -> None:
        while self.thread.is_alive():
            try:
                self.queue.put(text, timeout=0.1)
                return
            except queue.Full:
                continue
        self._raise()
        raise CopyError("the COPY into the target ended early")

    def _raise(self) -> None:
        if self.error is not None:
            raise self.error

    def __enter__(self) -> _CopyInThread:
        self.thread.start()
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        # '' ends the COPY; on an error the whole transaction is rolled back afterwards anyway.
        while self.thread.is_alive():
            try:
                self.queue.put("", timeout=0.1)
                break
            except queue.Full:
                continue
        self.thread.join()
        if exc_type is None:
            self._raise()


def _drop_indexes_and_foreign_keys(cur: Any, tables: list[str]) -> list[str]:
    """Drop the tables' foreign keys and the indexes that no constraint owns; return the
    statements that recreate them as they were (names and definitions from the catalogue).

    Primary keys and unique constraints stay: foreign keys refer to them, and an id index
    costs little while loading. Run inside the copy's transaction, so a failure or a kill
    rolls the drops back with the rows.
    """
    cur.execute(
        "SELECT format('ALTER TABLE %%s ADD CONSTRAINT %%I %%s', conrelid::regclass, conname, pg_get_constraintdef(oid)), "
        "format('ALTER TABLE %%s DROP CONSTRAINT %%I', conrelid::regclass, conname) "
        "FROM pg_constraint WHERE contype = 'f' AND conrelid = ANY(%s::regclass[]) ORDER BY conname",
        ([quote_identifier(t) for t in tables],),
    )
    foreign_keys = cur.fetchall()
    cur.execute(
        "SELECT pg_get_indexdef(i.indexrelid), format('DROP INDEX %%s', i.indexrelid::regclass) FROM pg_index i "
        "WHERE i.indrelid = ANY(%s::regclass[]) AND NOT EXISTS (SELECT 1 FROM pg_constraint c "
        "WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u', 'x')) ORDER BY i.indexrelid::regclass::text",
        ([quote_identifier(t) for t in tables],),
    )
    indexes = cur.fetchall()
    for _, drop in foreign_keys + indexes:
        cur.execute(drop)
    return [create for create, _ in indexes + foreign_keys]


def _set_sequences(cur: Any, tables: list[str]) -> None:
    """Each id sequence continues after the highest copied id, so the next insert works."""
    for table in tables:
        cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (f'"{table}"',))
        sequence = cur.fetchone()[0]
        if sequence:
            cur.execute(f'SELECT setval(%s, COALESCE((SELECT MAX("id") FROM "{table}"), 0) + 1, false)', (sequence,))
