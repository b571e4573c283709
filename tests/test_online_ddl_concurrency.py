"""Indexes built CONCURRENTLY while other pfdb processes migrate, directly and behind PgBouncer in
transaction pooling mode; and the rehearsal behind PgBouncer (it copies through DATABASE_DIRECT_URL).

The step that builds the index runs it outside its transaction: the migration must still be
applied exactly once when two ``pfdb migrate`` start together.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import processes
import psycopg2
import pytest
from conftest import PG_ADMIN_URL, pg_url
from pgbouncer import PgBouncer, require_pgbouncer

import pfdb
from pfdb import migrations
from pfdb.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.postgres

ONLINE = """
from pfdb.migrations import add_index_concurrently, drop_index_concurrently


def migrate(migrator, database, *, fake=False):
    add_index_concurrently(migrator, "products", "description")


def rollback(migrator, database, *, fake=False):
    drop_index_concurrently(migrator, "products", "description")
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    target = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "900_index.py").write_text(ONLINE, encoding="utf-8")
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(target))
    return target


def one(url: str, sql: str) -> list[tuple]:
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else []
    finally:
        conn.close()


def two_migrates(env: dict) -> list[dict]:
    procs = [
        processes.Popen(
            [sys.executable, "-m", "pfdb", "migrate", "--json"],
            env={**os.environ, **env, "MIGRATION_BACKUP_BEFORE_UPGRADE": "false"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), results
    return [json.loads(out) for out, _ in results]


def hold_old_transaction(url: str, seconds: float) -> threading.Thread:
    """An older transaction: CREATE INDEX CONCURRENTLY waits for it, so the build takes ``seconds``."""
    conn = psycopg2.connect(url)
    with conn.cursor() as cursor:
        cursor.execute("SELECT txid_current()")  # a transaction with an xid, open
    timer = threading.Timer(seconds, lambda: (conn.commit(), conn.close()))
    timer.start()
    return timer


@pytest.mark.fresh_database
def test_two_migrates_apply_the_concurrent_build_once(fresh_postgres_url, folder):
    timer = hold_old_transaction(fresh_postgres_url, 1.5)
    results = two_migrates({"DATABASE_URL": fresh_postgres_url, "PFDB_MIGRATIONS_DIR": str(folder)})
    timer.join()
    assert sorted(r["applied"] for r in results) == [[], ["900_index"]]
    assert one(fresh_postgres_url, "SELECT count(*) FROM migratehistory WHERE name = '900_index'") == [(1,)]
    valid = one(
        fresh_postgres_url, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'products_description'::regclass"
    )
    assert valid == [(True,)]


@pytest.fixture(scope="module")
def bouncer(pg_server):
    require_pgbouncer()
    server = urlsplit(PG_ADMIN_URL)
    with PgBouncer(server_host=server.hostname or "127.0.0.1", server_port=server.port or 5432) as running:
        yield running


@pytest.fixture
def pooled(bouncer, fresh_postgres_url, folder, monkeypatch):
    name = urlsplit(fresh_postgres_url).path.lstrip("/")
    env = {"DATABASE_URL": bouncer.url(name), "DATABASE_POOLER": "transaction", "PFDB_MIGRATIONS_DIR": str(folder)}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DATABASE_DIRECT_URL", raising=False)
    return env, pg_url(name)


@pytest.mark.fresh_database
def test_behind_pgbouncer_the_build_runs_and_is_recorded_once(pooled):
    env, direct = pooled
    timer = hold_old_transaction(direct, 1.5)
    results = two_migrates(env)
    timer.join()
    assert sorted(r["applied"] for r in results) == [[], ["900_index"]]
    assert one(direct, "SELECT count(*) FROM migratehistory WHERE name = '900_index'") == [(1,)]
    assert one(direct, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'products_description'::regclass") == [
        (True,)
    ]
    # No session setting was left on the pooler's server connections (its pool has 2; ask often).
    seen = {one(env["DATABASE_URL"], "SHOW lock_timeout")[0][0] for _ in range(12)}
    assert seen == {"0"}


@pytest.mark.fresh_database
def test_the_rehearsal_behind_pgbouncer_copies_through_the_direct_url(pooled, monkeypatch):
    env, direct = pooled
    pfdb.init_database()
    with pytest.raises(ConfigError, match="pfdb migrate --rehearse needs a direct connection to PostgreSQL"):
        pfdb.rehearse_migrations()
    monkeypatch.setenv("DATABASE_DIRECT_URL", direct)
    pfdb.init_database()
    result = pfdb.rehearse_migrations()
    assert result.ok and result.migrations == ("900_index",), result.as_dict()
    assert result.copy_method == "pg_dump"  # the pooler keeps server connections to the database open
    assert migrations.status().pending == ("900_index",)
