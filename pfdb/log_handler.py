"""The system log: a ``logging.Handler`` that stores records in ``system_logs``, and reading them back.

Three promises shape it:

* It never takes the application down. A write that fails is reported once on stderr
  (like ``logging.Handler.handleError``) and its records are dropped; nothing is raised.
* It never recurses. Writing a batch makes peewee (and perhaps pfdb) log; a thread-local
  flag set while writing makes ``emit`` ignore every record raised by the write itself.
* It is cheap. Records are buffered and written ``batch_size`` at a time in one
  multi-row INSERT on the thread's own connection; a record of ``flush_level`` (ERROR)
  or above, ``flush_interval`` seconds since the last write, and ``close()`` flush too.
  A thread inside a transaction only buffers: the log rows must not join (and be rolled
  back with) the application's transaction, nor wait on SQLite's write lock it holds.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sqlite3
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any

from .config import mask_secrets
from .database import db
from .models.system import LOG_LEVELS, SystemLog

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = set(vars(logging.LogRecord("x", logging.INFO, "x", 1, "x", None, None))) | {"message", "asctime"}
_MAX_EXTRA_REPR = 1000


def _level_name(levelno: int) -> str:
    """Map any level number (custom ones too) to the five the table accepts."""
    for threshold, name in ((50, "CRITICAL"), (40, "ERROR"), (30, "WARNING"), (20, "INFO")):
        if levelno >= threshold:
            return name
    return "DEBUG"


def _json_safe(value: Any) -> Any:
    try:
        json.dumps(value)
        return value
    except (TypeError, ValueError):
        text = repr(value)
        return text if len(text) <= _MAX_EXTRA_REPR else text[:_MAX_EXTRA_REPR] + "…"


def _cut(text: str | None, length: int = 255) -> str | None:
    return None if text is None else str(text)[:length]


class SystemLogHandler(logging.Handler):
    """Store log records in ``system_logs`` through the bound ``pfdb.db``.

    Args:
        level: the lowest level stored.
        batch_size: records written per INSERT (1: every record at once).
        flush_level: a record at this level or above flushes the buffer at once.
        flush_interval: seconds after which the next record flushes the buffer.
        max_buffer: records kept while they cannot be written; the oldest are dropped beyond.
    """

    def __init__(self, level: int = logging.INFO, *, batch_size: int = 100, flush_level: int = logging.ERROR,
                 flush_interval: float = 5.0, max_buffer: int = 10_000):
        super().__init__(level)
        self.batch_size = max(1, int(batch_size))
        self.flush_level = flush_level
        self.flush_interval = flush_interval
        self.max_buffer = max(self.batch_size, int(max_buffer))
        self._buffer: list[dict[str, Any]] = []
        self._local = threading.local()
        self._last_flush = time.monotonic()
        self._failing = False  # reported the current run of failures already
        self.dropped = 0  # records lost to failed writes or a full buffer

    # -- logging.Handler --------------------------------------------------------------------
    def handle(self, record: logging.LogRecord) -> Any:
        """Like ``Handler.handle`` but without holding the handler lock around ``emit``.

        The base class serialises every emit behind one lock; held across a database write,
        a thread that logs inside its SQLite write transaction would block on that lock
        while the writer waits for the transaction's write lock: both stall for the busy
        timeout. Here the lock only guards the buffer; writes happen outside it.
        """
        rv = self.filter(record)
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(self._local, "writing", False):
            return  # a record raised by our own write (peewee's query log, pfdb's logger)
        try:
            row = self._row(record)
        except Exception:
            self.handleError(record)
            return
        with self.lock:
            self._buffer.append(row)
            if len(self._buffer) > self.max_buffer:
                del self._buffer[0]
                self.dropped += 1
            due = (len(self._buffer) >= self.batch_size or record.levelno >= self.flush_level
                   or time.monotonic() - self._last_flush >= self.flush_interval)
        if due:
            self.flush()

    def flush(self) -> None:
        """Write the buffered records, unless this thread is inside a transaction."""
        if getattr(self._local, "writing", False):
            return
        database = db.obj
        if database is not None and database.in_transaction():
            return  # see the module docstring; the next flush outside it writes them
        with self.lock:
            rows, self._buffer = self._buffer, []
            self._last_flush = time.monotonic()
        if rows:
            self._write(rows)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            super().close()

    # -- internals --------------------------------------------------------------------------
    def _row(self, record: logging.LogRecord) -> dict[str, Any]:
        exception = None
        if record.exc_info:
            exception = logging.Formatter().formatException(record.exc_info)
        elif record.exc_text:
            exception = record.exc_text
        if record.stack_info:
            exception = f"{exception}\n{record.stack_info}" if exception else record.stack_info
        extra = {k: v for k, v in vars(record).items() if k not in _STANDARD}
        if extra:
            try:  # one dumps for the common case; per value only when something cannot be JSON
                extra_json = json.dumps(extra, ensure_ascii=False, sort_keys=True)
            except (TypeError, ValueError):
                extra_json = json.dumps({k: _json_safe(v) for k, v in extra.items()}, ensure_ascii=False,
                                        sort_keys=True)
        else:
            extra_json = None
        created = dt.datetime.fromtimestamp(record.created, dt.timezone.utc)
        return {
            "level": _level_name(record.levelno),
            "logger": _cut(record.name),
            "message": record.getMessage(),
            "module": _cut(record.module),
            "function": _cut(record.funcName),
            "line": record.lineno,
            "exception": exception,
            "extra": extra_json,  # already the JSON text JSONField would store
            "created_at": created,
            "updated_at": created,
        }

    def _write(self, rows: list[dict[str, Any]]) -> None:
        self._local.writing = True
        try:
            database = db.obj
            if database is None:
                raise RuntimeError("pfdb.init_database() has not been called (or the database was closed)")
            opened = database.connect(reuse_if_open=True)
            try:
                with database.atomic():
                    _insert(database, rows)
            finally:
                if opened and not database.in_transaction():
                    database.close()  # hand a pooled connection back; keep one the app opened
            self._failing = False
        except Exception as exc:
            self.dropped += len(rows)
            if not self._failing:
                self._failing = True
                reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                reason = mask_secrets(reason, getattr(database, "pfdb_url", None))
                try:
                    sys.stderr.write(f"pfdb: the system log cannot write to the database ({reason}); "
                                     f"log records are dropped until it can\n")
                except Exception:  # pragma: no cover - stderr itself is gone
                    pass
        finally:
            self._local.writing = False


_COLUMNS = ("level", "logger", "message", "module", "function", "line", "exception", "extra", "created_at",
            "updated_at")
# Rows per statement: 5,000 parameters, within PostgreSQL's 65,535 and SQLite's 32,766
# (SQLite before 3.32 allowed only 999).
_CHUNK = 500 if sqlite3.sqlite_version_info >= (3, 32) else 999 // len(_COLUMNS)


def _insert(database: Any, rows: list[dict[str, Any]]) -> None:
    """One multi-row INSERT per chunk, built directly.

    ``SystemLog.insert_many`` gives the same SQL but builds it through peewee's query tree,
    node by node: measured, that cost five times the write itself. ``_row`` already made
    each value what the model's fields store (``extra`` as JSONField's text; timestamps go
    through the field's own ``db_value``), so the rows read back like any other.
    """
    fields = [SystemLog._meta.fields[name] for name in _COLUMNS]
    table = SystemLog._meta.table_name
    row_sql = "(" + ", ".join([database.param] * len(_COLUMNS)) + ")"
    head = f'INSERT INTO "{table}" (' + ", ".join(f'"{f.column_name}"' for f in fields) + ") VALUES "
    stamp = SystemLog.created_at.db_value  # aware UTC -> the naive UTC every pfdb timestamp is stored as
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start:start + _CHUNK]
        params = []
        for row in chunk:
            params.extend(row[name] for name in _COLUMNS[:-2])  # text and numbers, ready as they are
            params.extend((stamp(row["created_at"]), stamp(row["updated_at"])))
        database.execute_sql(head + ", ".join([row_sql] * len(chunk)), params)


def install_log_handler(logger: logging.Logger | str | None = None, level: int = logging.INFO,
                        **options: Any) -> SystemLogHandler:
    """Attach a ``SystemLogHandler`` to ``logger`` (default: the root logger) and return it.

    The logger's level is lowered to ``level`` if it would drop such records before they
    reach the handler. Calling it again returns the handler already installed.
    Example: ``install_log_handler(level=logging.WARNING)``
    """
    target = logging.getLogger(logger) if isinstance(logger, str) or logger is None else logger
    for handler in target.handlers:
        if isinstance(handler, SystemLogHandler):
            return handler
    handler = SystemLogHandler(level, **options)
    target.addHandler(handler)
    if target.getEffectiveLevel() > level:
        target.setLevel(level)
    return handler


# -- reading the log --------------------------------------------------------------------------
@dataclass(frozen=True)
class LogEntry:
    id: int
    created_at: dt.datetime
    level: str
    logger: str | None
    message: str
    module: str | None
    function: str | None
    line: int | None
    exception: str | None
    extra: Any

    def as_dict(self) -> dict[str, Any]:
        out = dict(vars(self))
        out["created_at"] = self.created_at.isoformat() if self.created_at else None
        return out


@dataclass(frozen=True)
class RecentLogs:
    entries: tuple[LogEntry, ...]
    level: str | None
    limit: int

    def as_dict(self) -> dict[str, Any]:
        return {"level": self.level, "limit": self.limit, "entries": [e.as_dict() for e in self.entries]}


def recent_logs(level: str | None = None, limit: int = 10) -> RecentLogs:
    """The newest ``limit`` entries, newest first; with ``level``, that level and above.

    Example: ``recent_logs("ERROR", 5)``
    """
    from .database import get_database
    from .errors import ValidationError

    if level is not None and str(level).upper() not in LOG_LEVELS:
        raise ValidationError("level", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if int(limit) < 1:
        raise ValidationError("limit", f"must be at least 1, got {limit}")
    database = get_database()
    opened = database.connect(reuse_if_open=True)
    try:
        rows = list(SystemLog.recent(level, int(limit)))
    finally:
        if opened and not database.in_transaction():
            database.close()
    entries = tuple(LogEntry(id=r.id, created_at=r.created_at, level=r.level, logger=r.logger, message=r.message,
                             module=r.module, function=r.function, line=r.line, exception=r.exception, extra=r.extra)
                    for r in rows)
    return RecentLogs(entries=entries, level=str(level).upper() if level else None, limit=int(limit))
