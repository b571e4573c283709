"""Copying a whole pfdb database to another, on either backend, verified: ``pfdb copy``.

The source is read as one snapshot while it stays live (SQLite: one read transaction;
PostgreSQL: REPEATABLE READ, READ ONLY), a table at a time, streamed in batches: memory
holds one batch, never a table. The target is first brought to the source's schema version
with pfdb's own migrations, then filled in ONE transaction, verified inside it, and only
then committed. So a failure or a kill leaves the target as it was (or, for a new
database, empty; a new SQLite file appears under its name only when complete).

Verification does not trust the writer: per table, the row count and an order-independent
checksum over a canonical text form of each row (decimals to their places, times as UTC,
JSON re-serialised with sorted keys) are computed from what was read out of the source and
from what the target returns, by the same code, and must match.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import queue
import re
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from . import cache
from ._files import process_alive
from ._peewee import peewee as pw
from .config import DatabaseURL, Settings, load_settings, mask_secrets, parse_database_url
from .errors import CopyError, UsageError
from .feeds.upsert import COPY_ESCAPES as _COPY_ESCAPES
from .migrations import HISTORY_TABLE
from .paths import same_file

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


# -- canonical rows ------------------------------------------------------------------------------
def _kind(field: pw.Field | None) -> tuple[str, Any]:
    if field is None:
        return "text", None
    if isinstance(field, pw.ForeignKeyField):
        return _kind(field.rel_field)
    if isinstance(field, pw.BooleanField):
        return "bool", None
    if isinstance(field, pw.DecimalField):
        return "decimal", Decimal(1).scaleb(-field.decimal_places)
    if isinstance(field, (pw.IntegerField, pw.AutoField, pw.BigIntegerField)):
        return "int", None
    if isinstance(field, pw.DateTimeField):
        return "datetime", None
    if isinstance(field, pw.UUIDField):
        return "uuid", None
    from .models.fields import JSONField

    if isinstance(field, JSONField):
        return "json", None
    return "text", None


_NULL = "\x00"  # never inside a value's text: NULL cannot be confused with any string


def _canonical_datetime(value: Any) -> str:
    if value.__class__ is str and len(value) == 26 and value[10] == " " and value[20:].isdigit():
        return value  # peewee's SQLite form, already canonical: '2026-12-03 14:00:00.123456'
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    return moment.isoformat(" ", timespec="microseconds")


def _canonical_json(value: Any) -> str:
    decoded = json.loads(value) if isinstance(value, str) else value
    return json.dumps(decoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical_fn(kind: str, arg: Any) -> Callable[[Any], str]:
    """How one column's values become text, the same whichever backend or driver returned them.

    Chosen once per column: the checksum calls it for every value of every row.
    """
    if kind == "bool":
        return lambda v: _NULL if v is None else ("1" if v in (True, 1, "1", "t", "true") else "0")
    if kind == "int":
        return lambda v: _NULL if v is None else str(int(v))
    if kind == "decimal":
        spec = f".{-arg.as_tuple().exponent}f"

        def decimal_text(v: Any) -> str:
            if v is None:
                return _NULL
            if v.__class__ is str:
                v = Decimal(v)
            return format(v, spec)  # 19.9 (SQLite REAL) and 19.90 (numeric) both give '19.90'

        return decimal_text
    if kind == "datetime":
        return lambda v: _NULL if v is None else _canonical_datetime(v)
    if kind == "uuid":
        return lambda v: _NULL if v is None else uuid.UUID(str(v)).hex
    if kind == "json":
        return lambda v: _NULL if v is None else _canonical_json(v)
    return lambda v: _NULL if v is None else (v if v.__class__ is str else str(v))


class _Checksum:
    """Row count and the sum (mod 2**64) of each row's 64-bit BLAKE2b: order does not matter."""

    def __init__(self, kinds: list[tuple[str, Any]]):
        self.fns = [_canonical_fn(kind, arg) for kind, arg in kinds]
        self.sum = _row_function(kinds, copy=False)
        self.rows = 0
        self.total = 0

    def add(self, rows: list[tuple]) -> None:
        self.add_sum(self.sum(rows), len(rows))

    def add_sum(self, total: int, rows: int) -> None:
        """A batch's row hashes summed by a ``_row_function`` built from the same kinds."""
        self.total = (self.total + total) & _MASK64
        self.rows += rows

    @property
    def hex(self) -> str:
        return f"{self.total:016x}"


# Per kind, the canonical text of a value ``{v}`` as one inline expression: the common driver
# types take a fast path with no call, anything else (and NULL) goes to the column's own
# ``_canonical_fn`` ``{f}``, so the text is the same as ``_canonical_fn`` would give.
_CANONICAL_INLINE = {
    "text": "({v} if {v}.__class__ is str else {f}({v}))",
    "int": "(str({v}) if {v}.__class__ is int else {f}({v}))",
    "datetime": '({v} if {v}.__class__ is str and len({v}) == 26 and {v}[10] == " " and {v}[20:].isdigit() else {f}({v}))',
}
# The same for the COPY text of a value, falling back to the column's ``_copy_fn`` ``{f}``.
# Text is escaped only when it holds a backslash or a character that is not printable (tab,
# newline, CR are not): the check costs a tenth of ``translate`` on the usual string.
_ESCAPED = (
    "(({v} if {v}.isprintable() and _BS not in {v} else {v}.translate(_E)) if {v}.__class__ is str else {f}({v}))"
)
_COPY_INLINE = {
    "text": _ESCAPED,
    "json": _ESCAPED,
    "uuid": _ESCAPED,
    "int": "(str({v}) if {v}.__class__ is int else {f}({v}))",
    "decimal": "(str({v}) if {v}.__class__ is int else {f}({v}))",
    "datetime": "({v} if {v}.__class__ is str else {f}({v}))",
}


# The canonical text of a field ``{v}`` of PostgreSQL's COPY text output: ``_PN`` (``\\N``) is
# NULL, backslash escapes are undone; then the same fast paths or the column's ``{f}``. A
# timestamptz in a UTC session reads '2026-12-03 14:00:00.123456+00': its first 26 characters
# are what ``_canonical_datetime`` makes of it (other shapes go through it).
_PG_TEXT_INLINE = {
    "text": "(_N if {v} == _PN else _un({v}) if _BS in {v} else {v})",
    "int": "(_N if {v} == _PN else str(int({v})))",
    "datetime": '(_N if {v} == _PN else {v}[:26] if len({v}) == 29 and {v}[26:] == "+00" and {v}[19] == "." else {f}({v}))',
}
_PG_TEXT_DEFAULT = "{f}(None if {v} == _PN else _un({v}) if _BS in {v} else {v})"
_COPY_UNESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_COPY_UNESCAPE_RE = re.compile(r"\\(.)", re.S)


def _copy_unescape(text: str) -> str:
    """A field of COPY's text output as the value it stands for."""
    return _COPY_UNESCAPE_RE.sub(lambda m: _COPY_UNESCAPES.get(m.group(1), m.group(1)), text)


def _pg_text_sum_function(kinds: list[tuple[str, Any]]) -> Callable[[str], tuple[int, int]]:
    """For lines of PostgreSQL's COPY text output: (summed row hashes, rows), by the same
    canonical rules as ``_row_function``, specialised to one table the same way."""
    n = len(kinds)
    names = [f"a{i}" for i in range(n)]
    env: dict[str, Any] = {
        "_N": _NULL,
        "_PN": "\\N",
        "_BS": "\\",
        "_un": _copy_unescape,
        "_h0": hashlib.blake2b(digest_size=8),
        "_from_bytes": int.from_bytes,
    }
    canon = []
    for i, (kind, arg) in enumerate(kinds):
        env[f"f{i}"] = _canonical_fn(kind, arg)
        canon.append(_PG_TEXT_INLINE.get(kind, _PG_TEXT_DEFAULT).format(v=names[i], f=f"f{i}"))
    source = "\n".join(
        [
            "def sum_function(data):",
            "    total = 0",
            '    lines = data.split("\\n")',
            "    lines.pop()",
            "    for line in lines:",
            f'        {", ".join(names)}, = line.split("\\t")',
            f'        text = "\\x1f".join(({", ".join(canon)},))',
            "        h = _h0.copy()",
            '        h.update(text.encode("utf-8", "surrogatepass"))',
            '        total += _from_bytes(h.digest(), "big")',
            "    return total, len(lines)",
        ]
    )
    exec(source, env)  # noqa: S102 - code built above from fixed templates, no input text
    return env["sum_function"]


class _CopyOutSink(io.TextIOBase):
    """Where ``COPY ... TO STDOUT`` writes: hashed a batch of rows at a time, never a table."""

    def __init__(self, checksum: _Checksum, kinds: list[tuple[str, Any]]):
        self.checksum = checksum
        self.sum = _pg_text_sum_function(kinds)
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
            self.checksum.add_sum(*self.sum(data[:cut]))

    def finish(self) -> None:
        self.consume()
        if self.carry:
            raise CopyError("the target's rows could not be read back: COPY output ended inside a row")


def _pg_read_back(dst: _Side, table: str, columns: list[str], checksum: _Checksum, kinds: list) -> None:
    """The target's rows by ``COPY TO STDOUT``: cheaper than a cursor's typed values."""
    sink = _CopyOutSink(checksum, kinds)
    column_list = ", ".join(_q(c) for c in columns)
    dst.cursor().copy_expert(f'COPY "{table}" ({column_list}) TO STDOUT (FORMAT text)', sink)
    sink.finish()


def _row_function(kinds: list[tuple[str, Any]], *, copy: bool) -> Callable[[list[tuple]], Any]:
    """A function specialised to one table's columns: a batch's summed row hashes (and, with
    ``copy``, the batch in COPY's text format, built from the same read of each row).

    Generated once per table so that the per-value work is inline expressions rather than a
    Python call per value, which dominated the copy's time.
    """
    n = len(kinds)
    names = [f"a{i}" for i in range(n)]
    # Each row's 64-bit BLAKE2b starts from a copy of an empty one: the same digest as
    # blake2b(data, digest_size=8), a third cheaper than that call's keyword parsing.
    env: dict[str, Any] = {
        "_E": _COPY_ESCAPES,
        "_BS": "\\",
        "_h0": hashlib.blake2b(digest_size=8),
        "_from_bytes": int.from_bytes,
    }
    canon, encode = [], []
    for i, (kind, arg) in enumerate(kinds):
        env[f"f{i}"] = _canonical_fn(kind, arg)
        canon.append(_CANONICAL_INLINE.get(kind, "{f}({v})").format(v=names[i], f=f"f{i}"))
        env[f"p{i}"] = _copy_fn(kind)
        encode.append(_COPY_INLINE.get(kind, "{f}({v})").format(v=names[i], f=f"p{i}"))
    lines = [
        "def rows_function(rows):",
        "    total = 0",
        "    out = []",
        f"    for {', '.join(names)}, in rows:",
        f'        text = "\\x1f".join(({", ".join(canon)},))',
        "        h = _h0.copy()",
        '        h.update(text.encode("utf-8", "surrogatepass"))',
        '        total += _from_bytes(h.digest(), "big")',
    ]
    if copy:
        lines.append(f'        out.append("\\t".join(({", ".join(encode)},)))')
        lines.append('    return total, "\\n".join(out) + "\\n"')
    else:
        lines.append("    return total")
    exec("\n".join(lines), env)  # noqa: S102 - code built above from fixed templates, no input text
    return env["rows_function"]

    @property
    def hex(self) -> str:
        return f"{self.total:016x}"


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
        except Exception as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
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

    def stream(self, table: str, columns: list[str], order: str) -> Iterator[list[tuple]]:
        """The table's rows in batches; on PostgreSQL through a server-side cursor."""
        sql = f'SELECT {", ".join(_q(c) for c in columns)} FROM "{table}" ORDER BY {order}'
        if self.sqlite:
            cur = self.cursor()
            cur.execute(sql)
        else:
            cur = self.conn.cursor(name=f"pfdb_copy_{table}")
            cur.itersize = BATCH_ROWS
            cur.execute(sql)
        while True:
            rows = cur.fetchmany(BATCH_ROWS)
            if not rows:
                break
            yield rows
        cur.close()


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


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


@contextmanager
def _bound(url: str) -> Iterator[Any]:
    """Bind ``pfdb.db`` to ``url`` for pfdb's migration and backup functions, then put back
    whatever the application had bound: copying must not re-point an embedding application."""
    from . import database as dbmod

    previous, previous_settings = dbmod.main_database(), dbmod._settings
    settings = _settings_for(url, migration_auto_upgrade=False)
    database = dbmod.build_database(settings)
    dbmod.db.initialize(database)
    dbmod._settings = settings
    try:
        with dbmod.bound_tenant(None):  # a caller's tenant scope must not route the copy's migrations
            yield database
    finally:
        if hasattr(database, "close_all"):
            database.close_all()
        elif not database.is_closed():
            database.close()
        dbmod.db.initialize(previous)
        dbmod._settings = previous_settings


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
    from .migrations import migration_names

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
    from .database import ensure_database_exists

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
                from .migrations import migrate

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
        results = []
        for name, fields, order in plan:
            columns = src.columns(name)
            kinds = [_kind(fields.get(c)) for c in columns]
            total = src.count(name)
            encoders = _encoders(kinds, dst.sqlite)
            read = _Checksum(kinds)
            done = 0
            copy_rows = None if dst.sqlite else _row_function(kinds, copy=True)
            with _CopyInThread(dst, name, columns) if copy_rows else _no_writer() as writer:
                for rows in src.stream(name, columns, order):
                    if copy_rows is None:
                        read.add(rows)
                        _write(dst, name, columns, encoders, rows)
                    else:
                        batch_sum, text = copy_rows(rows)
                        read.add_sum(batch_sum, len(rows))
                        writer.put(text)
                    done += len(rows)
                    if progress is not None:
                        progress(name, done, total)
            written = _Checksum(kinds)
            if dst.sqlite:
                for rows in _sqlite_rows(dst, name, columns):
                    written.add(rows)
            else:
                _pg_read_back(dst, name, columns, written, kinds)
            results.append(TableCopy(name, read.rows, read.hex, written.rows, written.hex))
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
    except BaseException:
        if dst.conn is not None:
            if dst.sqlite:
                if dst.conn.in_transaction:
                    dst.conn.execute("ROLLBACK")
            else:
                dst.conn.rollback()
        raise
    finally:
        if src.sqlite:
            if src.conn.in_transaction:
                src.conn.execute("COMMIT")
        else:
            src.conn.rollback()
    return results


def _sqlite_rows(side: _Side, table: str, columns: list[str]) -> Iterator[list[tuple]]:
    cur = side.cursor()
    cur.execute(f'SELECT {", ".join(_q(c) for c in columns)} FROM "{table}"')
    while True:
        rows = cur.fetchmany(BATCH_ROWS)
        if not rows:
            return
        yield rows


def _write(dst: _Side, table: str, columns: list[str], encoders: list[Callable[[Any], Any]], rows: list[tuple]) -> None:
    column_list = ", ".join(_q(c) for c in columns)
    if dst.sqlite:
        converted = [tuple([f(v) for f, v in zip(encoders, row, strict=True)]) for row in rows]
        marks = ", ".join("?" for _ in columns)
        dst.conn.executemany(f'INSERT INTO "{table}" ({column_list}) VALUES ({marks})', converted)
        return
    text = "".join(["\t".join([f(v) for f, v in zip(encoders, row, strict=True)]) + "\n" for row in rows])
    dst.cursor().copy_expert(f'COPY "{table}" ({column_list}) FROM STDIN (FORMAT text)', io.StringIO(text))


def _copy_in(dst: _Side, table: str, columns: list[str], text: str) -> None:
    column_list = ", ".join(_q(c) for c in columns)
    dst.cursor().copy_expert(f'COPY "{table}" ({column_list}) FROM STDIN (FORMAT text)', io.StringIO(text))


@contextmanager
def _no_writer() -> Iterator[None]:
    yield None


class _CopyInThread:
    """One ``COPY ... FROM STDIN`` per table, run in a thread that is fed batches of COPY text.

    psycopg2 releases the GIL while it sends and while PostgreSQL parses and inserts, so the
    next source batch is read, hashed and encoded meanwhile. The queue holds one batch: memory
    stays at a few batches. An error in either thread stops both before the transaction is
    rolled back; the connection is never used by two threads at once.
    """

    def __init__(self, dst: _Side, table: str, columns: list[str]):
        column_list = ", ".join(_q(c) for c in columns)
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


def _encoders(kinds: list[tuple[str, Any]], sqlite: bool) -> list[Callable[[Any], Any]]:
    """Per column, how a value read from the source is written to the target."""
    if sqlite:
        return [lambda v, k=kind: _to_sqlite(k, v) for kind, _ in kinds]
    return [_copy_fn(kind) for kind, _ in kinds]


def _to_sqlite(kind: str, value: Any) -> Any:
    """A PostgreSQL value in the form pfdb's SQLite models store it."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, Decimal):
        return str(value)  # NUMERIC affinity stores 19.90 as 19.9, as peewee does
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.timezone.utc).replace(tzinfo=None)
        return str(value)  # '2026-12-03 14:00:00.123456', peewee's own form
    if isinstance(value, uuid.UUID):
        return value.hex
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True)
    return str(value)


def _copy_fn(kind: str) -> Callable[[Any], str]:
    """One column's values in COPY's text format (``\\N`` is NULL, so an empty string stays one)."""
    if kind == "bool":
        return lambda v: "\\N" if v is None else ("t" if v in (True, 1, "1", "t", "true") else "f")
    if kind in ("int", "decimal"):
        return lambda v: "\\N" if v is None else (repr(v) if v.__class__ is float else str(v))
    if kind == "datetime":
        return lambda v: "\\N" if v is None else (v if v.__class__ is str else v.isoformat(" "))

    def text(v: Any) -> str:
        if v is None:
            return "\\N"
        return (v if v.__class__ is str else str(v)).translate(_COPY_ESCAPES)

    return text


def _set_sequences(cur: Any, tables: list[str]) -> None:
    """Each id sequence continues after the highest copied id, so the next insert works."""
    for table in tables:
        cur.execute("SELECT pg_get_serial_sequence(%s, 'id')", (f'"{table}"',))
        sequence = cur.fetchone()[0]
        if sequence:
            cur.execute(f'SELECT setval(%s, COALESCE((SELECT MAX("id") FROM "{table}"), 0) + 1, false)', (sequence,))
