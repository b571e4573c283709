"""pfdb's PostgreSQL pool against a real server: sizes seen in pg_stat_activity, no-wait timeout,
timeouts, and connections the server terminated (held, idle, mid-import)."""

from __future__ import annotations

import re
import threading
import time

import psycopg2
import pytest
from conftest import PG_ADMIN_URL
from shared_database import RESET_APPLICATION

import pfdb
from pfdb import Product, db_session_scope
from pfdb.errors import ConnectionLostError, PoolExhaustedError
from pfdb.feeds import import_products
from pfdb.models import Job, SyncHistory

pytestmark = pytest.mark.postgres


@pytest.fixture
def admin():
    conn = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
    conn.autocommit = True
    yield conn
    conn.close()


def backends(admin, url: str) -> int:
    """Server processes connected to the test database (the admin connection uses another one; the shared
    database's reset keeps one of its own, left out)."""
    name = url.rsplit("/", 1)[1]
    with admin.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name <> %s",
            (name, RESET_APPLICATION),
        )
        return cur.fetchone()[0]


def settle(admin, url: str, expected: int) -> int:
    """A closed connection's backend leaves pg_stat_activity a moment later."""
    deadline = time.monotonic() + 5
    while (count := backends(admin, url)) != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def terminate(admin, pid: int) -> None:
    with admin.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))  # waits until it is gone
        assert cur.fetchone()[0] is True


def backend_pid() -> int:
    return pfdb.db.connection().get_backend_pid()


def test_idle_connections_are_capped_at_pool_size(postgres_url, admin):
    """40 requests at once on pool 10 + overflow 20 used to leave 30 connections open."""
    pfdb.init_database(postgres_url, pool_size=2, max_overflow=4, pool_timeout=10)
    holding = threading.Barrier(7)
    release = threading.Event()
    errors: list[BaseException] = []

    def request(n: int) -> None:
        try:
            with db_session_scope():
                Product.create(sku=f"R-{n}", name="request")
                holding.wait(10)
                release.wait(10)
        except BaseException as exc:  # asserted below
            errors.append(exc)

    threads = [threading.Thread(target=request, args=(n,)) for n in range(6)]
    for thread in threads:
        thread.start()
    holding.wait(10)
    try:
        assert backends(admin, postgres_url) == 6
        assert pfdb.db.obj.pool_usage()["in_use"] == 6
    finally:
        release.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert settle(admin, postgres_url, 2) == 2
    assert pfdb.db.obj.pool_usage() == {"in_use": 0, "idle": 2, "max_connections": 6}
    with db_session_scope():
        assert Product.select().count() == 6


def test_pool_timeout_zero_fails_at_once(postgres_url):
    """peewee's pool read 0 as 'wait forever'; pfdb reads it as 'do not wait', as SQLite does."""
    pfdb.init_database(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0)
    holding, release = threading.Event(), threading.Event()

    def hold() -> None:
        with db_session_scope():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        start = time.monotonic()
        with pytest.raises(PoolExhaustedError, match="all 1 pooled connections are in use") as info:
            with db_session_scope():
                pass
        assert time.monotonic() - start < 0.5
        assert "DATABASE_POOL_SIZE" in str(info.value)
    finally:
        release.set()
        holder.join()
    with db_session_scope():  # the slot came back
        assert Product.select().count() == 0


def test_a_waiting_checkout_gets_the_returned_connection(postgres_url):
    pfdb.init_database(postgres_url, pool_size=1, max_overflow=0, pool_timeout=5)
    holding = threading.Event()

    def hold() -> None:
        with db_session_scope():
            holding.set()
            time.sleep(0.3)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    start = time.monotonic()
    with db_session_scope():
        Product.create(sku="W-1", name="waited")
    holder.join()
    assert 0.1 < time.monotonic() - start < 3


def test_connect_and_statement_timeouts_are_applied(postgres_url):
    database = pfdb.init_database(postgres_url, statement_timeout=0.2)
    assert database.connect_params["connect_timeout"] == 5  # DATABASE_CONNECT_TIMEOUT's default
    with db_session_scope():
        assert database.execute_sql("SHOW statement_timeout").fetchone()[0] == "200ms"
    start = time.monotonic()
    with pytest.raises(Exception, match="statement timeout"):
        with db_session_scope():
            database.execute_sql("SELECT pg_sleep(3)")
    assert time.monotonic() - start < 2
    with db_session_scope():  # the connection survived its cancelled statement
        assert database.execute_sql("SELECT 1").fetchone()[0] == 1

    database = pfdb.init_database(postgres_url + "?connect_timeout=7", connect_timeout=3)
    assert database.connect_params["connect_timeout"] == "7"  # the URL wins
    database = pfdb.init_database(postgres_url, connect_timeout=0.5)
    assert database.connect_params["connect_timeout"] == 2  # libpq's smallest
    with db_session_scope():
        assert database.execute_sql("SHOW statement_timeout").fetchone()[0] == "0"


def test_a_terminated_held_connection_is_replaced(postgres_url, admin):
    """A thread keeps its connection between statements (scripts, the CLI); the server drops it."""
    pfdb.init_database(postgres_url)
    Product.create(sku="H-1", name="before")
    first = backend_pid()
    terminate(admin, first)
    with db_session_scope():  # used to raise 'connection already closed' here, forever
        Product.create(sku="H-2", name="after")
    assert Product.select().count() == 2  # and outside a scope too
    assert backend_pid() != first
    pfdb.db.close()
    assert pfdb.db.obj.pool_usage()["in_use"] == 0


def test_a_connection_lost_inside_a_scope_raises_once_then_is_replaced(postgres_url, admin):
    pfdb.init_database(postgres_url)
    with pytest.raises(ConnectionLostError, match="lost the connection to the server"):
        with db_session_scope():
            Product.create(sku="L-1", name="lost")
            terminate(admin, backend_pid())
            Product.create(sku="L-2", name="lost too")
    assert pfdb.db.obj.pool_usage()["in_use"] == 0  # the dead one is not counted as in use
    with db_session_scope():
        Product.create(sku="L-3", name="fresh")
    assert [p.sku for p in Product.select()] == ["L-3"]  # the lost transaction left nothing


def test_a_terminated_idle_pooled_connection_is_discarded(postgres_url, admin):
    pfdb.init_database(postgres_url, pool_size=2)
    with db_session_scope():
        idle = backend_pid()
    assert pfdb.db.obj.pool_usage()["idle"] == 1
    terminate(admin, idle)
    with db_session_scope():
        Product.create(sku="I-1", name="fresh")
        assert backend_pid() != idle
    assert pfdb.db.obj.pool_usage() == {"in_use": 0, "idle": 1, "max_connections": 22}


def test_an_import_that_loses_its_connection_says_so_and_marks_its_job_failed(postgres_url, admin, tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text("sku,name,price\n" + "".join(f"T-{i:04d},Item {i},{i}.50\n" for i in range(500)))
    pfdb.init_database(postgres_url)
    calls = []

    def progress(state) -> None:
        calls.append(state.rows)
        if len(calls) == 2:  # after the first batch is committed
            terminate(admin, backend_pid())

    with pytest.raises(ConnectionLostError) as info:
        import_products(feed, batch_size=100, progress=progress)
    match = re.fullmatch(r"lost the connection to the server after (\d+) rows; re-run to continue", str(info.value))
    assert match and 200 <= int(match.group(1)) < 500
    job, sync = Job.get(), SyncHistory.get()  # read back on a fresh connection
    assert (job.status, sync.status) == ("failed", "failed")
    assert "lost the connection to the server" in job.error_message
    committed = Product.select().count()
    assert committed % 100 == 0 and 100 <= committed < 500  # whole batches only

    result = import_products(feed, batch_size=100)  # the re-run converges
    assert result.rows == 500 and Product.select().count() == 500
