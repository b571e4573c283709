"""The log handler's queue on both backends: written at interpreter exit, errors readable at once,
a slow writer never holds the caller, and SQLite's :memory: still works (written inline)."""

from __future__ import annotations

import logging
import os
import sys
import textwrap
import threading
import time

import processes
import pytest
from conftest import ROOT

import pfdb
from pfdb import SystemLog, db_session_scope, migrations
from pfdb.log_handler import SystemLogHandler, install_log_handler


@pytest.fixture
def logger(request):
    log = logging.getLogger(f"pfdbtest.queue.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def count() -> int:
    with db_session_scope():
        return SystemLog.select().count()


def test_queued_records_are_written_at_interpreter_exit(database_url, tmp_path):
    """No close(), no flush(): logging.shutdown at exit writes what the queue holds."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(f"""
        import logging, pfdb
        from pfdb.log_handler import install_log_handler
        pfdb.init_database({database_url!r})
        install_log_handler(batch_size=1000, flush_interval=3600)
        for i in range(50):
            logging.info("record %d", i)
    """)
    )
    proc = processes.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0 and proc.stderr == ""
    pfdb.init_database(database_url)
    assert count() == 50


def test_an_error_is_readable_as_soon_as_it_was_logged(db, logger):
    handler = SystemLogHandler(batch_size=1000, flush_interval=3600)
    logger.addHandler(handler)
    logger.info("queued")
    logger.error("failed")  # waits (bounded) for its write, and the INFO before it goes along
    with db_session_scope():
        assert [r.message for r in SystemLog.select().order_by(SystemLog.id)] == ["queued", "failed"]


def test_a_slow_write_does_not_hold_the_caller(db, logger, backend):
    """Another writer holds the log table's lock for a second: callers go on, the records arrive later."""
    handler = SystemLogHandler(batch_size=1, max_wait=0.2)
    logger.addHandler(handler)
    locked, release = threading.Event(), threading.Event()

    def hold_the_table() -> None:
        with db_session_scope() as database:
            if backend == "sqlite":
                SystemLog.create(level="INFO", message="holder")  # takes SQLite's write lock
            else:
                database.execute_sql('LOCK TABLE "system_logs" IN EXCLUSIVE MODE')
            locked.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_table)
    holder.start()
    locked.wait(10)
    try:
        start = time.monotonic()
        for i in range(5):
            logger.error("while locked %d", i)
        assert time.monotonic() - start < 0.2 + 0.5  # at most one max_wait, then no waiting
    finally:
        release.set()
        holder.join()
    handler.flush()
    assert handler.dropped == 0
    with db_session_scope():
        assert SystemLog.select().where(SystemLog.message.startswith("while locked")).count() == 5


def test_memory_database_is_written_inline(logger):
    pfdb.init_database("sqlite:///:memory:")
    pfdb.db.connect()  # the database lives as long as this connection
    migrations.migrate(backup=False)
    handler = install_log_handler(logger, batch_size=1)
    logger.info("kept in memory")
    assert [r.message for r in SystemLog.select()] == ["kept in memory"]
    assert handler._writer is None  # no thread: it would see another, empty, database
