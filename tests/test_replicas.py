"""Read replicas (docs/replicas.md) against a real primary and a streaming replica of its own.

One primary and one replica serve the whole module (tests/pg_servers.py: about two seconds to
start); pfdb is migrated into the primary's ``shop`` database once. Each test uses keys of its
own and leaves replay running. Replay is paused with ``pg_wal_replay_pause()`` to make the
replica's copy visibly older than the primary's.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import processes
import pytest
from pg_servers import TempPostgres, free_port

import pfdb
from pfdb import migrations
from pfdb.config import load_settings
from pfdb.database import db_read_scope, replica_report
from pfdb.errors import ConfigError, ServerInRecoveryError
from pfdb.models import Configuration

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def servers():
    with TempPostgres() as primary:
        replica = primary.replica()
        primary.sql("CREATE DATABASE shop")
        migrations.init(primary.url("shop"))
        pfdb.close_database()
        primary.wait_for_replay()
        yield primary, replica


@pytest.fixture
def paused(servers):
    """The replica, its replay paused for the test and resumed (and caught up) after it."""
    primary, replica = servers
    replica.sql("SELECT pg_wal_replay_pause()")
    yield replica
    replica.sql("SELECT pg_wal_replay_resume()")
    primary.wait_for_replay()


def bind(servers, **overrides):
    primary, replica = servers
    overrides.setdefault("replica_urls", replica.url("shop"))
    return pfdb.init_database(primary.url("shop"), **overrides)


def set_value(primary, key: str, value: str) -> None:
    """Write as another process would: straight to the primary, unknown to this process's pfdb."""
    primary.sql(
        f"INSERT INTO configuration (key, value, value_type, description, is_sensitive, created_at, updated_at) "
        f"VALUES ('{key}', '{value}', 'string', '', false, now(), now()) "
        f"ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
        dbname="shop",
    )


def value(key: str) -> str:
    return Configuration.get(Configuration.key == key).value


def fresh_process(servers, code: str, **env: str) -> str:
    primary, replica = servers
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "MIGRATION_"))}
    environment.update(
        PYTHONPATH=str(ROOT), DATABASE_URL=primary.url("shop"), DATABASE_REPLICA_URLS=replica.url("shop"), **env
    )
    prelude = "import pfdb\nfrom pfdb.models import Configuration\npfdb.init_database()\n"
    result = processes.run(
        [sys.executable, "-c", prelude + code], env=environment, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


# -- routing ---------------------------------------------------------------------------------------
@pytest.mark.postgres
def test_set_value_decides_on_the_primary_not_on_a_replica_behind_it(servers, paused):
    """Read-then-write in one transaction: a replica that has not seen the key must not make
    set_value() insert a second row (a unique-key error) instead of updating the first."""
    primary, _ = servers
    key = f"rmw-{uuid.uuid4().hex[:8]}"
    bind(servers)
    time.sleep(0.2)  # past this process's read-your-writes window: reads may use the replica
    set_value(primary, key, "from another process")  # the paused replica never sees this row
    assert Configuration.get_or_none(Configuration.key == key) is None  # the replica answers reads
    Configuration.set_value(key, "updated here")
    with pfdb.primary():
        assert [c.value for c in Configuration.select().where(Configuration.key == key)] == ["updated here"]


@pytest.mark.postgres
def test_reads_come_from_the_replica_and_a_process_reads_its_own_writes(servers, paused):
    primary, _ = servers
    set_value(primary, "colour", "red")
    paused.sql("SELECT pg_wal_replay_resume()")
    primary.wait_for_replay()
    paused.sql("SELECT pg_wal_replay_pause()")
    bind(servers)
    assert value("colour") == "red"

    set_value(primary, "colour", "green")  # another process writes; the replica has not replayed it
    assert value("colour") == "red"  # this process wrote nothing: the replica answers
    with db_read_scope():
        assert value("colour") == "red"
    with pfdb.primary():
        assert value("colour") == "green"
        with db_read_scope():
            assert value("colour") == "green"

    Configuration.update(value="blue").where(Configuration.key == "colour").execute()  # this process writes
    assert value("colour") == "blue"  # read-your-writes: the replica is behind it, the primary answers
    with db_read_scope():
        assert value("colour") == "blue"
    with pfdb.replica():  # asked for: the replica, behind or not
        assert value("colour") == "red"

    # A fresh process has written nothing: it reads the replica's older copy, unless it asks.
    assert fresh_process(servers, "print(Configuration.get(Configuration.key == 'colour').value)") == "red"
    code = "with pfdb.primary(): print(Configuration.get(Configuration.key == 'colour').value)"
    assert fresh_process(servers, code) == "blue"

    paused.sql("SELECT pg_wal_replay_resume()")
    primary.wait_for_replay()
    set_value(primary, "colour", "violet")  # replayed at once: shows the replica answers again
    primary.wait_for_replay()
    deadline = time.monotonic() + 5
    while value("colour") != "violet" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert value("colour") == "violet"


@pytest.mark.postgres
def test_a_write_inside_a_replica_block_goes_to_the_primary_and_so_do_its_later_reads(servers, paused):
    primary, _ = servers
    set_value(primary, "size", "small")
    bind(servers)
    with pfdb.replica():
        with pytest.raises(Configuration.DoesNotExist):
            value("size")  # the replica has not replayed the row
        Configuration.create(key="weight", value="1 kg", description="")  # a replica would refuse it
        assert value("size") == "small"  # the block wrote: its reads are the primary's now
    with pfdb.replica():
        with pytest.raises(Configuration.DoesNotExist):
            value("weight")
    with pfdb.primary():
        assert value("weight") == "1 kg"


@pytest.mark.postgres
def test_writes_in_transactions_and_their_reads_stay_on_the_primary(servers, paused):
    primary, _ = servers
    set_value(primary, "shape", "round")
    bind(servers)
    with pfdb.db_session_scope():
        assert value("shape") == "round"  # read in a transaction: the primary
        Configuration.update(value="square").where(Configuration.key == "shape").execute()
        assert value("shape") == "square"
    assert value("shape") == "square"


@pytest.mark.postgres
def test_a_table_the_replica_has_not_replayed_yet_is_read_from_the_primary(servers, paused):
    from pfdb._peewee import peewee as pw

    primary, _ = servers
    primary.sql("CREATE TABLE fresh_table (id serial PRIMARY KEY, note text)", dbname="shop")
    primary.sql("INSERT INTO fresh_table (note) VALUES ('made by another process')", dbname="shop")

    class Fresh(pw.Model):
        note = pw.TextField()

        class Meta:
            database = pfdb.db
            table_name = "fresh_table"

    bind(servers)
    assert [row.note for row in Fresh.select()] == ["made by another process"]  # the replica failed it


@pytest.mark.postgres
def test_a_cache_miss_is_filled_from_the_primary_not_from_a_replica_behind_it(servers, paused):
    redis = pytest.importorskip("redis")
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0", socket_timeout=1)
    try:
        client.ping()
    except Exception:
        pytest.skip("Redis does not answer on 127.0.0.1:6379")
    primary, _ = servers
    prefix = f"pfdbtest-{uuid.uuid4().hex[:12]}"
    set_value(primary, "cached", "fresh")
    bind(servers, cache_url="redis://127.0.0.1:6379/0", cache_key_prefix=prefix)
    try:
        with pytest.raises(Configuration.DoesNotExist):
            value("cached")  # a plain read: the replica, which has not replayed the row
        assert Configuration.get_value("cached") == "fresh"  # the miss is filled from the primary
        assert Configuration.get_value("cached") == "fresh"  # and then served from Redis
    finally:
        pfdb.close_database()
        keys = list(client.scan_iter(match=f"{prefix}:*"))
        if keys:
            client.delete(*keys)


@pytest.mark.postgres
def test_a_transaction_that_only_read_leaves_reads_on_the_replica(servers, paused):
    primary, _ = servers
    set_value(primary, "tone", "warm")
    bind(servers)
    with pfdb.db_session_scope():
        assert value("tone") == "warm"  # the primary, in the transaction
    with pytest.raises(Configuration.DoesNotExist):
        value("tone")  # nothing was written: the replica still answers
    with pfdb.db_session_scope():
        Configuration.create(key="tint", value="dark", description="")
    assert value("tone") == "warm"  # a commit that wrote: the primary until the replica replays it


@pytest.mark.postgres
def test_an_import_is_read_back_by_the_process_that_ran_it(servers, paused, tmp_path):
    from pfdb.feeds import import_products
    from pfdb.models import Product

    bind(servers)
    feed = tmp_path / "feed.csv"
    feed.write_text("sku,name,price\nREPL-1,Replica mug,4.50\n")
    assert import_products(str(feed)).created == 1  # bulk writes through the importer's own cursor
    assert Product.get(Product.sku == "REPL-1").name == "Replica mug"
    with pfdb.replica(), pytest.raises(Product.DoesNotExist):
        Product.get(Product.sku == "REPL-1")


@pytest.mark.postgres
def test_a_replica_further_behind_than_the_limit_is_skipped(servers, paused):
    primary, _ = servers
    set_value(primary, "lagging", "before")
    paused.sql("SELECT pg_wal_replay_resume()")
    primary.wait_for_replay()
    paused.sql("SELECT pg_wal_replay_pause()")
    bind(servers, replica_max_lag=0.5)
    assert replica_report()[0]["state"] == "ok"
    set_value(primary, "lagging", "after")
    assert value("lagging") == "before"  # behind, but within the limit yet
    time.sleep(0.8)
    report = replica_report()[0]
    assert report["state"] == "lagging" and report["lag_seconds"] > 0.5 and report["replay_paused"]
    assert value("lagging") == "after"  # skipped: the primary answers
    with pfdb.replica():
        assert value("lagging") == "after"  # even when asked for: too far behind

    paused.sql("SELECT pg_wal_replay_resume()")
    primary.wait_for_replay()
    report = replica_report()[0]
    assert report["state"] == "ok" and report["lag_seconds"] == 0


@pytest.mark.postgres
def test_an_idle_primary_with_a_caught_up_replica_means_no_lag(servers):
    primary, _ = servers
    bind(servers, replica_max_lag=0.5)
    primary.wait_for_replay()
    time.sleep(1.2)  # the last replayed commit grows old; the replica is not behind for that
    report = replica_report()[0]
    assert report["state"] == "ok" and report["lag_seconds"] == 0


@pytest.mark.postgres
def test_a_stopped_replica_is_skipped_and_health_stays_healthy(servers, run_cli):
    primary, replica = servers
    set_value(primary, "mood", "calm")
    env = {"DATABASE_REPLICA_URLS": replica.url("shop")}
    replica.stop()
    try:
        bind(servers)
        assert value("mood") == "calm"  # the primary answers
        report = pfdb.database_health_check()
        assert report["status"] == "healthy"
        (state,) = report["replicas"]
        assert state["state"] == "down" and "Connection refused" in state["error"]

        code, out, err = run_cli("--database-url", primary.url("shop"), "health", env=env)
        assert code == 0 and err == "", err  # the report says it: no warning besides
        assert f"replica:    {replica.url('shop')} down" in out
        assert "replicas:   1 not in use (reads go to the primary); the database stays healthy" in out
        code, out, _ = run_cli("--database-url", primary.url("shop"), "health", "--json", env=env)
        data = json.loads(out)
        assert code == 0 and data["status"] == "healthy" and data["replicas"][0]["state"] == "down"
    finally:
        replica.start()
    primary.wait_for_replay()
    pfdb.close_database()
    bind(servers)
    assert replica_report()[0]["state"] == "ok"


@pytest.fixture
def silent_replica_url():
    """A replica URL whose server accepts connections and never says a word."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    server.settimeout(0.1)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"postgresql://postgres:S3cretPw@127.0.0.1:{server.getsockname()[1]}/shop"
    pfdb.close_database()
    stop.set()
    thread.join(5)
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.postgres
def test_a_silent_replica_costs_one_connect_timeout_then_is_skipped(servers, silent_replica_url):
    primary, _ = servers
    set_value(primary, "hush", "quiet")
    bind(servers, replica_urls=silent_replica_url, connect_timeout=2)
    start = time.monotonic()
    assert value("hush") == "quiet"  # the primary answers once the connect timeout ran out
    first = time.monotonic() - start
    start = time.monotonic()
    for _ in range(20):
        assert value("hush") == "quiet"
    rest = time.monotonic() - start
    assert first < 6 and rest < 2, (first, rest)  # skipped, not waited for again
    start = time.monotonic()  # health probes the replica again, bounded by its own timeout
    report = pfdb.database_health_check(timeout=1)
    assert time.monotonic() - start < 1 + 1
    assert report["status"] == "healthy" and report["replicas"][0]["state"] == "down"
    assert "S3cretPw" not in json.dumps(report)


@pytest.mark.postgres
def test_info_shows_each_replica_with_its_password_masked(servers, run_cli):
    primary, replica = servers
    secret = "Sup3rSecretPw"
    good = f"postgresql://postgres:{secret}@127.0.0.1:{replica.port}/shop"  # trust auth ignores it
    gone = f"postgresql://postgres:{secret}@127.0.0.1:{free_port()}/shop"
    env = {"DATABASE_REPLICA_URLS": f"{good},{gone}"}
    code, out, err = run_cli("--database-url", primary.url("shop"), "info", "--json", env=env)
    assert code == 0, err
    replicas = json.loads(out)["replicas"]
    assert [r["state"] for r in replicas] == ["ok", "down"]
    assert replicas[0]["url"] == f"postgresql://postgres:***@127.0.0.1:{replica.port}/shop"
    code, text, err = run_cli("--database-url", primary.url("shop"), "info", env=env)
    assert code == 0 and "replica:    postgresql://postgres:***@" in text
    code, health, err2 = run_cli("--database-url", primary.url("shop"), "health", env=env)
    assert code == 0 and "reads go to the 1 usable replica" in health
    for shown in (out, text, err, health, err2):
        assert secret not in shown


# -- a replica given as DATABASE_URL -----------------------------------------------------------------
@pytest.mark.postgres
def test_a_server_in_recovery_is_refused_for_commands_that_write(servers, run_cli, tmp_path):
    _, replica = servers
    url = replica.url("shop")
    code, out, err = run_cli("--database-url", url, "migrate")
    assert code == 2
    assert err.strip().splitlines() == [
        f"error: pfdb migrate writes, and DATABASE_URL ({url}) is a PostgreSQL server in recovery (a read replica); "
        "point DATABASE_URL (or --database-url) at the primary; replicas belong in DATABASE_REPLICA_URLS"
    ]
    feed = tmp_path / "feed.csv"
    feed.write_text("sku,name,price\nA-1,Mug,4.50\n")
    code, _, err = run_cli("--database-url", url, "import", str(feed))
    assert code == 2 and "error: pfdb import writes, and DATABASE_URL" in err
    code, _, err = run_cli("--database-url", url, "create-admin", "ops@example.com", "--password-stdin", stdin="x" * 20)
    assert code == 2 and "error: pfdb create-admin writes" in err
    code, out, _ = run_cli("--database-url", url, "status", "--no-drift")  # reading works
    assert code == 0 and "003_postgres_jsonb_timestamptz" in out

    pfdb.init_database(url)
    with pytest.raises(ServerInRecoveryError, match="use|point DATABASE_URL"):
        migrations.migrate()


# -- settings -----------------------------------------------------------------------------------------
PRIMARY = "postgresql://shop:pw@db1:5432/shop"


@pytest.mark.parametrize(
    "urls,message",
    [
        ("sqlite:///replica.db", "DATABASE_REPLICA_URLS entry 1 is not a PostgreSQL URL"),
        ("postgresql://r1/shop,,postgresql://r2/shop", "DATABASE_REPLICA_URLS has an empty entry (number 2)"),
        ("postgresql://r1/shop,postgresql://r1/shop", "names postgresql://r1/shop twice"),
        (PRIMARY, "DATABASE_REPLICA_URLS names the primary itself (postgresql://shop:***@db1:5432/shop)"),
        ("postgresql://r1/shop,postgresql://u:secret@r2", "DATABASE_REPLICA_URLS entry 2 has no database name"),
        ("mysql://r1/shop", "DATABASE_REPLICA_URLS entry 1 has an unsupported scheme"),
    ],
)
def test_bad_replica_urls_are_refused_with_what_is_wrong(urls, message):
    with pytest.raises(ConfigError) as caught:
        load_settings(environ={"DATABASE_URL": PRIMARY, "DATABASE_REPLICA_URLS": urls})
    assert message in str(caught.value)
    assert "secret" not in str(caught.value) and ":pw@" not in str(caught.value)


def test_replica_settings_are_read_and_shown_masked():
    settings = load_settings(
        environ={
            "DATABASE_URL": PRIMARY,
            "DATABASE_REPLICA_URLS": " postgresql://u:pw1@r1/shop , postgresql://u:pw2@r2/shop",
            "DATABASE_REPLICA_MAX_LAG": "2.5",
        }
    )
    assert [u.host for u in settings.replica_urls] == ["r1", "r2"] and settings.replica_max_lag == 2.5
    assert settings.as_dict()["replica_urls"] == ["postgresql://u:***@r1/shop", "postgresql://u:***@r2/shop"]
    assert load_settings(environ={"DATABASE_URL": PRIMARY}).replica_max_lag == 5.0
    with pytest.raises(ConfigError, match="DATABASE_REPLICA_MAX_LAG must not be negative"):
        load_settings(environ={"DATABASE_URL": PRIMARY, "DATABASE_REPLICA_MAX_LAG": "-1"})
    with pytest.raises(ConfigError, match="DATABASE_URL is not PostgreSQL"):
        load_settings(environ={"DATABASE_REPLICA_URLS": "postgresql://r1/shop"})


def test_primary_and_replica_blocks_change_nothing_without_replicas(db, backend):
    Configuration.create(key="plain", value="yes", description="")
    with pfdb.replica():
        assert value("plain") == "yes"
    with pfdb.primary(), db_read_scope():
        assert value("plain") == "yes"
    assert pfdb.database_health_check()["replicas"] is None
    if backend == "sqlite":
        code = "import sys, pfdb\nwith pfdb.replica(): pass\nprint('psycopg2' in sys.modules)"
        out = subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
        )
        assert out.stdout.strip() == "False", out.stderr
