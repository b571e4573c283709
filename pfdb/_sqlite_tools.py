"""SQLite backup, restore, info and optimize: the SQLite half of ``pfdb.maintenance``.

Every copy goes through SQLite's online backup API on connections of its own, never a
file copy: a file copy of a WAL database taken while another process writes can miss
the WAL or tear a page, while the backup API reads one consistent snapshot and, in the
other direction, writes the restored pages as one transaction of the live database.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .errors import BackupError, RestoreError
from .migrations import HISTORY_TABLE

HEADER = b"SQLite format 3\x00"
PG_DUMP_MAGIC = b"PGDMP"
PAGES_PER_STEP = 1024  # 4 MiB at the default page size: a progress tick, not a lock hold

Progress = Callable[[int, int], None]  # (pages done, pages in total)


def _last_migration(conn: sqlite3.Connection) -> str | None:
    row = conn.execute(f'SELECT name FROM "{HISTORY_TABLE}" ORDER BY id DESC LIMIT 1').fetchone()
    return row[0] if row else None


def _has_history(conn: sqlite3.Connection) -> bool:
    sql = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
    return conn.execute(sql, (HISTORY_TABLE,)).fetchone() is not None


def _read_only(path: Path) -> sqlite3.Connection:
    """Open a backup file without writing anything beside it (no -wal, no -shm, no lock).

    ``immutable=1`` is right here: a backup is a file nobody else writes.
    """
    return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True, isolation_level=None)


def backup(db_path: str, target: Path, *, timeout: float, progress: Progress | None = None) -> str | None:
    """Copy the live database into ``target`` (an empty file); returns the last migration in it.

    The source connection holds one read transaction across every step, so the copy is the
    snapshot of that instant however many processes write meanwhile (WAL readers do not
    block writers). Without it, a write by another process between two steps would make
    SQLite restart the copy, forever under a steady write load.
    """
    from .database import open_sqlite

    # Read-only, so a backup of a database on a read-only disk works (to a writable place).
    source = open_sqlite(db_path, read_only=True, timeout=timeout)
    dest = sqlite3.connect(str(target), isolation_level=None)
    try:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the snapshot now

        def step(status: int, remaining: int, total: int) -> None:
            if progress is not None:
                progress(total - remaining, total)

        source.backup(dest, pages=PAGES_PER_STEP, progress=step)
        source.execute("COMMIT")
        # A backup is one self-contained file: rollback journal, not WAL (which would
        # need its -wal and -shm companions beside it).
        dest.execute("PRAGMA journal_mode = DELETE")
        problems = [row[0] for row in dest.execute("PRAGMA integrity_check").fetchall()]
        if problems != ["ok"]:
            raise BackupError(
                f"the backup failed its integrity check: {problems[0]}",
                hint="check the disk; the live database may need PRAGMA integrity_check too",
            )
        return _last_migration(dest) if _has_history(dest) else None
    except sqlite3.Error as exc:
        raise BackupError(f"cannot back up {db_path}: {exc}", hint="check free disk space and permissions") from exc
    finally:
        dest.close()
        source.close()


def inspect_backup(path: Path) -> str | None:
    """Check that ``path`` is a whole, sound SQLite file holding a pfdb history.

    Returns the last migration it contains; raises ``RestoreError`` naming what is wrong.
    """
    with path.open("rb") as handle:
        header = handle.read(100)
    if header.startswith(PG_DUMP_MAGIC):
        raise RestoreError(
            f"{path} is a PostgreSQL dump, not a SQLite backup",
            hint="restore it into a PostgreSQL database (DATABASE_URL=postgresql://…)",
        )
    if len(header) < 100 or not header.startswith(HEADER):
        raise RestoreError(
            f"{path} is not a SQLite database (no SQLite header)", hint="pass a file written by pfdb backup"
        )
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    size = path.stat().st_size
    if pages and size < page_size * pages:
        raise RestoreError(
            f"{path} is truncated: {size} bytes of the {page_size * pages} its header announces",
            hint="use an earlier backup; this copy was cut short",
        )
    try:
        conn = _read_only(path)
        try:
            problems = [row[0] for row in conn.execute("PRAGMA integrity_check").fetchall()]
            if problems != ["ok"]:
                raise RestoreError(f"{path} is damaged: {problems[0]}", hint="use an earlier backup")
            if not _has_history(conn):
                raise RestoreError(
                    f"{path} is a SQLite database but not a pfdb backup: it has no {HISTORY_TABLE} table",
                    hint="pass a file written by pfdb backup",
                )
            return _last_migration(conn)
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise RestoreError(f"{path} is damaged or not a database: {exc}", hint="use an earlier backup") from exc


def contents(path: Path) -> tuple[list[str], set[str]]:
    """A backup's migration history (oldest first) and its tables: what restore recognises pfdb by."""
    try:
        conn = _read_only(path)
        try:
            history = [row[0] for row in conn.execute(f'SELECT name FROM "{HISTORY_TABLE}" ORDER BY id')]
            tables = {
                row[0]
                for row in conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
                )
            }
            return history, tables
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise RestoreError(
            f"{path} is not a pfdb backup: its {HISTORY_TABLE} table cannot be read ({exc})",
            hint="pass a file written by pfdb backup",
        ) from exc


def restore(backup_path: Path, db_path: str, *, timeout: float) -> None:
    """Write the backup's pages into the live database in one write transaction.

    Not a file replace: processes that have the database open keep valid file handles,
    and see either the old data (a read that began before) or the restored data, never a
    mix. SQLite bumps the schema cookie, so their cached schema is re-read too.
    """
    source = _read_only(backup_path)
    dest = sqlite3.connect(db_path, timeout=timeout, isolation_level=None)
    try:
        dest.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        source.backup(dest, pages=-1)  # -1: every page in one step, so one transaction
        problems = [row[0] for row in dest.execute("PRAGMA quick_check").fetchall()]
        if problems != ["ok"]:  # pragma: no cover - the source passed integrity_check
            raise RestoreError(f"the restored database fails its check: {problems[0]}")
    except sqlite3.Error as exc:
        raise RestoreError(
            f"cannot restore {backup_path} into {db_path}: {exc}",
            hint="another process may hold the write lock; retry, or stop the writers",
        ) from exc
    finally:
        dest.close()
        source.close()


def file_sizes(db_path: str) -> dict[str, int]:
    """Bytes of the database file and of its WAL (0 when absent)."""

    def size(p: str) -> int:
        try:
            return os.stat(p).st_size
        except FileNotFoundError:
            return 0

    return {"file_size": size(db_path), "wal_size": size(db_path + "-wal")}


def info(database: Any, db_path: str | None) -> dict[str, Any]:
    """SQLite library version, file and WAL sizes, the pragmas in force, row counts."""
    pragmas = {
        name: database.execute_sql(f"PRAGMA {name}").fetchone()[0]
        for name in ("journal_mode", "foreign_keys", "synchronous", "busy_timeout", "page_size", "cache_size")
    }
    tables = [
        row[0]
        for row in database.execute_sql(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"
        )
    ]
    return {
        "server_version": database.execute_sql("SELECT sqlite_version()").fetchone()[0],
        "path": str(Path(db_path).resolve()) if db_path else None,
        **(file_sizes(db_path) if db_path else {"file_size": 0, "wal_size": 0}),
        "settings": pragmas,
        "tables": {t: database.execute_sql(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables},
    }


def optimize(database: Any) -> list[str]:
    """ANALYZE, PRAGMA optimize, VACUUM and a truncating WAL checkpoint; returns the steps run."""
    steps = []
    # ANALYZE refreshes the planner's statistics; PRAGMA optimize then does what the
    # SQLite docs recommend before closing a long-lived connection.
    for sql in ("ANALYZE", "PRAGMA optimize"):
        database.execute_sql(sql)
        steps.append(sql)
    # VACUUM rebuilds the file without free pages; it cannot run inside a transaction,
    # which is why this runs on a connection with no transaction open.
    database.execute_sql("VACUUM")
    steps.append("VACUUM")
    # VACUUM in WAL mode writes the new pages to the WAL: fold them back and truncate it.
    busy, _, _ = database.execute_sql("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    steps.append("PRAGMA wal_checkpoint(TRUNCATE)" + (" (busy: readers kept part of the WAL)" if busy else ""))
    return steps
