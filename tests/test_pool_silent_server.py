"""Nothing hangs: a server that accepts connections and never answers, and errors waiting cannot cure.

The silent server is a loopback socket that accepts and never replies (what a PostgreSQL
postmaster stopped with SIGSTOP looks like to a client). Bounds are generous wall-clock
limits: each would be minutes without the timeouts.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import textwrap
import threading
import time

import pytest
from conftest import ROOT, pg_url

import pfdb
from pfdb import Product, db_session_scope
from pfdb.database import wait_for_database
from pfdb.errors import DatabaseBusyError, DatabaseUnavailableError
from pfdb.log_handler import _TAKE, SystemLogHandler


@pytest.fixture
def silent_url():
    """postgresql:// URL of a socket that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(64)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:  # the 0.1 s timeout; look at stop again
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"postgresql://shop:S3cretPw@127.0.0.1:{server.getsockname()[1]}/shop"
    pfdb.close_database()
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


def test_health_answers_unhealthy_within_its_bound(silent_url):
    # The default bound is the connect timeout, here shorter than libpq's own (whole seconds, at
    # least 2): the health check's bound, not libpq's, answers, and it says which bound it was.
    pfdb.init_database(silent_url, connect_timeout=0.5)
    start = time.monotonic()
    report = pfdb.database_health_check()
    assert time.monotonic() - start < 0.5 + 1.5
    assert report["status"] == "unhealthy" and report["connection_test"] is False
    assert "S3cretPw" not in str(report)
    assert report["error"].startswith("no answer from") and report["error"].endswith("within 0.5 s")

    start = time.monotonic()  # a shorter bound of the caller's own
    assert pfdb.database_health_check(timeout=0.5)["error"].startswith("no answer from")
    assert time.monotonic() - start < 1.5


def test_wait_returns_within_its_timeout(silent_url):
    pfdb.init_database(silent_url, connect_timeout=10)  # longer than the wait: the wait's bound wins
    start = time.monotonic()
    with pytest.raises(DatabaseUnavailableError, match="did not answer within 1 s") as info:
        wait_for_database(timeout=1)
    assert time.monotonic() - start < 1 + 1.5
    assert "S3cretPw" not in str(info.value)


def test_cli_health_status_and_wait_do_not_hang(silent_url, run_cli):
    # 0.5 s bounds health; status connects through libpq, which waits at least 2 s.
    env = {"DATABASE_CONNECT_TIMEOUT": "0.5"}
    for argv, bound in ((["health"], 2), (["status"], 4), (["wait", "--timeout", "1"], 2.5)):
        start = time.monotonic()
        code, out, err = run_cli("--database-url", silent_url, *argv, env=env)
        assert time.monotonic() - start < bound, argv
        assert code == 1, (argv, out, err)
        assert "S3cretPw" not in out + err
        if argv == ["health"]:
            assert "within 0.5 s" in out + err, (out, err)  # the setting reached the probe
    assert err.startswith("error: the database did not answer within 1 s") and err.count("\n") == 1
    assert err.count("check") == 1  # one hint, not two


def test_log_handler_never_blocks_the_application(silent_url, capsys):
    pfdb.init_database(silent_url, connect_timeout=2)
    log = logging.getLogger("pfdbtest.silent")
    log.propagate = False
    log.setLevel(logging.INFO)
    handler = SystemLogHandler(batch_size=1, max_wait=0.3, flush_timeout=0.5)
    log.addHandler(handler)
    try:
        for i in range(3):
            start = time.monotonic()
            log.error("order %d failed", i)
            assert time.monotonic() - start < 0.3 + 0.3  # the first waits max_wait; the others not at all
        start = time.monotonic()
        for i in range(20_000):  # a flood beyond the queue drops the oldest and counts them
            log.info("flood %d", i)
        assert time.monotonic() - start < 5
        # every record is queued, dropped, or in the one batch the writer is stuck with
        assert handler.queued <= handler.max_buffer
        assert handler.dropped >= 20_003 - handler.max_buffer - _TAKE
        start = time.monotonic()
        handler.close()
        assert time.monotonic() - start < 0.5 + 1.5
        assert handler.queued == 0 and handler.dropped >= 20_003 - _TAKE  # all but the batch in flight
    finally:
        log.removeHandler(handler)


def test_log_handler_at_exit_does_not_hang_on_a_silent_server(silent_url, tmp_path):
    """An application that logs an error and exits: logging.shutdown flushes, bounded."""
    script = tmp_path / "app.py"
    script.write_text(
        textwrap.dedent(f"""
        import logging, pfdb
        from pfdb.log_handler import install_log_handler
        pfdb.init_database({silent_url!r}, connect_timeout=2)
        install_log_handler(max_wait=0.2, flush_timeout=0.3)
        logging.error("the payment service is down")
        print("done")
    """)
    )
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert time.monotonic() - start < 0.2 + 0.3 + 1.5 + 2  # + interpreter start-up
    assert proc.returncode == 0 and proc.stdout == "done\n", proc.stderr
    assert "S3cretPw" not in proc.stderr


@pytest.mark.postgres
def test_wait_fails_at_once_on_errors_that_never_go_away(pg_server, run_cli):
    base = pg_url("postgres").rsplit("/", 1)[0]
    role = base.replace("://postgres@", "://no_such_role_pfdb@")
    cases = [
        (f"{role}/postgres", 'role "no_such_role_pfdb" does not exist', "check the user name in DATABASE_URL"),
        (
            f"{base}/pfdb_no_such_database",
            'database "pfdb_no_such_database" does not exist',
            "create it with pfdb init",
        ),
    ]
    for url, reason, hint in cases:
        pfdb.init_database(url)
        start = time.monotonic()
        with pytest.raises(DatabaseUnavailableError) as info:
            wait_for_database(timeout=30)
        assert time.monotonic() - start < 3
        assert reason in info.value.message and info.value.hint.startswith(hint)
        pfdb.close_database()

        start = time.monotonic()
        code, _, err = run_cli("--database-url", url, "wait", "--timeout", "30")
        assert time.monotonic() - start < 3
        assert code == 1 and reason in err and err.count(hint) == 1 and err.count("\n") == 1


def test_pool_timeout_zero_does_not_wait_on_sqlite_either(sqlite_url):
    """DATABASE_POOL_TIMEOUT=0 is 'do not wait' on both backends (on SQLite it is the busy timeout)."""
    import sqlite3

    pfdb.init_database(sqlite_url, pool_timeout=0)
    other = sqlite3.connect(sqlite_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    try:
        start = time.monotonic()
        with pytest.raises(DatabaseBusyError, match="busy timeout 0 s"):
            with db_session_scope():
                Product.create(sku="Z-1", name="no wait")
        assert time.monotonic() - start < 0.5
    finally:
        other.execute("ROLLBACK")
        other.close()
