"""pfdb.flask on both backends: every request gives its connection back and leaves no transaction open."""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

import pfdb
import pfdb.flask
from pfdb import Configuration, User

flask = pytest.importorskip("flask")

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def app(db):
    app = flask.Flask("pfdbtest")
    pfdb.flask.init_app(app)

    @app.get("/count")
    def count():
        return {"configuration": Configuration.select().count()}

    @app.post("/fail-in-atomic")
    def fail_in_atomic():
        with pfdb.db.atomic():
            Configuration.create(key="never", value="x")
            raise RuntimeError("view failed inside atomic()")

    @app.post("/left-open")
    def left_open():
        pfdb.db.atomic().__enter__()  # a transaction the view never closes
        Configuration.create(key="dangling", value="x")
        return "ok"

    @app.post("/raw-begin")
    def raw_begin():
        pfdb.db.execute_sql("BEGIN")  # one peewee does not even track
        pfdb.db.execute_sql(
            "INSERT INTO configuration (key, value, value_type, is_sensitive, created_at, updated_at) "
            "VALUES ('raw', 'x', 'string', false, '2026-01-01', '2026-01-01')"
        )
        raise RuntimeError("and then it failed")

    @app.post("/commit")
    def commit():
        with pfdb.db.atomic():
            Configuration.create(key=f"ok{Configuration.select().count()}", value="x")
        return "ok"

    return app


def assert_nothing_left(backend: str, database_url: str) -> None:
    database = pfdb.db.obj
    assert database.is_closed() and not database.in_transaction()
    if backend == "postgresql":
        assert database.pool_usage()["in_use"] == 0
        name = database.pfdb_url.database
        with pfdb.db_session_scope():
            idle = pfdb.db.execute_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND state LIKE 'idle in transaction%%'",
                (name,),
            ).fetchone()[0]
        pfdb.db.close()
        assert idle == 0
    else:
        # no connection holds the write lock: another one gets it at once
        other = sqlite3.connect(database_url.removeprefix("sqlite:///"), timeout=0, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        other.execute("ROLLBACK")
        other.close()


def test_requests_give_back_their_connections(app, backend, database_url):
    client = app.test_client()
    statuses = []
    for _ in range(15):
        statuses.append(client.get("/count").status_code)
        statuses.append(client.post("/fail-in-atomic").status_code)
        statuses.append(client.post("/left-open").status_code)
        statuses.append(client.post("/raw-begin").status_code)
        statuses.append(client.post("/commit").status_code)
    assert statuses == [200, 500, 200, 500, 200] * 15
    assert_nothing_left(backend, database_url)
    keys = {c.key for c in Configuration.select()}
    pfdb.db.close()
    assert keys == {f"ok{i}" for i in range(15)}  # the open transactions were rolled back
    assert client.get("/count").get_json() == {"configuration": 15}
    assert_nothing_left(backend, database_url)


def test_the_example_app_lists_users(db, backend, database_url):
    spec = importlib.util.spec_from_file_location("flask_app_example", ROOT / "examples" / "flask_app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pfdb.db_session_scope():
        for email, admin in (("a@example.com", True), ("b@example.com", False)):
            user = User(email=email, is_admin=admin, first_name="Ann" if admin else None)
            user.set_password("long enough")
            user.save()
    pfdb.db.close()
    client = module.create_app(database_url).test_client()
    users = client.get("/users").get_json()
    assert [u["email"] for u in users] == ["b@example.com", "a@example.com"]
    assert users[1]["name"] == "Ann" and users[1]["is_admin"] is True
    assert all("password" not in key for u in users for key in u)
    assert [u["email"] for u in client.get("/users?admin=1").get_json()] == ["a@example.com"]
    assert client.get("/health").status_code == 200
    assert_nothing_left(backend, database_url)


def test_importing_pfdb_flask_does_not_import_flask():
    code = "import sys, pfdb, pfdb.flask; print('flask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.strip() == "False"
