"""The optional Redis cache (docs/cache.md), against the real Redis on 127.0.0.1:6379 and both backends.

Every test has a key prefix of its own (``CACHE_KEY_PREFIX``) and deletes its keys after. A
value "served from the cache" is proved by changing the row behind pfdb's back (a driver
connection of the test's own, which pfdb cannot see): the cache still answers the old value
until pfdb's own write, or ``clear()``, makes it forget. Redis down is a closed port, or a
Redis server of the test's own that is frozen with SIGSTOP: the shared one is never stopped.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from decimal import Decimal
from pathlib import Path

import processes
import pytest

import pfdb
from pfdb import Category, Configuration, Product, _writes, cache
from pfdb.categories import category_by_path, category_tree, delete_category, find_category, move_category
from pfdb.config import load_settings
from pfdb.errors import CacheError, ConfigError, NotFoundError

ROOT = Path(__file__).resolve().parent.parent
REDIS_URL = "redis://127.0.0.1:6379/0"
REQUIRE_REDIS = os.environ.get("PFDB_REQUIRE_REDIS", "").strip().lower() in ("1", "true", "yes")

redis = pytest.importorskip("redis")


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_timeout=1).ping())
    except Exception:
        return False


if not _redis_up():
    if REQUIRE_REDIS:
        raise RuntimeError("Redis does not answer on 127.0.0.1:6379 (PFDB_REQUIRE_REDIS=1): start it (.ci/run does)")
    pytest.skip("Redis does not answer on 127.0.0.1:6379", allow_module_level=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def prefix(monkeypatch):
    """CACHE_URL and a key prefix of this test's own; its keys are deleted afterwards."""
    name = f"pfdbtest-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("CACHE_URL", REDIS_URL)
    monkeypatch.setenv("CACHE_KEY_PREFIX", name)
    yield name
    pfdb.close_database()
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{name}:*", count=1000))
    if keys:
        client.delete(*keys)


@pytest.fixture
def cached(database_url, prefix):
    """``pfdb.db`` bound to a clean database with the cache on."""
    pfdb.init_database(database_url)
    assert cache.enabled()
    yield database_url


def behind_pfdb(url: str, sql: str, params: tuple = ()) -> None:
    """Change the database on a driver connection of the test's own: what another program does."""
    settings = load_settings(url)
    if settings.database_url.backend == "sqlite":
        conn = sqlite3.connect(settings.database_url.path, isolation_level=None)
        try:
            conn.execute(sql, params)
        finally:
            conn.close()
        return
    import psycopg2

    parsed = settings.database_url
    conn = psycopg2.connect(dbname=parsed.database, **parsed.driver_params())
    try:
        conn.autocommit = True
        with conn.cursor() as cursor:
            cursor.execute(sql.replace("?", "%s"), params)
    finally:
        conn.close()


def values_in_redis(prefix: str) -> list[str]:
    client = redis.Redis.from_url(REDIS_URL)
    return [client.get(k).decode() for k in client.scan_iter(match=f"{prefix}:*:v1:*") if client.get(k) is not None]


# -- served, then invalidated by each write path ---------------------------------------------
def test_configuration_value_is_served_from_the_cache_until_pfdb_changes_it(cached):
    Configuration.set_value("shop.name", "Old")
    assert Configuration.get_value("shop.name") == "Old"  # a miss: loaded and stored
    behind_pfdb(cached, "UPDATE configuration SET value = ? WHERE key = ?", ("Behind", "shop.name"))
    assert Configuration.get_value("shop.name") == "Old"  # served by Redis: pfdb saw no write
    with pytest.warns(DeprecationWarning):  # the old shorthand reads through the same cache
        assert Configuration.get("shop.name") == "Old"
    Configuration.set_value("shop.name", "New")
    assert Configuration.get_value("shop.name") == "New"
    assert Configuration.get_value("missing.key", 7) == 7
    Configuration.set_value("missing.key", 8)  # a cached absence is forgotten by the insert
    assert Configuration.get_value("missing.key", 7) == 8
    assert cache.clear().keys_deleted >= 1
    behind_pfdb(cached, "UPDATE configuration SET value = ? WHERE key = ?", ("Behind", "shop.name"))
    assert Configuration.get_value("shop.name") == "Behind"  # clear() (pfdb cache-clear) is the fix


def test_product_by_sku_keeps_types_and_follows_save_update_and_delete(cached):
    product = Product.create(sku="SKU-1", name="Shirt", price="19.90", attributes={"size": ["M", "L"]})
    first = Product.by_sku("SKU-1")
    again = Product.by_sku("SKU-1")  # from Redis
    assert again is not first and again.id == product.id
    assert again.price == Decimal("19.90") and isinstance(again.price, Decimal)
    assert again.created_at == first.created_at and again.created_at.tzinfo is not None
    assert again.attributes == {"size": ["M", "L"]} and not again._dirty
    behind_pfdb(cached, "UPDATE products SET name = ? WHERE sku = ?", ("Behind", "SKU-1"))
    assert Product.by_sku("SKU-1").name == "Shirt"

    product.price = "21.00"
    product.save()
    assert Product.by_sku("SKU-1").price == Decimal("21.00")  # save() wrote the whole row, name included
    Product.update(name="Bulk").where(Product.sku == "SKU-1").execute()
    assert Product.by_sku("SKU-1").name == "Bulk"
    assert Product.by_sku("SKU-2") is None
    Product.insert_many([{"sku": "SKU-2", "name": "Hat", "currency": "EUR"}]).execute()
    assert Product.by_sku("SKU-2").name == "Hat"
    Product.by_sku("SKU-2").delete_instance()
    assert Product.by_sku("SKU-2") is None
    Product.delete().execute()
    assert Product.by_sku("SKU-1") is None


def test_an_import_invalidates_the_products_it_changed(cached, tmp_path):
    from pfdb.feeds import import_products

    feed = tmp_path / "feed.csv"
    feed.write_text("sku,name,price,currency,category\nSKU-1,Shirt,19.90,EUR,Apparel > Shirts\n", encoding="utf-8")
    import_products(str(feed))
    assert Product.by_sku("SKU-1").price == Decimal("19.90")
    assert category_by_path("Apparel > Shirts").slug == "shirts"
    assert category_by_path("Apparel > Hats") is None
    feed.write_text(
        "sku,name,price,currency,category\nSKU-1,Shirt,24.50,EUR,Apparel > Shirts\nSKU-2,Hat,5.00,EUR,Apparel > Hats\n",
        encoding="utf-8",
    )
    result = import_products(str(feed))
    assert (result.created, result.updated) == (1, 1)
    assert Product.by_sku("SKU-1").price == Decimal("24.50")
    assert category_by_path("Apparel > Hats").name == "Hats"  # created by the import's resolver


def test_category_lookups_follow_moves_and_deletes(cached):
    apparel = Category.create(name="Apparel")
    shirts = Category.create(name="Shirts", parent=apparel)
    sale = Category.create(name="Sale")
    assert find_category("shirts").id == shirts.id
    assert find_category("Apparel > Shirts").id == shirts.id
    assert [n["name"] for n in category_tree()] == ["Apparel", "Sale"]
    assert category_tree(apparel.id)[0]["children"][0]["slug"] == "shirts"
    assert Category.by_slug("shirts").path == f"/{apparel.id}/{shirts.id}/"

    move_category(shirts, sale)
    assert Category.by_slug("shirts").path == f"/{sale.id}/{shirts.id}/"
    assert category_by_path("Apparel > Shirts") is None
    assert find_category("Sale > Shirts").id == shirts.id
    assert category_tree(apparel.id)[0]["children"] == []
    assert [c["name"] for c in category_tree()[1]["children"]] == ["Shirts"]

    delete_category(shirts)
    assert Category.by_slug("shirts") is None
    with pytest.raises(NotFoundError):
        find_category("Sale > Shirts")
    assert category_tree()[1]["children"] == []


def test_a_rolled_back_transaction_leaves_nothing_in_the_cache(cached, prefix):
    Configuration.set_value("feed.mode", "safe")
    product = Product.create(sku="SKU-1", name="Shirt", price="10.00")
    assert Configuration.get_value("feed.mode") == "safe" and Product.by_sku("SKU-1").price == Decimal("10.00")
    with pytest.raises(RuntimeError):
        with pfdb.db_session_scope():
            Configuration.set_value("feed.mode", "rolled-back")
            product.price = "99.00"
            product.save()
            # Inside the transaction its own writes are read, from the database, never stored.
            assert Configuration.get_value("feed.mode") == "rolled-back"
            assert Product.by_sku("SKU-1").price == Decimal("99.00")
            raise RuntimeError("roll back")
    assert _writes.pending_tables() == frozenset()
    assert Configuration.get_value("feed.mode") == "safe"
    assert Product.by_sku("SKU-1").price == Decimal("10.00")
    stored = " ".join(values_in_redis(prefix))
    assert "safe" in stored and "rolled-back" not in stored and "99.00" not in stored


def test_a_writer_racing_a_reader_never_leaves_the_old_value_under_the_new_generation(cached):
    """The reader reads the database, then a writer commits and invalidates, then the reader
    stores what it read: under the generation it read first, which nobody reads any more."""
    Configuration.set_value("k", "v1")

    def read_then_lose_the_race():
        row = Configuration._stored("k")
        writer = threading.Thread(target=Configuration.set_value, args=("k", "v2"))
        writer.start()
        writer.join()
        return row

    assert cache.lookup("configuration", "key", "k", read_then_lose_the_race) == ["v1", "string"]
    assert Configuration.get_value("k") == "v2"
    assert Configuration.get_value("k") == "v2"


def test_a_read_scope_neither_stores_nor_serves(cached, prefix):
    Configuration.set_value("k", "v1")
    with pfdb.db_read_scope():
        assert Configuration.get_value("k") == "v1"
    assert values_in_redis(prefix) == []  # a snapshot may be older than the generation it would go under
    assert Configuration.get_value("k") == "v1"
    assert values_in_redis(prefix) != []


@pytest.mark.fresh_database  # restore replaces the tables
def test_restore_and_migrations_invalidate_everything(cached, tmp_path):
    from pfdb.maintenance import backup, restore
    from pfdb.migrations import migrate, migration_names, rollback

    Configuration.set_value("k", "before-backup")
    saved = backup(tmp_path)
    Configuration.set_value("k", "after-backup")
    assert Configuration.get_value("k") == "after-backup"
    restore(saved.path)
    assert Configuration.get_value("k") == "before-backup"

    behind_pfdb(cached, "UPDATE configuration SET value = ? WHERE key = ?", ("behind", "k"))
    assert Configuration.get_value("k") == "before-backup"  # cached
    names = migration_names()
    rollback(names[-2], backup=False, destructive_ok=True)  # DDL: the whole database's generation moves
    migrate(backup=False)
    assert Configuration.get_value("k") == "behind"


def test_copy_replace_invalidates_the_target(prefix, sqlite_url, tmp_path):
    from pfdb.transfer import copy_database

    target = f"sqlite:///{tmp_path / 'target.db'}"
    pfdb.init_database(sqlite_url)
    Configuration.set_value("k", "source")
    pfdb.close_database()
    copy_database(sqlite_url, target)
    pfdb.init_database(target)
    Configuration.set_value("k", "target")
    assert Configuration.get_value("k") == "target"  # cached for the target
    pfdb.close_database()
    copy_database(sqlite_url, target, replace=True)
    pfdb.init_database(target)
    assert Configuration.get_value("k") == "source"


# -- across processes ----------------------------------------------------------------------------
CHILD = """
import sys
import pfdb
from pfdb import Configuration, Product
pfdb.init_database(sys.argv[1])
Configuration.set_value("shop.name", "written by the child")
p = Product.by_sku("SKU-1")
p.price = "42.00"
p.save()
"""


def test_a_write_in_another_process_invalidates_this_ones_cache(cached):
    Configuration.set_value("shop.name", "parent")
    Product.create(sku="SKU-1", name="Shirt", price="10.00")
    assert Configuration.get_value("shop.name") == "parent" and Product.by_sku("SKU-1").price == Decimal("10.00")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    processes.run([sys.executable, "-c", CHILD, cached], check=True, env=env, cwd=ROOT, timeout=60)
    assert Configuration.get_value("shop.name") == "written by the child"
    assert Product.by_sku("SKU-1").price == Decimal("42.00")


# -- Redis down, slow, frozen ----------------------------------------------------------------
def test_redis_unreachable_changes_nothing_but_health_says_degraded(database_url, monkeypatch, caplog):
    monkeypatch.setenv("CACHE_URL", f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0")  # nothing listens there
    monkeypatch.setenv("CACHE_KEY_PREFIX", f"pfdbtest-{uuid.uuid4().hex[:12]}")
    pfdb.init_database(database_url)
    caplog.set_level(logging.WARNING, logger="pfdb.cache")
    start = time.monotonic()
    Configuration.set_value("k", "v1")
    for _ in range(20):
        assert Configuration.get_value("k") == "v1"
    Configuration.set_value("k", "v2")
    assert Configuration.get_value("k") == "v2"
    Product.create(sku="SKU-1", name="Shirt")
    assert Product.by_sku("SKU-1").name == "Shirt"
    assert time.monotonic() - start < 5  # the back-off: Redis is not asked at every call
    warnings = [r for r in caplog.records if r.name == "pfdb.cache"]
    assert len(warnings) == 1 and "does not answer" in warnings[0].getMessage()
    assert "s3cret-pw" not in warnings[0].getMessage() and "***" in warnings[0].getMessage()

    report = pfdb.database_health_check()
    assert report["status"] == "healthy" and report["error"] is None
    assert report["cache"]["status"] == "degraded" and "s3cret-pw" not in json.dumps(report)
    from pfdb.maintenance import info

    assert info().cache["status"] == "degraded"
    with pytest.raises(CacheError):
        cache.clear()


@pytest.fixture
def own_redis(tmp_path):
    """A Redis server of this test's own on a free port (this one may be frozen and killed)."""
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        try:
            if redis.Redis.from_url(url, socket_timeout=0.2).ping():
                break
        except Exception:
            time.sleep(0.05)
    yield proc, url
    proc.send_signal(signal.SIGCONT)
    proc.kill()
    proc.wait()


def test_a_frozen_redis_is_waited_for_briefly_and_missed_invalidations_are_sent_when_it_returns(
    database_url, monkeypatch, own_redis, caplog
):
    proc, url = own_redis
    monkeypatch.setenv("CACHE_URL", url)
    pfdb.init_database(database_url)
    Configuration.set_value("k", "v1")
    assert Configuration.get_value("k") == "v1"  # cached in the own Redis
    proc.send_signal(signal.SIGSTOP)  # accepts connections, never answers: "slow"
    try:
        start = time.monotonic()
        Configuration.set_value("k", "v2")  # its invalidation cannot be sent: kept
        assert Configuration.get_value("k") == "v2"  # the database, within CACHE_TIMEOUT
        assert time.monotonic() - start < 2
        assert pfdb.database_health_check()["cache"]["status"] == "degraded"
    finally:
        proc.send_signal(signal.SIGCONT)
    # Redis still holds v1 under the old generation; the kept invalidation goes first.
    deadline = time.monotonic() + 40
    while pfdb.database_health_check()["cache"]["status"] != "ok":
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert Configuration.get_value("k") == "v2"
    assert Configuration.get_value("k") == "v2"
    assert redis.Redis.from_url(url).dbsize() > 0  # the cache is in use again


# -- no Redis without CACHE_URL ------------------------------------------------------------------
NO_CACHE = """
import sys
import pfdb
from pfdb import Configuration, Product, cache
from pfdb.categories import category_tree, find_category
pfdb.init_database(sys.argv[1])
Configuration.set_value("k", 1)
Configuration.get_value("k")
Product.by_sku("SKU-1") or Product.create(sku="SKU-1", name="Shirt")
Product.by_sku("SKU-1")
category_tree()
pfdb.database_health_check()
print(cache.enabled(), "redis" in sys.modules)
"""


def test_without_cache_url_redis_is_never_imported(sqlite_url, prefix):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHE_")}
    env["PYTHONPATH"] = str(ROOT)
    run = subprocess.run([sys.executable, "-c", NO_CACHE, sqlite_url], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["False", "False"]
    env.update(CACHE_URL=REDIS_URL, CACHE_KEY_PREFIX=prefix)  # the same script with a cache: it is imported
    run = subprocess.run([sys.executable, "-c", NO_CACHE, sqlite_url], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["True", "True"]


# -- settings, scopes, the CLI -------------------------------------------------------------------
def test_cache_settings_are_checked_and_the_password_never_shown(sqlite_url):
    with pytest.raises(ConfigError, match="CACHE_URL must be a Redis URL"):
        load_settings(sqlite_url, environ={"CACHE_URL": "http://x"})
    with pytest.raises(ConfigError, match="CACHE_TIMEOUT must be more than 0"):
        load_settings(sqlite_url, environ={"CACHE_TIMEOUT": "0"})
    with pytest.raises(ConfigError, match="CACHE_KEY_PREFIX"):
        load_settings(sqlite_url, environ={"CACHE_KEY_PREFIX": "has space"})
    settings = load_settings(sqlite_url, environ={"CACHE_URL": "redis://:pw-123@127.0.0.1:6379/2", "CACHE_TTL": "60"})
    assert settings.cache_ttl == 60 and settings.cache_url.endswith("/2")
    assert "pw-123" not in repr(settings) and "pw-123" not in json.dumps(settings.as_dict())
    assert settings.as_dict()["cache_url"] == "redis://:***@127.0.0.1:6379/2"
    assert load_settings(sqlite_url, environ={"CACHE_URL": ""}).cache_url is None


def test_scopes_never_share_values(cached):
    Configuration.set_value("k", "shared-db")
    tenant = {"name": "a"}
    previous = cache._scope  # pfdb.tenants' own scope: put back afterwards
    cache.set_scope(lambda: tenant["name"])
    try:
        assert Configuration.get_value("k") == "shared-db"  # cached in scope a
        behind_pfdb(cached, "UPDATE configuration SET value = ? WHERE key = ?", ("changed", "k"))
        assert Configuration.get_value("k") == "shared-db"
        tenant["name"] = "b"
        ns_b = cache.namespace()
        assert Configuration.get_value("k") == "changed"  # scope b never sees scope a's value
        tenant["name"] = "a"
        assert cache.namespace() != ns_b
    finally:
        cache.set_scope(previous)


def test_statements_name_the_tables_they_write():
    assert _writes.tables_written('INSERT INTO "products" ("sku") VALUES (?)') == {"products"}
    assert _writes.tables_written('UPDATE "public"."categories" SET "path" = ?') == {"categories"}
    assert _writes.tables_written("delete from configuration where key = 'a'") == {"configuration"}
    assert _writes.tables_written("INSERT OR REPLACE INTO x VALUES (1)") == {"x"}
    for read in ("SELECT 1", "  select * from products", 'SAVEPOINT "s1"', 'RELEASE SAVEPOINT "s1"', "PRAGMA x"):
        assert _writes.tables_written(read) == frozenset(), read
    assert _writes.tables_written("CREATE TEMP TABLE staging (a int)") == frozenset()
    for unknown in ("ALTER TABLE products ADD c int", "WITH a AS (SELECT 1) UPDATE t SET x = 1", "TRUNCATE a, b"):
        assert _writes.tables_written(unknown) == {_writes.ALL}, unknown


def test_cli_cache_clear_health_and_info(run_cli, cached):
    Configuration.set_value("k", "v")
    Configuration.get_value("k")
    code, out, err = run_cli("--database-url", cached, "cache-clear")
    assert code == 0, err
    assert out.startswith("cleared: 1 cached values at redis://127.0.0.1:6379/0 (")
    code, out, _ = run_cli("--database-url", cached, "health")
    assert code == 0 and "cache:      ok redis://127.0.0.1:6379/0" in out
    code, out, _ = run_cli("--database-url", cached, "info", "--json")
    assert code == 0 and json.loads(out)["cache"]["status"] == "ok"


def test_cli_cache_clear_without_a_cache(run_cli, database_url, monkeypatch):
    monkeypatch.delenv("CACHE_URL", raising=False)
    code, out, _ = run_cli("--database-url", database_url, "cache-clear", "--json")
    assert code == 0 and json.loads(out) == {"cache": None, "namespace": None, "keys_deleted": 0}
    code, out, _ = run_cli("--database-url", database_url, "health", "--json")
    assert code == 0 and json.loads(out)["cache"] is None


def test_cli_health_stays_healthy_with_the_cache_down(run_cli, database_url):
    port = free_port()
    code, out, err = run_cli(
        "--database-url", database_url, "health", env={"CACHE_URL": f"redis://:pw9@127.0.0.1:{port}/0"}
    )
    assert code == 0, err
    assert "status:     healthy" in out
    assert f"cache:      degraded redis://:***@127.0.0.1:{port}/0 (" in out and "pw9" not in out + err


def test_a_copy_targets_cache_is_invalidated_whatever_the_applications_pooler(
    prefix, sqlite_url, tmp_path, monkeypatch
):
    from pfdb.transfer import copy_database

    target = f"sqlite:///{tmp_path / 'target.db'}"
    pfdb.init_database(sqlite_url)
    Configuration.set_value("k", "source")
    pfdb.close_database()
    copy_database(sqlite_url, target)
    pfdb.init_database(target)
    Configuration.set_value("k", "target")
    assert Configuration.get_value("k") == "target"
    pfdb.close_database()
    # DATABASE_POOLER describes the application's PostgreSQL, not a SQLite copy target.
    monkeypatch.setenv("DATABASE_POOLER", "transaction")
    copy_database(sqlite_url, target, replace=True)
    monkeypatch.delenv("DATABASE_POOLER")
    pfdb.init_database(target)
    assert Configuration.get_value("k") == "source"
