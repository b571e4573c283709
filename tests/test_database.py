"""The database manager: session scopes, health, re-initialisation, echo, pools and concurrency."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import threading

import processes
import pytest

import pfdb
from pfdb import Product, User, db_session_scope, session_scope
from pfdb.errors import DatabaseNotInitialisedError, DatabaseUnavailableError, PoolExhaustedError


def test_session_scope_commits_on_success(db):
    with db_session_scope() as database:
        assert database is pfdb.db.obj
        Product.create(sku="A-1", name="Lamp")
    assert Product.select().count() == 1


def test_session_scope_rolls_back_and_reraises(db):
    with pytest.raises(RuntimeError, match="boom"):
        with db_session_scope():
            Product.create(sku="A-1", name="Lamp")
            raise RuntimeError("boom")
    assert Product.select().count() == 0


def test_nested_scope_is_a_savepoint(db):
    with db_session_scope():
        Product.create(sku="OUTER", name="kept")
        with pytest.raises(ValueError):
            with db_session_scope():
                Product.create(sku="INNER", name="undone")
                raise ValueError("inner only")
    assert [p.sku for p in Product.select()] == ["OUTER"]


def test_session_scope_is_db_session_scope_under_a_deprecated_name(db):
    with pytest.warns(DeprecationWarning, match="db_session_scope"):
        scope = session_scope()
    with pytest.raises(ValueError):
        with scope as database:
            assert database is pfdb.db.obj
            Product.create(sku="ROLLED-BACK", name="undone")
            raise ValueError("rolled back like db_session_scope")
    assert not Product.select().exists()


def test_scope_returns_its_connection(db, backend):
    if not pfdb.db.is_closed():
        pfdb.db.close()
    with db_session_scope():
        Product.select().count()
    assert pfdb.db.is_closed()
    if backend == "postgresql":
        assert pfdb.db.obj.pool_usage()["in_use"] == 0


def test_health_check_reports_healthy(db, backend):
    report = pfdb.database_health_check()
    assert report["status"] == "healthy" and report["connection_test"] is True
    assert report["backend"] == backend
    assert report["latency_ms"] >= 0 and report["server_version"]


def test_health_check_never_raises_for_an_unreachable_server():
    pfdb.init_database("postgresql://pfdb:TopS3cret@127.0.0.1:1/nowhere")
    report = pfdb.database_health_check()
    assert report["status"] == "unhealthy" and report["connection_test"] is False
    assert "TopS3cret" not in str(report) and "***" in report["database"]
    assert "127.0.0.1" in report["error"]


def test_health_check_before_init_is_unhealthy_not_an_exception():
    pfdb.close_database()
    assert pfdb.database_health_check()["status"] == "unhealthy"
    with pytest.raises(DatabaseNotInitialisedError, match="init_database"):
        pfdb.get_database()


def test_reinitialising_closes_the_old_pool(database_url, tmp_path):
    first = pfdb.init_database(database_url)
    Product.select().count()  # opens a connection
    assert not first.is_closed()
    second = pfdb.init_database(f"sqlite:///{tmp_path / 'other.db'}")
    assert first.is_closed() and pfdb.db.obj is second


def test_sqlite_pragmas_in_force(sqlite_url):
    pfdb.init_database(sqlite_url)
    database = pfdb.db.obj
    assert database.pragma("journal_mode") == "wal"
    assert database.pragma("foreign_keys") == 1
    assert database.pragma("synchronous") == 1  # NORMAL
    assert database.pragma("busy_timeout") == 30000


def test_postgres_pool_settings_are_mapped(postgres_url):
    database = pfdb.init_database(postgres_url, pool_size=3, max_overflow=2, pool_timeout=4, pool_recycle=60)
    assert database._max_connections == 5
    assert database._wait_timeout == 4 and database._stale_timeout == 60


def test_echo_logs_sql_through_the_peewee_logger(database_url, caplog):
    pfdb.init_database(database_url, echo=True)
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        Product.select().where(Product.sku == "X").count()
    assert any("products" in record.getMessage() for record in caplog.records if record.name == "peewee")
    pfdb.init_database(database_url)  # echo off again: the logger is as it was
    assert logging.getLogger("peewee").level == logging.NOTSET


def test_unreachable_server_gives_a_clear_error_without_the_password():
    pfdb.init_database("postgresql://pfdb:TopS3cret@127.0.0.1:1/nowhere")
    with pytest.raises(DatabaseUnavailableError) as info:
        Product.select().count()
    assert "TopS3cret" not in str(info.value) and "cannot connect" in str(info.value)


def test_threads_share_a_small_postgres_pool(postgres_url):
    pfdb.init_database(postgres_url, pool_size=2, max_overflow=1, pool_timeout=20)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for i in range(5):
                with db_session_scope():
                    Product.create(sku=f"T{n}-{i}", name="threaded")
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert Product.select().count() == 40
    assert pfdb.db.obj.pool_usage()["in_use"] <= 1


def test_exhausted_pool_gives_a_clear_error(postgres_url):
    pfdb.init_database(postgres_url, pool_size=1, max_overflow=0, pool_timeout=0.3)
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with db_session_scope():
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold)
    holder.start()
    holding.wait(10)
    try:
        with pytest.raises(PoolExhaustedError, match="all 1 pooled connections stayed in use"):
            with db_session_scope():
                pass
    finally:
        release.set()
        holder.join()


def test_processes_write_one_sqlite_file_at_once(sqlite_url, tmp_path):
    database_url = sqlite_url
    script = tmp_path / "writer.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        import pfdb
        from pfdb import Product, db_session_scope
        pfdb.init_database({database_url!r})
        worker = sys.argv[1]
        for i in range(40):
            with db_session_scope():
                Product.create(sku=f"P{{worker}}-{{i}}", name="from a process")
    """)
    )
    procs = [
        processes.Popen([sys.executable, str(script), str(n)], stderr=subprocess.PIPE, text=True) for n in range(4)
    ]
    failures = [(p.wait(), p.stderr.read()) for p in procs]
    assert all(code == 0 for code, _ in failures), failures
    pfdb.init_database(database_url)
    assert Product.select().count() == 160


def test_memory_database_works(tmp_path):
    pfdb.init_database("sqlite:///:memory:")
    pfdb.db.create_tables([User])
    user = User(email="a@b.co")
    user.set_password("long enough")
    user.save()
    assert User.select().count() == 1


def test_bound_temporarily_puts_back_the_application_binding_open(db, tmp_path):
    """A temporary binding (pfdb copy migrates and backs up through it) leaves the
    application's database, connection and settings as they were, and closes its own."""
    from pfdb.database import bound_temporarily, get_settings

    application, settings = pfdb.db.obj, get_settings()
    with db_session_scope():
        Product.create(sku="APP-1", name="Lamp")
    application.connect(reuse_if_open=True)
    other = f"sqlite:///{tmp_path / 'other.db'}"
    with bound_temporarily(other) as database:
        assert pfdb.db.obj is database is not application
        assert get_settings().database_url.path.endswith("other.db")
        database.execute_sql("CREATE TABLE scratch (id INTEGER)")
    assert database.is_closed()
    assert pfdb.db.obj is application and get_settings() is settings and not application.is_closed()
    assert [p.sku for p in Product.select()] == ["APP-1"]
    with pytest.raises(RuntimeError, match="inside"):
        with bound_temporarily(other):
            raise RuntimeError("inside")
    assert pfdb.db.obj is application and get_settings() is settings


@pytest.mark.parametrize("name", ['odd "quoted" name', "Mixed Case; DROP TABLE products", "ünïcode"])
def test_quote_identifier_names_exactly_that_table(db, name):
    """The one quoting rule the copy, rehearsal and pg_dump patterns use: any name, taken literally."""
    from pfdb.text import quote_identifier

    table = quote_identifier(name)
    pfdb.db.execute_sql(f"CREATE TABLE {table} (id INTEGER)")
    try:
        pfdb.db.execute_sql(f"INSERT INTO {table} (id) VALUES (7)")
        assert pfdb.db.execute_sql(f"SELECT id FROM {table}").fetchall() == [(7,)]
        assert name in pfdb.db.get_tables()
        assert Product.select().count() == 0  # the products table is still there
    finally:
        pfdb.db.execute_sql(f"DROP TABLE {table}")
