"""Fixtures: every test gets its own fresh database, SQLite in tmp_path or a new PostgreSQL database.

PostgreSQL comes from ``PFDB_TEST_POSTGRES_URL`` (default: the local server, user postgres).
If it cannot be reached the PostgreSQL half is skipped with the reason, unless
``PFDB_REQUIRE_POSTGRES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import threading
import uuid
from pathlib import Path

import pytest

import pfdb
import pfdb.config
from pfdb import migrations

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("PFDB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("PFDB_REQUIRE_POSTGRES", "").strip().lower() in ("1", "true", "yes")

# Tests never read a developer's environment or .env by accident.
for _name in ("DATABASE_URL", "DATABASE_POOL_SIZE", "DATABASE_MAX_OVERFLOW", "DATABASE_POOL_TIMEOUT",
              "DATABASE_POOL_RECYCLE", "DATABASE_ECHO", "MIGRATION_AUTO_UPGRADE", "MIGRATION_BACKUP_BEFORE_UPGRADE",
              "DATABASE_CONNECT_TIMEOUT", "DATABASE_STATEMENT_TIMEOUT"):
    os.environ.pop(_name, None)


def pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


class PostgresServer:
    """Creates and drops the per-test databases through autocommit admin connections.

    CREATE DATABASE … TEMPLATE costs most of a second here (it flushes the copy to disk),
    so a background thread keeps a couple of copies of the migrated template ready and
    drops used databases, while the tests run.
    """

    def __init__(self):
        self.conn = self._connect()
        self.created: list[str] = []
        self._ready: queue.Queue[str] = queue.Queue(maxsize=2)
        self._drops: queue.Queue[str] = queue.Queue()
        self._template: str | None = None
        self._stop = threading.Event()
        self._worker: threading.Thread | None = None

    @staticmethod
    def _connect():
        import psycopg2

        conn = psycopg2.connect(PG_ADMIN_URL, connect_timeout=3)
        conn.autocommit = True
        return conn

    def execute(self, sql: str, conn=None) -> None:
        with (conn or self.conn).cursor() as cur:
            cur.execute(sql)

    def create(self, template: str | None = None, conn=None) -> str:
        name = f"pfdb_test_{uuid.uuid4().hex[:12]}"
        self.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""), conn)
        return name

    def drop(self, name: str) -> None:
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def release(self, name: str) -> None:
        """Drop a used database in the background."""
        self._drops.put(name)

    def copy_of_template(self, template: str) -> str:
        if self._worker is None:
            self._template = template
            self._worker = threading.Thread(target=self._prepare, daemon=True)
            self._worker.start()
        return self._ready.get(timeout=120)

    def _prepare(self) -> None:
        conn = self._connect()
        while not self._stop.is_set():
            while not self._drops.empty():
                self.execute(f'DROP DATABASE IF EXISTS "{self._drops.get()}" WITH (FORCE)', conn)
            try:
                name = self.create(self._template, conn)
            except Exception:  # the main thread times out on the queue and reports
                break
            while not self._stop.is_set():
                try:
                    self._ready.put(name, timeout=0.2)
                    break
                except queue.Full:
                    while not self._drops.empty():
                        self.execute(f'DROP DATABASE IF EXISTS "{self._drops.get()}" WITH (FORCE)', conn)
            else:
                self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', conn)
        conn.close()

    def close(self) -> None:
        self._stop.set()
        if self._worker is not None:
            self._worker.join(timeout=30)
        leftovers = list(self.created)
        while not self._ready.empty():
            leftovers.append(self._ready.get())
        while not self._drops.empty():
            leftovers.append(self._drops.get())
        for name in leftovers:
            self.drop(name)
        self.conn.close()


@pytest.fixture(scope="session")
def pg_server():
    try:
        server = PostgresServer()
    except Exception as exc:  # no server here: skip (or fail in CI)
        reason = f"PostgreSQL not reachable at {pfdb.config.mask_url(PG_ADMIN_URL)}: {str(exc).strip().splitlines()[0]}"
        if REQUIRE_PG:
            pytest.fail(f"{reason} (PFDB_REQUIRE_POSTGRES=1)")
        pytest.skip(reason)
    yield server
    server.close()


@pytest.fixture(scope="session")
def pg_template(pg_server):
    """A database migrated once per session; each test copies it (CREATE DATABASE … TEMPLATE)."""
    name = pg_server.create()
    pg_server.created.append(name)
    pfdb.init_database(pg_url(name))
    migrations.migrate(backup=False)
    pfdb.close_database()
    return name


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory):
    path = tmp_path_factory.mktemp("template") / "template.db"
    pfdb.init_database(f"sqlite:///{path}")
    migrations.migrate(backup=False)
    pfdb.close_database()  # the last connection checkpoints and removes the WAL
    return path


BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def empty_url(backend, tmp_path, request) -> str:
    """The URL of a fresh database with no tables at all."""
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'pfdb.db'}"
    server = request.getfixturevalue("pg_server")
    name = server.create()
    request.addfinalizer(lambda: (pfdb.close_database(), server.release(name)))
    return pg_url(name)


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    """A fresh, migrated SQLite database (for SQLite-only behaviour)."""
    path = tmp_path / "pfdb.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def postgres_url(pg_server, pg_template, request) -> str:
    """A fresh, migrated PostgreSQL database (for PostgreSQL-only behaviour)."""
    name = pg_server.copy_of_template(pg_template)
    request.addfinalizer(lambda: (pfdb.close_database(), pg_server.release(name)))
    return pg_url(name)


@pytest.fixture
def database_url(backend, request) -> str:
    """The URL of a fresh database with the whole schema migrated, on each backend."""
    return request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")


@pytest.fixture
def db(database_url):
    """``pfdb.db`` bound to a fresh, migrated database."""
    pfdb.init_database(database_url)
    yield pfdb.db


@pytest.fixture(autouse=True)
def _reset_pfdb(tmp_path_factory, monkeypatch):
    # pfdb status caches its drift answer in $XDG_CACHE_HOME/pfdb: one cache per test.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    yield
    pfdb.close_database()


@pytest.fixture
def run_cli(capsys, monkeypatch):
    """Run ``pfdb ARGS…`` in process: returns (exit_code, stdout, stderr)."""
    from pfdb import cli

    def run(*argv: str, stdin: str | None = None, env: dict | None = None):
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        if stdin is not None:
            import io

            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = cli.main(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run
