"""pfdb behind PgBouncer in transaction pooling mode (docs/pgbouncer.md), against a real PgBouncer.

Each test's PgBouncer pools at most 2 server connections per database, so pfdb's clients
(threads, processes) really share them: a client's next transaction may run on another server
connection, and another client's session settings may sit on the one it gets.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import subprocess
import sys
import threading
import time
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import processes
import psycopg2
import pytest
from conftest import PG_ADMIN_URL, pg_url
from pgbouncer import PgBouncer, require_pgbouncer

import pfdb
from pfdb.config import load_settings
from pfdb.errors import ConfigError
from pfdb.models import Product

# The migration lock held in this test's database (other tests on the server have their own).
ADVISORY = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
    "AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)
# Transactions that have waited for the migration lock: their age in seconds.
WAITERS = (
    "SELECT extract(epoch FROM now() - xact_start)::float FROM pg_stat_activity "
    "WHERE datname = current_database() AND state = 'idle in transaction' "
    "AND query LIKE 'SELECT pg_try_advisory_xact_lock%'"
)
ROOT = Path(__file__).resolve().parent.parent
INITIAL = ROOT / "migrations" / "001_initial.py"


# -- settings (no server needed) -----------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "env", "message"),
    [
        ("postgresql://u@h/db", {"DATABASE_POOLER": "statement"}, "DATABASE_POOLER must be one of none, session"),
        ("postgresql://u@h/db", {"DATABASE_DIRECT_URL": "sqlite:///x.db"}, "DATABASE_DIRECT_URL must be a PostgreSQL"),
        ("postgresql://u@h/db", {"DATABASE_DIRECT_URL": "postgresql://h"}, "DATABASE_DIRECT_URL has no database name"),
        ("sqlite:///x.db", {"DATABASE_POOLER": "transaction"}, "apply to PostgreSQL only"),
    ],
)
def test_bad_pooler_settings_are_refused(url, env, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(url, environ=env)


def test_session_url_names_the_command_and_the_setting():
    pooled = load_settings("postgresql://u:pw@bouncer:6432/shop", environ={"DATABASE_POOLER": "transaction"})
    with pytest.raises(ConfigError, match=r"pfdb backup \(pg_dump\) needs a direct connection") as caught:
        pooled.session_url("pfdb backup (pg_dump)")
    assert "DATABASE_DIRECT_URL" in str(caught.value) and "pw" not in str(caught.value)
    direct = load_settings(
        "postgresql://u:pw@bouncer:6432/shop",
        environ={"DATABASE_POOLER": "transaction", "DATABASE_DIRECT_URL": "postgresql://u:secret@db:5432/shop"},
    )
    assert direct.session_url("x").port == 5432
    assert direct.as_dict()["direct_url"] == "postgresql://u:***@db:5432/shop"
    plain = load_settings("postgresql://u@db:5432/shop", environ={})
    assert plain.session_url("x") is plain.database_url


# -- a PgBouncer of the module's own ----------------------------------------------------------------
@pytest.fixture(scope="module")
def bouncer(pg_server):
    require_pgbouncer()
    server = urlsplit(PG_ADMIN_URL)
    with PgBouncer(server_host=server.hostname or "127.0.0.1", server_port=server.port or 5432) as running:
        yield running


def _pooled(bouncer, pg_server, name: str, monkeypatch) -> SimpleNamespace:
    url = bouncer.url(name)
    env = {"DATABASE_URL": url, "DATABASE_POOLER": "transaction"}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DATABASE_DIRECT_URL", raising=False)
    return SimpleNamespace(url=url, direct=pg_url(name), name=name, env=env)


@pytest.fixture
def pooled(bouncer, pg_server, monkeypatch, request):
    """An empty database, reached through PgBouncer: ``url`` (pooled), ``direct``, ``env``."""
    name = pg_server.create()
    request.addfinalizer(lambda: (pfdb.close_database(), pg_server.release(name)))
    return _pooled(bouncer, pg_server, name, monkeypatch)


@pytest.fixture
def pooled_migrated(bouncer, pg_server, fresh_postgres_url, monkeypatch):
    """A migrated database of the test's own, reached through PgBouncer."""
    return _pooled(bouncer, pg_server, urlsplit(fresh_postgres_url).path.lstrip("/"), monkeypatch)


def _one(url: str, sql: str):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            cursor.execute(sql)
            return cursor.fetchall() if cursor.description else None
    finally:
        conn.close()


def _pfdb(*args: str, env: dict, timeout: float = 120) -> processes.Popen:
    return processes.Popen(
        [sys.executable, "-m", "pfdb", *args],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: processes.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_the_pooler_really_moves_a_client_between_server_connections(pooled):
    """The premise of every other test here: a session does not survive its transaction."""
    one, other = psycopg2.connect(pooled.url), psycopg2.connect(pooled.url)
    one.autocommit = other.autocommit = True
    try:
        first = _pid(one)
        other.autocommit = False
        assert _pid(other) == first  # the server connection ``one`` just gave back
        assert _pid(one) != first  # ``other`` keeps it for its open transaction
        other.rollback()
    finally:
        one.close()
        other.close()


def _pid(conn) -> int:
    with conn.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


# -- migrations ------------------------------------------------------------------------------------
def test_init_status_migrate_rollback_through_the_pooler(pooled, run_cli, tmp_path, monkeypatch):
    code, out, err = run_cli("init", "--json")
    assert code == 0, err
    assert json.loads(out)["current"] == "004_tenant_registry"
    code, out, _ = run_cli("status", "--json", "--exit-code")
    assert code == 0 and json.loads(out)["up_to_date"]

    # Data in the database: a rollback takes a backup first, and pg_dump needs a session.
    code, out, err = run_cli("rollback", "--yes")
    assert code == 2
    assert "pfdb backup (pg_dump) needs a direct connection to PostgreSQL" in err
    assert "DATABASE_DIRECT_URL" in err and "MIGRATION_BACKUP_BEFORE_UPGRADE=false" in err
    assert json.loads(run_cli("status", "--json")[1])["up_to_date"]  # nothing was rolled back

    monkeypatch.setenv("DATABASE_DIRECT_URL", pooled.direct)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("rollback", "--yes", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["rolled_back"] == ["004_tenant_registry"]
    assert Path(result["backup"]["path"]).is_file()
    code, out, err = run_cli("migrate", "--json")
    assert code == 0, err
    assert json.loads(out)["applied"] == ["004_tenant_registry"]

    monkeypatch.delenv("DATABASE_DIRECT_URL")
    monkeypatch.setenv("MIGRATION_BACKUP_BEFORE_UPGRADE", "false")
    code, out, err = run_cli("rollback", "zero", "--yes")
    assert code == 0, err
    code, out, err = run_cli("migrate", "--json")
    assert code == 0, err
    assert len(json.loads(out)["applied"]) == 4
    # No session state of pfdb's migration lock is left on the server connections.
    assert _one(pooled.direct, ADVISORY)[0][0] == 0


def test_init_creates_a_missing_database_through_the_direct_url(bouncer, pg_server, monkeypatch, request):
    name = f"pfdb_test_pgb_{os.getpid()}_{int(time.monotonic() * 1000)}"
    request.addfinalizer(lambda: (pfdb.close_database(), pg_server.release(name)))
    pooled = _pooled(bouncer, pg_server, name, monkeypatch)
    # Without it: refused with the fix (PgBouncer passes the server's "does not exist" on, or,
    # retrying its failed login, lets the connection time out).
    env = {**pooled.env, "DATABASE_CONNECT_TIMEOUT": "2"}
    code, _, err = _finish(_pfdb("init", env=env))
    assert code == 1 and "DATABASE_DIRECT_URL" in err, err
    assert _one(PG_ADMIN_URL, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'") == [(0,)]
    code, out, err = _finish(_pfdb("init", env={**env, "DATABASE_DIRECT_URL": pooled.direct}))
    assert code == 0, err
    assert "(postgresql, created)" in out and "up to date" in out


SLOW = """
import time


def migrate(migrator, database, *, fake=False):
    migrator.sql("CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    migrator.run(time.sleep, {seconds})


def rollback(migrator, database, *, fake=False):
    migrator.sql("DROP TABLE {table}")
"""


@pytest.fixture
def slow_migrations(tmp_path, monkeypatch):
    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_initial.py").write_text(INITIAL.read_text())
    for number in (2, 3, 4):
        (folder / f"00{number}_slow.py").write_text(SLOW.format(table=f"slow_{number}", seconds=0.7))
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(folder))
    return folder


def test_two_concurrent_migrates_one_applies_everything_the_other_waits(pooled, slow_migrations):
    env = {**pooled.env, "PFDB_MIGRATIONS_DIR": str(slow_migrations), "MIGRATION_BACKUP_BEFORE_UPGRADE": "false"}
    procs = [_pfdb("migrate", "--json", env=env) for _ in range(2)]
    # The one that waits holds no server connection meanwhile (the pool has two): it used to
    # poll for the lock inside an open transaction, so the other's log writer queued for a
    # connection and every step took 10 s instead of 0.7 s.
    waiting_in_a_transaction, started = 0.0, time.monotonic()
    while any(p.poll() is None for p in procs):
        ages = _one(pooled.direct, WAITERS)
        waiting_in_a_transaction = max([waiting_in_a_transaction, *(age for (age,) in ages)])
        time.sleep(0.1)
    took = time.monotonic() - started
    results = [_finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in results), results
    # Held for the whole run before the fix; a starved CPU may pause a waiter for a moment
    # between its try and its rollback, so the bound is a third of the run, not a constant.
    assert waiting_in_a_transaction < max(0.5, took / 3), (waiting_in_a_transaction, took)
    # Every migration once, in order, between the two runs. As a rule one applies them all; the
    # lock is held per migration, so a run starved of CPU for longer than the waiter's settle
    # pause between two of its steps lets the waiter take the next ones (CI once: 001-003, 004).
    applied = [json.loads(out)["applied"] for _, out, _ in results]
    assert sorted(applied[0] + applied[1]) == ["001_initial", "002_slow", "003_slow", "004_slow"], applied
    assert all(names == sorted(names) for names in applied), applied
    rows = _one(pooled.direct, "SELECT name FROM migratehistory ORDER BY id")
    assert [r[0] for r in rows] == ["001_initial", "002_slow", "003_slow", "004_slow"]


# A step that holds the migration lock until the test lets it go (at most a minute).
HELD = """
import time
from pathlib import Path


def _until_released(marker):
    deadline = time.monotonic() + 60
    while not Path(marker).exists() and time.monotonic() < deadline:
        time.sleep(0.02)


def migrate(migrator, database, *, fake=False):
    migrator.sql("CREATE TABLE {table} (id INTEGER PRIMARY KEY)")
    migrator.run(_until_released, {marker!r})


def rollback(migrator, database, *, fake=False):
    migrator.sql("DROP TABLE {table}")
"""


def test_a_migrate_that_cannot_get_the_lock_says_so(pooled, slow_migrations, tmp_path):
    env = {**pooled.env, "PFDB_MIGRATIONS_DIR": str(slow_migrations), "MIGRATION_BACKUP_BEFORE_UPGRADE": "false"}
    # 002 holds the lock until the second migrate has failed (it slept a fixed 4 s, a margin for
    # that process's start on a loaded machine); 003 and 004 are quick.
    released = tmp_path / "released"
    (slow_migrations / "002_slow.py").write_text(HELD.format(table="slow_2", marker=str(released)))
    for number in (3, 4):
        (slow_migrations / f"00{number}_slow.py").write_text(SLOW.format(table=f"slow_{number}", seconds=0.05))
    first = _pfdb("migrate", "--json", env=env)
    try:
        deadline, held_since = time.monotonic() + 30, None
        while held_since is None or time.monotonic() - held_since < 0.4:  # inside 002, not between steps
            assert time.monotonic() < deadline, "the first migrate never held the lock"
            held = _one(pooled.direct, ADVISORY)[0][0]
            held_since = (held_since or time.monotonic()) if held else None
            time.sleep(0.05)
        code, _, err = _finish(_pfdb("migrate", "--lock-timeout", "0.5", env=env))
        assert _one(pooled.direct, ADVISORY)[0][0], "002 let the lock go before the second migrate ended"
    finally:
        released.touch()
    assert code != 0
    assert "another process held the migration lock for more than 0.5 s" in err
    code, out, err = _finish(first)
    assert code == 0, err
    assert json.loads(out)["applied"][-1] == "004_slow"


# -- feeds ----------------------------------------------------------------------------------------
def _feed(path: Path, prefix: str, rows: int, *, full: bool) -> Path:
    """A pfdb CSV; ``full`` carries categories and images, otherwise only SKU, name and price,
    so the two feeds' staging tables have different columns."""
    lines = ["sku,name,price,currency,inventory_quantity,status,category,images" if full else "sku,name,price"]
    for i in range(rows):
        if full:
            lines.append(
                f"{prefix}-{i},Item {i},{i + 1}.50,EUR,{i},active,Feed {prefix} > Sub {i % 3},"
                f"https://img.example.com/{prefix}/{i}.jpg|https://img.example.com/{prefix}/{i}-b.jpg"
            )
        else:
            lines.append(f"{prefix}-{i},Item {i},{i + 1}.50")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def churn(pooled_migrated):
    """Another client running short transactions, so pfdb's clients keep changing server connections."""
    stop = threading.Event()

    def run() -> None:
        conn = psycopg2.connect(pooled_migrated.url)
        conn.autocommit = True
        with conn.cursor() as cursor:
            while not stop.is_set():
                cursor.execute("SELECT pg_sleep(0.003)")
        conn.close()

    thread = threading.Thread(target=run)
    thread.start()
    yield
    stop.set()
    thread.join(timeout=30)


def test_feed_imports_through_the_pooler_two_at_once(pooled_migrated, churn, tmp_path, run_cli):
    first, second = _feed(tmp_path / "a.csv", "A", 80, full=True), _feed(tmp_path / "b.csv", "B", 80, full=False)
    procs = [_pfdb("import", str(f), "--batch-size", "4", "--json", env=pooled_migrated.env) for f in (first, second)]
    results = [_finish(p) for p in procs]
    assert all(code == 0 for code, _, _ in results), results
    assert [json.loads(out)["created"] for _, out, _ in results] == [80, 80]
    counts = _one(
        pooled_migrated.direct,
        "SELECT (SELECT count(*) FROM products), (SELECT count(*) FROM product_images), "
        "(SELECT count(*) FROM products WHERE price = (split_part(sku, '-', 2)::int + 1.5))",
    )[0]
    assert counts == (160, 160, 160)
    # The staging tables lived and died with each batch's transaction: none is left on any
    # server connection PgBouncer keeps open.
    assert _one(pooled_migrated.direct, "SELECT count(*) FROM pg_class WHERE relname LIKE 'pfdb_import%'")[0][0] == 0

    # Again, in process: every row is now unchanged.
    code, out, err = run_cli("import", str(first), "--batch-size", "4", "--json")
    assert code == 0, err
    assert json.loads(out)["unchanged"] == 80


# -- health, info, models ---------------------------------------------------------------------------
def test_health_and_info_through_the_pooler(pooled_migrated, run_cli):
    code, out, err = run_cli("health", "--json")
    assert code == 0, err
    assert json.loads(out)["status"] == "healthy"
    code, out, err = run_cli("info", "--json")
    assert code == 0, err
    assert json.loads(out)["pool"]["pooler"] == "transaction"


def test_the_other_commands_through_the_pooler(pooled_migrated, run_cli, tmp_path):
    taxonomy = tmp_path / "taxonomy.txt"
    taxonomy.write_text("# Google_Product_Taxonomy_Version: 2021-09-21\n1 - Animals\n3237 - Animals > Live Animals\n")
    for argv in (
        ("import-categories", str(taxonomy)),
        ("import", str(ROOT / "examples" / "sample_feed.csv")),
        ("export", str(tmp_path / "out.csv")),
        ("create-admin", "boss@example.com", "--password-stdin"),
        ("optimize",),
        ("logs", "--limit", "5"),
    ):
        code, out, err = run_cli(*argv, stdin="a long enough password 1\n")
        assert code == 0, (argv, err)
    with (tmp_path / "out.csv").open(newline="") as handle:
        assert len(list(csv.reader(handle))) == 11  # a header and the ten products


def test_every_transaction_is_utc_while_clients_share_server_connections(pooled_migrated):
    """Threads of one process (pfdb's pool: a client each) and a stranger that sets Tokyo time."""
    pfdb.init_database(pooled_migrated.url, pooler="transaction", pool_size=4)
    stop = threading.Event()

    def stranger() -> None:  # a client of the same pooler with session settings of its own
        conn = psycopg2.connect(pooled_migrated.url)
        conn.autocommit = True
        with conn.cursor() as cursor:
            while not stop.is_set():
                cursor.execute("SET TIME ZONE 'Asia/Tokyo'")
                cursor.execute("SELECT pg_sleep(0.002)")
        conn.close()

    seen: list[tuple[str, int, str]] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(25):
                with pfdb.db_session_scope() as database:
                    zone, pid = database.execute_sql("SELECT current_setting('TimeZone'), pg_backend_pid()").fetchone()
                    made = Product.create(sku=f"TZ-{n}-{i}", name="utc check")
                    stored = database.execute_sql(
                        "SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM products WHERE id = %s",
                        (made.id,),
                    ).fetchone()[0]
                    seen.append((zone, pid, stored))
                    assert stored == made.created_at.strftime("%Y-%m-%d %H:%M:%S")
                with pfdb.db_read_scope():
                    zone = pfdb.db.execute_sql("SHOW TimeZone").fetchone()[0]
                    seen.append((zone, 0, ""))
                    read = Product.get(Product.sku == f"TZ-{n}-{i}")
                    assert read.created_at == made.created_at
        except BaseException as exc:
            errors.append(exc)

    outsider = threading.Thread(target=stranger)
    outsider.start()
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    stop.set()
    outsider.join(timeout=30)
    assert not errors, errors
    assert {zone for zone, _, _ in seen} == {"UTC"}
    assert len({pid for _, pid, _ in seen if pid}) == 2  # both server connections served pfdb
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    assert all(abs(dt.datetime.fromisoformat(s) - now) < dt.timedelta(minutes=5) for _, _, s in seen if s)


def test_statement_timeout_is_set_per_transaction_and_never_leaks(pooled_migrated):
    pfdb.init_database(pooled_migrated.url, pooler="transaction", statement_timeout=0.3)
    with pytest.raises(Exception, match="statement timeout"):
        with pfdb.db_session_scope() as database:
            database.execute_sql("SELECT pg_sleep(2)")
    with pfdb.db_session_scope() as database:
        assert database.execute_sql("SHOW statement_timeout").fetchone()[0] == "300ms"
    with pfdb.db_read_scope() as database:  # SET LOCAL first still lets SET TRANSACTION follow
        row = database.execute_sql(
            "SELECT current_setting('statement_timeout'), current_setting('transaction_isolation')"
        )
        assert row.fetchone() == ("300ms", "repeatable read")
    # No pfdb session SET reached the server connections other clients get.
    conn = psycopg2.connect(pooled_migrated.url)
    conn.autocommit = True
    try:
        with conn.cursor() as cursor:
            for _ in range(10):
                cursor.execute("SHOW statement_timeout")
                assert cursor.fetchone()[0] == "0"
    finally:
        conn.close()


# -- commands that need a session: a direct URL ---------------------------------------------------
def test_backup_and_restore_need_the_direct_url_and_use_it(pooled_migrated, run_cli, tmp_path, monkeypatch):
    target = tmp_path / "backups"
    code, out, err = run_cli("backup", "--backup-path", str(target))
    assert code == 2
    assert err.startswith("error: pfdb backup (pg_dump) needs a direct connection to PostgreSQL")
    assert "DATABASE_DIRECT_URL" in err
    assert not target.exists()  # nothing made before the refusal

    pfdb.init_database(pooled_migrated.url, pooler="transaction")
    with pfdb.db_session_scope():
        Product.create(sku="KEEP-1", name="kept")
    pfdb.close_database()
    monkeypatch.setenv("DATABASE_DIRECT_URL", pooled_migrated.direct)
    code, out, err = run_cli("backup", "--backup-path", str(target), "--json")
    assert code == 0, err
    dump = json.loads(out)["path"]

    # Checking a backup reads the file with pg_restore --list: no session, fine through the pooler.
    monkeypatch.delenv("DATABASE_DIRECT_URL")
    pfdb.init_database(pooled_migrated.url, pooler="transaction")
    assert pfdb.maintenance.check_backup(dump) == "004_tenant_registry"
    pfdb.close_database()
    code, _, err = run_cli("restore", dump, "--yes")
    assert code == 2 and "pfdb restore (pg_restore and psql) needs a direct connection" in err

    _one(pooled_migrated.direct, "DELETE FROM products")
    monkeypatch.setenv("DATABASE_DIRECT_URL", pooled_migrated.direct)
    code, out, err = run_cli("restore", dump, "--yes")
    assert code == 0, err
    assert _one(pooled_migrated.url, "SELECT sku FROM products") == [("KEEP-1",)]


def test_copy_reads_and_writes_through_the_pooler(pooled_migrated, pooled, churn, run_cli, tmp_path):
    """pfdb copy holds each side in one transaction (a snapshot; the fill), so a pooled URL works."""
    pfdb.init_database(pooled_migrated.url, pooler="transaction")
    with pfdb.db_session_scope():
        for i in range(30):
            Product.create(sku=f"CP-{i}", name=f"copied {i}", price=f"{i}.25")
    pfdb.close_database()
    laptop = f"sqlite:///{tmp_path / 'laptop.db'}"
    code, out, err = run_cli("copy", pooled_migrated.url, laptop, "--json")
    assert code == 0, err
    assert json.loads(out)["rows"] >= 30
    # Back into an empty database behind the pooler: migrated, filled, verified there.
    code, out, err = run_cli("copy", laptop, pooled.url, "--json")
    assert code == 0, err
    assert _one(pooled.direct, "SELECT count(*), sum(price) FROM products WHERE sku LIKE 'CP-%'")[0] == (
        30,
        Decimal("442.50"),
    )
