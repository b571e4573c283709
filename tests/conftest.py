"""Fixtures: every test starts from a clean, migrated database (docs/testing.md).

SQLite: a copy of a migrated template file in tmp_path. PostgreSQL: one shared migrated
database, put back into the template's state after each test (tests/shared_database.py), or a
database of the test's own with ``@pytest.mark.fresh_database`` / ``fresh_database_url``.

PostgreSQL comes from ``PFDB_TEST_POSTGRES_URL`` (default: the local server, user postgres).
If it cannot be reached the PostgreSQL half is skipped with the reason, unless
``PFDB_REQUIRE_POSTGRES=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import os
import queue
import shutil
import sys
import tempfile
import threading
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import bytecode_cache
import memory_tablespace
import pytest
from shared_database import SharedDatabase

import pfdb
import pfdb.config
from pfdb import migrations

ROOT = Path(__file__).resolve().parent.parent
PG_ADMIN_URL = os.environ.get("PFDB_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REQUIRE_PG = os.environ.get("PFDB_REQUIRE_POSTGRES", "").strip().lower() in ("1", "true", "yes")
# Every PostgreSQL test in a database of its own, as before the shared database (slow; to rule it out).
ALL_FRESH = os.environ.get("PFDB_TEST_FRESH_DATABASES", "").strip().lower() in ("1", "true", "yes")

# Tests never read a developer's environment or .env by accident.
for _name in (
    "DATABASE_URL",
    "DATABASE_POOL_SIZE",
    "DATABASE_MAX_OVERFLOW",
    "DATABASE_POOL_TIMEOUT",
    "DATABASE_POOL_RECYCLE",
    "DATABASE_ECHO",
    "MIGRATION_AUTO_UPGRADE",
    "MIGRATION_BACKUP_BEFORE_UPGRADE",
    "MIGRATION_LOCK_TIMEOUT",
    "DATABASE_CONNECT_TIMEOUT",
    "DATABASE_STATEMENT_TIMEOUT",
    "CACHE_URL",
    "CACHE_TTL",
    "CACHE_TIMEOUT",
    "CACHE_KEY_PREFIX",
    "DATABASE_POOLER",
    "DATABASE_DIRECT_URL",
    "DATABASE_REPLICA_URLS",
    "DATABASE_REPLICA_MAX_LAG",
):
    os.environ.pop(_name, None)


# -- the run: workers and temporary files (docs/testing.md) ---------------------------------------
# Much of a test's time is waiting (servers, subprocesses, fsync, timeouts), so more workers than
# cores pay: on 2 busy cores (load 8) the whole suite took 396 s with -n 2, 240 s with -n 4.
WORKERS = 4
# tmp_path on a tmpfs when there is one: the SQLite files the tests write need no disk. Tests
# that need a real disk's behaviour (read-only, full) mount their own.
TEMP_ROOT = Path("/dev/shm")
if "PYTEST_DEBUG_TEMPROOT" not in os.environ and TEMP_ROOT.is_dir() and os.access(TEMP_ROOT, os.W_OK | os.X_OK):
    os.environ["PYTEST_DEBUG_TEMPROOT"] = str(TEMP_ROOT)
# With PYTHONDONTWRITEBYTECODE set, each Python the tests start (workers, ~180 CLI subprocesses)
# compiled pfdb anew; their bytecode goes to a cache of the tests' own instead, never the tree.
if os.environ.get("PYTHONDONTWRITEBYTECODE") and "PYTHONPYCACHEPREFIX" not in os.environ:
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = os.path.join(
        os.environ.get("PYTEST_DEBUG_TEMPROOT") or tempfile.gettempdir(), f"pfdb-test-pycache-{os.getuid()}"
    )


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """``pytest`` alone runs on WORKERS workers; ``-n 0`` or ``-p no:xdist`` runs in one process."""
    if not config.pluginmanager.hasplugin("xdist") or "PYTEST_XDIST_WORKER" in os.environ:
        return
    if config.option.numprocesses is None and not config.getoption("usepdb") and not config.getoption("trace"):
        config.option.numprocesses = WORKERS
        if config.option.dist == "no":
            config.option.dist = "worksteal"


@pytest.hookimpl(tryfirst=True)
def pytest_sessionstart(session):
    """Before pytest-xdist starts its workers: fill the bytecode cache once, not in every worker (tests/bytecode_cache.py)."""
    config = session.config
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    bytecode_cache.fill(ROOT / "tests", dict(os.environ))


# Each DROP DATABASE forces a checkpoint on PostgreSQL 15 (one to three seconds on a busy disk,
# and a burst of writes for every other test on the server; far less with the test databases in
# memory, tests/memory_tablespace.py, but a server elsewhere has none): used databases are dropped
# DROP_BATCH at a time, DROP_SIDE_BY_SIDE connections at once, so that they share checkpoints
# (a PostgreSQL-heavy part of the suite: 279 s dropping each at once, 204 s in batches of 16;
# 16 side by side ran a shared server with max_connections = 100 out of connections, hence 8 and 4).
DROP_BATCH = 8
DROP_SIDE_BY_SIDE = 4


def pg_url(dbname: str) -> str:
    base, _, _ = PG_ADMIN_URL.rpartition("/")
    return f"{base}/{dbname}"


class PostgresServer:
    """Creates and drops test databases through autocommit admin connections.

    CREATE DATABASE … TEMPLATE costs a fifth of a second or more here and DROP DATABASE waits
    for a checkpoint (one to three seconds on a busy disk), so for the tests that need a database
    of their own one background thread keeps a copy of the migrated template ready, and another
    drops used databases DROP_BATCH at a time while the tests run: a copy never waits behind the
    drops. Ordinary tests share one database (``pg_shared``).
    """

    def __init__(self):
        self.conn = self._connect()
        memory_tablespace.drop_stale(self.conn)
        # Test databases in memory when asked for and the server allows it (tests/memory_tablespace.py).
        self.tablespace = memory_tablespace.create(self.conn) if memory_tablespace.ENABLED else None
        self.created: list[str] = []
        self._ready: queue.Queue[str] = queue.Queue(maxsize=1)  # few tests need one now: each unused is a DROP
        self._drops: queue.Queue[str] = queue.Queue()
        self._template: str | None = None
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}

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
        self.execute(
            f'CREATE DATABASE "{name}"'
            + (f' TEMPLATE "{template}"' if template else "")
            + (f' TABLESPACE "{self.tablespace}"' if self.tablespace else ""),
            conn,
        )
        return name

    def release(self, name: str) -> None:
        """Drop a used database in the background."""
        self._drops.put(name)
        self._start("dropper", self._drop_released)

    def copy_of_template(self, template: str) -> str:
        """A migrated copy: the one kept ready, else one made now."""
        self._template = template
        self._start("copier", self._prepare)
        try:
            return self._ready.get_nowait()
        except queue.Empty:
            return self.create(template)

    def _start(self, role: str, target) -> None:
        if role not in self._threads:
            self._threads[role] = threading.Thread(target=target, name=f"pfdb-test-{role}", daemon=True)
            self._threads[role].start()

    def _prepare(self) -> None:
        conn = self._connect()
        while not self._stop.is_set():
            if self._template is None or self._ready.full():
                self._stop.wait(0.05)
                continue
            try:
                name = self.create(self._template, conn)
            except Exception:  # copy_of_template makes its own copies then, and reports any error
                break
            self._ready.put(name)  # only this thread fills the queue, and it was not full
        conn.close()

    def _drop_released(self) -> None:
        """Drop what the tests released, DROP_BATCH at a time side by side: concurrent DROP DATABASEs share checkpoints."""
        while not self._stop.is_set():
            if self._drops.qsize() < DROP_BATCH:
                self._stop.wait(0.1)
                continue
            names = []
            while not self._drops.empty():
                names.append(self._drops.get())
            failed = []
            with ThreadPoolExecutor(max_workers=DROP_SIDE_BY_SIDE) as pool:
                for name, error in zip(names, pool.map(self._try_drop, names), strict=True):
                    if error:
                        failed.append(name)
            for name in failed:
                self._drops.put(name)
            if failed:
                return  # close() drops what is left, and reports the error

    def _try_drop(self, name: str) -> Exception | None:
        try:
            self._drop_apart(name)
        except Exception as exc:
            return exc
        return None

    def close(self) -> None:
        self._stop.set()
        for thread in self._threads.values():
            thread.join(timeout=60)
        leftovers = list(self.created)
        while not self._ready.empty():
            leftovers.append(self._ready.get())
        while not self._drops.empty():
            leftovers.append(self._drops.get())
        # Each DROP DATABASE waits for a checkpoint (a second or two on a busy disk); dropped side
        # by side they share checkpoints, so the session ends sooner.
        with ThreadPoolExecutor(max_workers=DROP_SIDE_BY_SIDE) as pool:
            list(pool.map(self._drop_apart, leftovers))
        if self.tablespace:
            memory_tablespace.drop(self.conn, self.tablespace)
        self.conn.close()

    def _drop_apart(self, name: str) -> None:
        conn = self._connect()
        try:
            self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', conn)
        finally:
            conn.close()


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
    """The URL of a database with no tables at all.

    On PostgreSQL a shared empty database, whose schemas are dropped and made again after the
    test (tests/shared_database.py); with ``@pytest.mark.fresh_database`` a new one of its own.
    """
    if backend == "sqlite":
        return f"sqlite:///{tmp_path / 'pfdb.db'}"
    server = request.getfixturevalue("pg_server")
    if ALL_FRESH or request.node.get_closest_marker("fresh_database"):
        name = server.create()
        request.addfinalizer(lambda: (pfdb.close_database(), server.release(name)))
        return pg_url(name)
    shared = request.getfixturevalue("pg_shared_empty")
    name = shared.acquire()

    def reset() -> None:
        pfdb.close_database()
        shared.reset(request.node.nodeid)  # a state it cannot undo costs a new empty database, no more

    request.addfinalizer(reset)
    return pg_url(name)


@pytest.fixture(scope="session")
def pg_shared_empty(pg_server):
    """The one empty PostgreSQL database that ``empty_url`` tests share, emptied after each."""
    shared = SharedDatabase(create=pg_server.create, discard=pg_server.release, url_of=pg_url, empty=True)
    yield shared
    shared.close()
    if shared.name:
        pg_server.release(shared.name)


@pytest.fixture
def sqlite_url(tmp_path, sqlite_template) -> str:
    """A fresh, migrated SQLite database (for SQLite-only behaviour)."""
    path = tmp_path / "pfdb.db"
    shutil.copyfile(sqlite_template, path)
    return f"sqlite:///{path}"


# How many tests -k, -m or --deselect left out of this run (tests/test_packaging.py compares the
# sdist's collection with this run's own when it is the whole suite).
DESELECTED = pytest.StashKey[int]()


def pytest_deselected(items):
    if items:
        config = items[0].config
        config.stash[DESELECTED] = config.stash.get(DESELECTED, 0) + len(items)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "fresh_database: this test's PostgreSQL database is a copy of its own, "
        "never the shared one (see docs/testing.md)",
    )
    config.addinivalue_line(
        "markers",
        "real_password_hashes: this test hashes with werkzeug's default (scrypt), not the suite's cheap PBKDF2",
    )


@pytest.fixture(scope="session")
def pg_shared(pg_server, pg_template):
    """The one migrated PostgreSQL database that ordinary tests share, reset after each."""
    # Created in the foreground: the background copier (and the copies it keeps ready, each a
    # DROP DATABASE at the end) only starts when a test asks for a database of its own.
    shared = SharedDatabase(create=lambda: pg_server.create(pg_template), discard=pg_server.release, url_of=pg_url)
    yield shared
    shared.close()
    if shared.name:
        pg_server.release(shared.name)  # dropped with the server's other leftovers


@pytest.fixture
def fresh_postgres_url(pg_server, pg_template, request) -> str:
    """A migrated PostgreSQL database of this test's own, dropped afterwards."""
    name = pg_server.copy_of_template(pg_template)
    request.addfinalizer(lambda: (pfdb.close_database(), pg_server.release(name)))
    return pg_url(name)


@pytest.fixture
def postgres_url(request) -> str:
    """A clean, migrated PostgreSQL database (for PostgreSQL-only behaviour).

    The shared database, put back into the template's state after the test (a changed schema
    gets a fresh copy), or with ``@pytest.mark.fresh_database`` a database of the test's own.
    """
    if ALL_FRESH or request.node.get_closest_marker("fresh_database"):
        return request.getfixturevalue("fresh_postgres_url")
    shared = request.getfixturevalue("pg_shared")
    name = shared.acquire()

    def reset() -> None:
        pfdb.close_database()  # pfdb's pool goes first: its idle connections would be terminated mid-pool
        if not shared.reset(request.node.nodeid):
            # A warning reaches the summary under pytest-xdist too, and names the test.
            warnings.warn(
                "this test changed the shared PostgreSQL database's schema, which cost a fresh copy: "
                "mark it @pytest.mark.fresh_database",
                pytest.PytestWarning,
                stacklevel=1,
            )

    request.addfinalizer(reset)
    return pg_url(name)


@pytest.fixture
def database_url(backend, request) -> str:
    """The URL of a clean database with the whole schema migrated, on each backend."""
    return request.getfixturevalue("sqlite_url" if backend == "sqlite" else "postgres_url")


@pytest.fixture
def fresh_database_url(backend, request) -> str:
    """Like ``database_url``, but on PostgreSQL a database of this test's own (SQLite's always is)."""
    return request.getfixturevalue("sqlite_url" if backend == "sqlite" else "fresh_postgres_url")


@pytest.fixture
def db(database_url):
    """``pfdb.db`` bound to a clean, migrated database."""
    pfdb.init_database(database_url)
    yield pfdb.db


@pytest.fixture(autouse=True)
def _cheap_password_hashes(request, monkeypatch):
    """New password hashes use one thousand rounds of PBKDF2, except in tests marked real_password_hashes.

    werkzeug's default, scrypt, costs 60-90 ms of CPU per hash here, by design: 86 hashes were
    5 s of the suite's CPU. What these tests check is the flow (hashed, verified, never shown);
    the real default has its own test. Rails' SecurePassword.min_cost does the same for its tests.
    """
    if request.node.get_closest_marker("real_password_hashes"):
        return
    import werkzeug.security

    real = werkzeug.security.generate_password_hash
    monkeypatch.setattr(
        werkzeug.security,
        "generate_password_hash",
        lambda password, method="pbkdf2:sha256:1000", salt_length=16: real(password, method, salt_length),
    )


@pytest.fixture(autouse=True)
def _reset_pfdb(tmp_path_factory, monkeypatch):
    # pfdb status caches its drift answer in $XDG_CACHE_HOME/pfdb: one cache per test.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("cache")))
    # Each test works in a folder of its own: PostgreSQL's backups (migrate's backup before an
    # upgrade among them) go to ./backups, which was the checkout's own folder.
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
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
