"""The system log: a ``logging.Handler`` that stores records in ``system_logs``, and reading them back.

Four promises shape it:

* It never blocks the application for long. ``emit`` only queues the record; a background
  thread writes the queue. A record of ``flush_level`` (ERROR) or above waits at most
  ``max_wait`` seconds for its write, so a program that logs an error and then reads the
  log finds it; no record waits while the writer is stuck on a database that does not
  answer, and none waits inside a transaction. A full queue drops its oldest record.
* It never takes the application down. A write that fails is reported once on stderr
  (like ``logging.Handler.handleError``) and its records are dropped; ``dropped`` counts
  every record lost, to failed writes or a full queue. Nothing is raised.
* It never recurses, and never joins the application's transaction: the writer has its own
  connection, and records raised while it writes (peewee's query log) are ignored.
* It is cheap. The writer takes what is queued, up to a few thousand rows, and writes it in
  one write transaction (``BEGIN IMMEDIATE`` on SQLite) of multi-row INSERTs; it writes
  when ``batch_size`` records are queued, at a flush-level record, on ``flush()``, and
  ``flush_interval`` seconds after its last write. ``flush()`` and ``close()`` (which
  ``logging.shutdown`` calls at interpreter exit) wait until the queue is written, giving
  up after ``flush_timeout`` seconds without progress.

A SQLite ``:memory:`` database exists only on its thread's connection, so there the records
are written in the caller's thread, as the handler always did.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from ._peewee import peewee as pw
from .config import mask_secrets
from .database import db
from .models.system import LOG_LEVELS, SystemLog
from .text import first_line

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
    """Store log records in ``system_logs`` through the bound ``pfdb.db``, from a background thread.

    Args:
        level: the lowest level stored.
        batch_size: queued records that wake the writer (1: every record).
        flush_level: a record at this level or above wakes the writer and waits for its write.
        flush_interval: seconds after the last write when queued records are written anyway.
        max_buffer: records kept queued while they cannot be written; the oldest are dropped beyond.
        max_wait: seconds a flush-level record waits for its write at most.
        flush_timeout: seconds ``flush()``/``close()`` wait for a writer that makes no progress.
    """

    def __init__(
        self,
        level: int = logging.INFO,
        *,
        batch_size: int = 100,
        flush_level: int = logging.ERROR,
        flush_interval: float = 5.0,
        max_buffer: int = 10_000,
        max_wait: float = 0.5,
        flush_timeout: float = 5.0,
    ):
        super().__init__(level)
        self.batch_size = max(1, int(batch_size))
        self.flush_level = flush_level
        self.flush_interval = flush_interval
        self.max_buffer = max(self.batch_size, int(max_buffer))
        self.max_wait = max_wait
        self.flush_timeout = flush_timeout
        self._local = threading.local()
        self._failing = False  # reported the current run of failures already
        self.dropped = 0  # records lost to failed writes or a full queue
        self._reset_state()

    def _reset_state(self) -> None:
        # One lock for the queue and the counters; the database is never touched under it.
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[tuple[int, dict[str, Any]]] = deque()
        self._queued = 0  # sequence number of the newest record queued
        self._done = 0  # every record up to this number is written or dropped
        self._wake = False
        self._closing = False
        self._busy_since: float | None = None  # when the write in flight began
        self._last_write = time.monotonic()
        self._writer: threading.Thread | None = None
        self._held: Any = None  # the database whose connection the writer thread keeps open
        self._pid = os.getpid()

    # -- logging.Handler --------------------------------------------------------------------
    def handle(self, record: logging.LogRecord) -> Any:
        """Like ``Handler.handle`` but without holding the handler lock around ``emit``.

        The base class serialises every emit behind one lock; ``emit`` here needs only the
        queue's own lock, and an inline write (``:memory:``) must not hold up other threads.
        """
        rv = self.filter(record)
        if rv:
            self.emit(record)
        return rv

    def emit(self, record: logging.LogRecord) -> None:
        if threading.current_thread() is self._writer or getattr(self._local, "writing", False):
            return  # a record raised by our own write (peewee's query log, pfdb's logger)
        try:
            row = self._row(record)
        except Exception:
            self.handleError(record)
            return
        if self._pid != os.getpid():  # a forked child: the writer thread stayed in the parent
            self._reset_state()
        urgent = record.levelno >= self.flush_level
        with self._cond:
            if self._closing:
                self.dropped += 1
                return
            self._queued += 1
            seq = self._queued
            self._queue.append((seq, row))
            if len(self._queue) > self.max_buffer:
                self._queue.popleft()
                self.dropped += 1
            if urgent or len(self._queue) >= self.batch_size:
                self._wake = True
                self._cond.notify_all()
        if _inline():
            if urgent or len(self._queue) >= self.batch_size or self._interval_due():
                self._drain_inline()
            return
        self._start_writer()
        if urgent and not _in_transaction():
            self._wait_for(seq, self.max_wait, give_up_when_stuck=True)

    def flush(self) -> None:
        """Write what is queued; wait (bounded) unless this thread is inside a transaction."""
        if threading.current_thread() is self._writer or getattr(self._local, "writing", False):
            return
        if _inline():
            self._drain_inline()
            return
        with self._cond:
            if self._done >= self._queued:
                return  # nothing queued and no write in flight
            seq = self._queued
            self._wake = True
            self._cond.notify_all()
        self._start_writer()
        if not _in_transaction():
            self._wait_for(seq, self.flush_timeout)

    def close(self) -> None:
        """Write what is queued (bounded by ``flush_timeout``), stop the writer, count the rest as dropped."""
        try:
            self.flush()
            with self._cond:
                self._closing = True
                written = self._done >= self._queued
                self._cond.notify_all()
            writer = self._writer
            if writer is not None and writer is not threading.current_thread() and writer.is_alive():
                writer.join(1.0 if written else 0)  # a stuck writer is not waited for twice
            with self._cond:
                self.dropped += len(self._queue)  # never taken by the writer
                self._queue.clear()
        finally:
            super().close()

    @property
    def queued(self) -> int:
        """Records waiting to be written."""
        with self._cond:
            return len(self._queue)

    # -- the writer -------------------------------------------------------------------------
    def _start_writer(self) -> None:
        if self._writer is not None and self._writer.is_alive():
            return
        with self._cond:
            if self._closing or (self._writer is not None and self._writer.is_alive()):
                return
            self._writer = threading.Thread(target=self._run, name="pfdb-log-writer", daemon=True)
            self._writer.start()

    def _run(self) -> None:
        while True:
            items = None
            with self._cond:
                while True:
                    now = time.monotonic()
                    if self._queue and (self._wake or self._closing or now - self._last_write >= self.flush_interval):
                        items = [self._queue.popleft() for _ in range(min(len(self._queue), _TAKE))]
                        self._wake = bool(self._queue) and self._wake
                        self._busy_since = now
                        break
                    if not self._queue and (
                        self._closing or (self._held is not None and now - self._last_write >= _IDLE_CLOSE)
                    ):
                        break
                    timeouts = []
                    if self._queue:
                        timeouts.append(self._last_write + self.flush_interval - now)
                    if self._held is not None:
                        timeouts.append(self._last_write + _IDLE_CLOSE - now)
                    self._cond.wait(max(0.0, min(timeouts)) if timeouts else None)
                stop = items is None and self._closing
            if items is None:
                self._release()  # idle: give the connection back (SQLite: close it)
                if stop:
                    return
                continue
            self._write([row for _, row in items])
            with self._cond:
                self._busy_since = None
                self._last_write = time.monotonic()
                self._done = max(self._done, items[-1][0])
                self._cond.notify_all()

    def _release(self) -> None:
        """Close the writer's connection (on the writer's thread: connections are per thread)."""
        database, self._held = self._held, None
        if database is not None and not database.is_closed() and not database.in_transaction():
            try:
                database.close()
            except Exception:  # a broken connection: nothing left to give back
                pass

    def _interval_due(self) -> bool:
        return time.monotonic() - self._last_write >= self.flush_interval

    def _wait_for(self, seq: int, timeout: float, give_up_when_stuck: bool = False) -> None:
        """Wait until record ``seq`` is written or dropped; ``timeout`` counts from the last progress."""
        with self._cond:
            deadline = time.monotonic() + timeout
            done = self._done
            while self._done < seq and self._writer is not None and self._writer.is_alive():
                now = time.monotonic()
                if self._done != done:
                    done, deadline = self._done, now + timeout
                if now >= deadline:
                    return
                if give_up_when_stuck and self._busy_since is not None and now - self._busy_since > self.max_wait:
                    return  # the database is not answering: do not make every caller find out
                self._cond.wait(deadline - now)

    def _drain_inline(self) -> None:
        if _in_transaction():
            return  # the rows must not join (and be rolled back with) the caller's transaction
        with self._cond:
            rows = [row for _, row in self._queue]
            self._queue.clear()
            self._done = self._queued
            self._last_write = time.monotonic()
        if rows:
            self._write(rows, inline=True)

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
                extra_json = json.dumps(
                    {k: _json_safe(v) for k, v in extra.items()}, ensure_ascii=False, sort_keys=True
                )
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

    def _write(self, rows: list[dict[str, Any]], inline: bool = False) -> None:
        """One write transaction. The writer keeps its connection for the next batch (connecting
        costs milliseconds on SQLite); inline, a connection opened here is closed again."""
        self._local.writing = True
        database = db.obj
        opened = False
        try:
            if database is None:
                raise RuntimeError("pfdb.init_database() has not been called (or the database was closed)")
            if not inline and self._held is not None and self._held is not database:
                self._release()  # the application re-initialised pfdb since the last batch
            opened = database.connect(reuse_if_open=True)
            if not inline:
                self._held = database
            try:
                # A write transaction from the start: on SQLite a deferred BEGIN that later
                # wants the write lock fails at once instead of waiting for it.
                lock = {"lock_type": "IMMEDIATE"} if isinstance(database, pw.SqliteDatabase) else {}
                with database.atomic(**lock):
                    _insert(database, rows)
            finally:
                if inline and opened and not database.is_closed() and not database.in_transaction():
                    database.close()  # keep a connection the application opened
            self._failing = False
        except Exception as exc:
            if not inline:
                self._release()  # a broken connection goes back to be discarded
            with self._cond:
                self.dropped += len(rows)
            if not self._failing:
                self._failing = True
                reason = first_line(exc)
                reason = mask_secrets(reason, getattr(database, "pfdb_url", None))
                try:
                    sys.stderr.write(
                        f"pfdb: the system log cannot write to the database ({reason}); "
                        f"log records are dropped until it can\n"
                    )
                except Exception:  # pragma: no cover - stderr itself is gone
                    pass
        finally:
            self._local.writing = False


def _inline() -> bool:
    url = getattr(db.obj, "pfdb_url", None)
    return url is not None and url.is_memory


def _in_transaction() -> bool:
    database = db.obj
    return database is not None and database.in_transaction()


_COLUMNS = (
    "level",
    "logger",
    "message",
    "module",
    "function",
    "line",
    "exception",
    "extra",
    "created_at",
    "updated_at",
)
# Rows per statement: 5,000 parameters, within PostgreSQL's 65,535 and SQLite's 32,766
# (SQLite before 3.32 allowed only 999).
_CHUNK = 500 if sqlite3.sqlite_version_info >= (3, 32) else 999 // len(_COLUMNS)
_TAKE = 5000  # rows per write transaction at most: a long backlog is written in bounded steps
_IDLE_CLOSE = 1.0  # seconds the writer keeps its connection after its last write


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
        chunk = rows[start : start + _CHUNK]
        params = []
        for row in chunk:
            params.extend(row[name] for name in _COLUMNS[:-2])  # text and numbers, ready as they are
            params.extend((stamp(row["created_at"]), stamp(row["updated_at"])))
        database.execute_sql(head + ", ".join([row_sql] * len(chunk)), params)


def install_log_handler(
    logger: logging.Logger | str | None = None, level: int = logging.INFO, **options: Any
) -> SystemLogHandler:
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
    from .database import borrow_connection
    from .errors import ValidationError

    if level is not None and str(level).upper() not in LOG_LEVELS:
        raise ValidationError("level", f"must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    if int(limit) < 1:
        raise ValidationError("limit", f"must be at least 1, got {limit}")
    with borrow_connection():
        rows = list(SystemLog.recent(level, int(limit)))
    entries = tuple(
        LogEntry(
            id=r.id,
            created_at=r.created_at,
            level=r.level,
            logger=r.logger,
            message=r.message,
            module=r.module,
            function=r.function,
            line=r.line,
            exception=r.exception,
            extra=r.extra,
        )
        for r in rows
    )
    return RecentLogs(entries=entries, level=str(level).upper() if level else None, limit=int(limit))
