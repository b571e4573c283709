"""MIGRATION_LOCK_TIMEOUT on PostgreSQL: a migration's ALTER TABLE queued behind a long transaction
gives up after the lock timeout, so the readers queued behind it wait no longer; pfdb retries with
back-off, then fails naming the blocking session; it succeeds when the blocker ends meanwhile.

Real connections: one holds a lock on ``products`` in an open transaction, one reads it in a loop
and measures each read's wait (bounds generous: the machine is shared).
"""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import psycopg2
import pytest

import pfdb
from pfdb import migrations
from pfdb.config import load_settings
from pfdb.errors import ConfigError, MigrationBlockedError

ROOT = Path(__file__).resolve().parent.parent
pytestmark = [pytest.mark.postgres, pytest.mark.fresh_database]

ALTER = """
def migrate(migrator, database, *, fake=False):
    migrator.sql("ALTER TABLE products ADD COLUMN notes text")


def rollback(migrator, database, *, fake=False):
    migrator.sql("ALTER TABLE products DROP COLUMN notes")
"""
BLOCKING_QUERY = "SELECT count(*) FROM products /* nightly report */"


@pytest.fixture
def url(fresh_postgres_url, tmp_path, monkeypatch):
    folder = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "900_notes.py").write_text(ALTER, encoding="utf-8")
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(folder))
    return fresh_postgres_url


@pytest.fixture
def blocker(url):
    """A long transaction holding ACCESS SHARE on products (what any open read transaction holds)."""
    conn = psycopg2.connect(url)
    with conn.cursor() as cursor:
        cursor.execute(BLOCKING_QUERY)  # psycopg2 opened a transaction: it stays open, idle
    yield conn
    conn.close()


class Reader(threading.Thread):
    """Traffic: reads products in a loop on its own connection and keeps the longest wait."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        self.waits: list[float] = []
        self.stop = threading.Event()

    def run(self) -> None:
        with self.conn.cursor() as cursor:
            while not self.stop.is_set():
                start = time.monotonic()
                cursor.execute("SELECT count(*) FROM products")
                cursor.fetchone()
                self.waits.append(time.monotonic() - start)
                time.sleep(0.02)

    def finish(self) -> float:
        self.stop.set()
        self.join(timeout=30)
        self.conn.close()
        return max(self.waits)


def commit_once_the_alter_waited(url: str, blocker, seconds: float, seen: list[bool]) -> None:
    """Commit ``blocker`` once the migration's ALTER has queued behind it for ``seconds``
    (a fixed timer from the start would also count the migration's own lead-in). ``seen``
    gets whether the ALTER was seen waiting: the test checks it, so that a watcher that
    missed it shows up as a failure, not as a 30 s test."""
    watcher = psycopg2.connect(url)
    watcher.autocommit = True
    try:
        with watcher.cursor() as cursor:
            deadline = time.monotonic() + 30
            while not seen and time.monotonic() < deadline:
                cursor.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE%%'"
                )
                if cursor.fetchone()[0]:
                    seen.append(True)
                else:
                    time.sleep(0.02)
        time.sleep(seconds)
    finally:
        watcher.close()
        blocker.commit()


def has_notes() -> bool:
    return "notes" in {c.name for c in pfdb.db.get_columns("products")}


def test_readers_wait_no_longer_than_the_lock_timeout_and_the_error_names_the_blocker(url, blocker, monkeypatch):
    monkeypatch.setattr(migrations, "LOCK_BACKOFF", 0.25)  # half the shipped pause: the doubling shows as well
    pfdb.init_database(url, migration_lock_timeout=0.3, migration_backup_before_upgrade=False)
    reader = Reader(url)
    reader.start()
    time.sleep(0.1)
    start = time.monotonic()
    with pytest.raises(MigrationBlockedError) as blocked:
        migrations.migrate(lock_retries=2)
    took = time.monotonic() - start
    longest = reader.finish()
    error = blocked.value
    assert error.migration == "900_notes" and error.attempts == 3
    assert error.pid == blocker.get_backend_pid() and error.query == BLOCKING_QUERY
    message = str(error)
    assert "\n" not in message
    assert message.startswith("migration 900_notes waited 0.3 s for a lock on each of 3 tries: ")
    assert f"blocked by pid {error.pid} (idle in transaction" in message and "nightly report" in message
    assert f"pg_terminate_backend({error.pid})" in message
    assert took >= 3 * 0.3 + 0.25 + 0.5  # three tries, two pauses, the second twice the first
    assert len(reader.waits) >= 10  # the reader kept reading all along
    assert longest < 0.3 + 2.0, f"a reader waited {longest:.2f} s behind the migration"
    assert not has_notes() and migrations.status().pending == ("900_notes",)


def test_without_a_lock_timeout_readers_wait_as_long_as_the_blocker(url, blocker):
    """The measurement can fail: with no lock timeout the ALTER queues, and every read behind it."""
    pfdb.init_database(url, migration_lock_timeout=0, migration_backup_before_upgrade=False)
    reader = Reader(url)
    reader.start()
    time.sleep(0.1)
    seen: list[bool] = []
    threading.Thread(target=commit_once_the_alter_waited, args=(url, blocker, 0.8, seen)).start()
    assert migrations.migrate().applied == ("900_notes",)
    assert seen, "the watcher never saw the ALTER wait"
    assert reader.finish() > 0.6  # blocked behind the ALTER until the blocker committed (2x the 0.3 s bound)


def test_the_migration_succeeds_when_the_blocker_commits_during_the_retries(url, blocker):
    pfdb.init_database(url, migration_lock_timeout=0.3, migration_backup_before_upgrade=False)
    reader = Reader(url)
    reader.start()
    threading.Timer(0.8, blocker.commit).start()
    assert migrations.migrate().applied == ("900_notes",)
    longest = reader.finish()
    assert has_notes() and longest < 0.3 + 2.0


def test_a_blocked_rollback_is_retried_and_named_too(url):
    pfdb.init_database(url, migration_lock_timeout=0.2, migration_backup_before_upgrade=False)
    migrations.migrate()
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cursor:
            cursor.execute(BLOCKING_QUERY)
        with pytest.raises(MigrationBlockedError, match="blocked by pid") as blocked:
            migrations.rollback(destructive_ok=True, lock_retries=1)
        assert blocked.value.pid == conn.get_backend_pid() and blocked.value.attempts == 2
    finally:
        conn.close()
    assert migrations.rollback(destructive_ok=True).rolled_back == ("900_notes",)


def test_the_cli_fails_with_one_line(url, blocker, run_cli, monkeypatch):
    monkeypatch.setattr(migrations, "LOCK_BACKOFF", 0.05)  # the CLI's tries, not the shipped 3.5 s of pauses
    env = {"MIGRATION_LOCK_TIMEOUT": "0.2", "MIGRATION_BACKUP_BEFORE_UPGRADE": "false"}
    code, out, err = run_cli("--database-url", url, "migrate", env=env)
    assert code == 1 and out == ""
    assert err.startswith("error: migration 900_notes waited 0.2 s for a lock on each of 4 tries: blocked by pid ")
    assert "nightly report" in err and len(err.strip().splitlines()) == 1


def test_the_setting_is_read_and_checked():
    assert load_settings(environ={}).migration_lock_timeout == 10.0
    assert load_settings(environ={"MIGRATION_LOCK_TIMEOUT": "2.5"}).migration_lock_timeout == 2.5
    assert load_settings(environ={"MIGRATION_LOCK_TIMEOUT": "0"}).migration_lock_timeout == 0
    with pytest.raises(ConfigError, match="MIGRATION_LOCK_TIMEOUT must be a number of seconds"):
        load_settings(environ={"MIGRATION_LOCK_TIMEOUT": "soon"})
