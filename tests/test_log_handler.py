"""The system log handler on both backends: what it stores, batching, no recursion, no crash; pfdb logs."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

import pfdb
from pfdb import SystemLog, db_session_scope
from pfdb.log_handler import SystemLogHandler, install_log_handler, recent_logs


@pytest.fixture
def logger(request):
    """A logger of the test's own, with nothing else attached, removed afterwards."""
    log = logging.getLogger(f"pfdbtest.{request.node.name}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def rows() -> list[SystemLog]:
    with db_session_scope():
        return list(SystemLog.select().order_by(SystemLog.id))


class Unserialisable:
    def __repr__(self) -> str:
        return "<Unserialisable>"


def test_records_are_stored_with_their_details(db, logger):
    handler = SystemLogHandler(batch_size=1)
    logger.addHandler(handler)
    logger.info("order %s shipped", 42, extra={"order": 42, "tags": ["a"], "obj": Unserialisable()})
    try:
        raise ValueError("bad row")
    except ValueError:
        logger.exception("import failed")
    stored = rows()
    assert [r.level for r in stored] == ["INFO", "ERROR"]
    info, error = stored
    assert info.message == "order 42 shipped" and info.logger == logger.name
    assert info.module == "test_log_handler" and info.function == "test_records_are_stored_with_their_details"
    assert info.line > 0 and info.exception is None
    assert info.extra == {"order": 42, "tags": ["a"], "obj": "<Unserialisable>"}
    assert "ValueError: bad row" in error.exception and "Traceback" in error.exception
    assert error.created_at.tzinfo is not None


def test_records_are_batched_and_errors_flush_at_once(db, logger):
    handler = SystemLogHandler(batch_size=10, flush_interval=3600)
    logger.addHandler(handler)
    for i in range(5):
        logger.info("info %d", i)
    assert rows() == []  # buffered
    logger.error("boom")
    assert len(rows()) == 6
    for i in range(10):
        logger.info("more %d", i)
    # the tenth record filled the batch: the writer thread writes it without holding the caller
    deadline = time.monotonic() + 5
    while len(rows()) < 16 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(rows()) == 16
    logger.info("last")
    handler.close()
    assert len(rows()) == 17


def test_custom_levels_map_onto_the_stored_ones(db, logger):
    logger.setLevel(1)
    logger.addHandler(SystemLogHandler(level=1, batch_size=1))
    logger.log(5, "trace")
    logger.log(25, "notice")
    logger.log(60, "beyond critical")
    assert [r.level for r in rows()] == ["DEBUG", "INFO", "CRITICAL"]


def test_its_own_writes_are_not_logged_again(db):
    """On the root logger at DEBUG with peewee's query log on, writing a batch logs the INSERT:
    that record and any pfdb record raised while writing must not be stored (or recurse)."""
    root = logging.getLogger()
    old_level = root.level
    peewee_log = logging.getLogger("peewee")
    old_peewee = peewee_log.level
    handler = SystemLogHandler(level=logging.DEBUG, batch_size=1)
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    peewee_log.setLevel(logging.DEBUG)
    real = SystemLog.insert_many.__func__

    def noisy_insert_many(cls, *args, **kwargs):
        logging.getLogger("pfdb").warning("writing a log batch")
        return real(cls, *args, **kwargs)

    try:
        SystemLog.insert_many = classmethod(noisy_insert_many)
        logging.getLogger("app").info("hello")
        handler.flush()  # written by the handler's thread; wait for it
    finally:
        del SystemLog.insert_many
        root.removeHandler(handler)
        root.setLevel(old_level)
        peewee_log.setLevel(old_peewee)
    stored = [(r.logger, r.message) for r in rows()]
    assert ("app", "hello") in stored
    assert not any(name == "pfdb" and message == "writing a log batch" for name, message in stored)
    assert not any("INSERT INTO" in message and "system_logs" in message for _, message in stored)


@pytest.mark.fresh_database  # changes the schema
def test_survives_a_dropped_table_and_reports_once(db, logger, capsys):
    handler = SystemLogHandler(batch_size=1)
    logger.addHandler(handler)
    pfdb.db.execute_sql('DROP TABLE "system_logs"')
    logger.error("first")
    logger.error("second")
    err = capsys.readouterr().err
    assert err.count("pfdb: the system log cannot write to the database") == 1
    assert "log records are dropped" in err
    assert handler.dropped == 2


def test_survives_a_closed_database(db, logger, capsys):
    handler = SystemLogHandler(batch_size=1)
    logger.addHandler(handler)
    pfdb.close_database()
    logger.critical("the database is gone")  # must not raise
    handler.close()
    assert capsys.readouterr().err.count("cannot write to the database") == 1


def test_a_transaction_is_never_joined(db, logger):
    """The writer has its own connection: a rollback must not take the records along."""
    handler = SystemLogHandler(batch_size=1)
    logger.addHandler(handler)
    with pytest.raises(RuntimeError), db_session_scope():
        logger.error("inside the failing transaction")
        raise RuntimeError("rolled back")
    logger.info("afterwards")
    handler.flush()
    assert [r.message for r in rows()] == ["inside the failing transaction", "afterwards"]


def test_threads_log_at_once(db, logger):
    handler = SystemLogHandler(batch_size=7)
    logger.addHandler(handler)

    def work(n: int) -> None:
        for i in range(25):
            logger.info("thread %d record %d", n, i)
        handler.flush()
        if not pfdb.db.is_closed():
            pfdb.db.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    handler.close()
    assert len(rows()) == 100 and handler.dropped == 0


def test_install_log_handler_is_one_idempotent_call(db):
    name = "pfdbtest.install"
    log = logging.getLogger(name)
    log.setLevel(logging.WARNING)
    try:
        handler = install_log_handler(name)
        assert install_log_handler(name) is handler and log.level == logging.INFO
        log.info("installed")
        handler.flush()
        assert [r.message for r in rows()] == ["installed"]
    finally:
        log.handlers.clear()


def test_recent_logs_and_the_logs_command(db, logger, run_cli, database_url):
    logger.addHandler(SystemLogHandler(batch_size=1))
    logger.info("one")
    logger.warning("two")
    logger.error("three")
    logger.critical("four")
    assert [e.message for e in recent_logs("ERROR").entries] == ["four", "three"]
    assert [e.message for e in recent_logs(limit=2).entries] == ["four", "three"]
    pfdb.close_database()

    code, out, _ = run_cli("--database-url", database_url, "logs", "--level", "warning", "--limit", "2")
    assert code == 0 and out.index("four") < out.index("three") and "two" not in out
    assert "CRITICAL" in out and logger.name in out
    code, out, _ = run_cli("--database-url", database_url, "logs", "--json")
    data = json.loads(out)
    assert code == 0 and [e["message"] for e in data["entries"]] == ["four", "three", "two", "one"]
    assert data["entries"][0]["level"] == "CRITICAL" and data["entries"][0]["created_at"].endswith("+00:00")
    code, _, err = run_cli("--database-url", database_url, "logs", "--level", "LOUD")
    assert code == 2 and "must be one of" in err  # a usage error, before anything runs
    code, _, err = run_cli("--database-url", database_url, "logs", "--limit", "many")
    assert code == 2 and "--limit must be a whole number" in err


def test_logs_command_on_an_empty_log(run_cli, database_url):
    code, out, _ = run_cli("--database-url", database_url, "logs", "--level", "ERROR")
    assert code == 0 and out == "no log entries at ERROR or above\n"
