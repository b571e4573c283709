"""Tenants on both backends: names, registry, scopes, isolation under threads, roles, --all-tenants."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from feeds_samples import PFDB_CSV, write

import pfdb
from pfdb import Category, Product, tenants
from pfdb.errors import NotFoundError, TenantError, UsageError
from pfdb.feeds import import_products

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def main_url(database_url):
    # On PostgreSQL the shared database: its reset drops the tenants' schemas.
    pfdb.init_database(database_url)
    return database_url


def schemas() -> set[str]:
    rows = pfdb.db.execute_sql("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant_%%'").fetchall()
    return {r[0] for r in rows}


# -- names ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    ["", "Acme", "1acme", "acme-shop", "acme shop", "a" * 41, "acme; drop schema public", 'ac"me', "pg_acme", "public"],
)
def test_a_bad_or_reserved_name_is_refused_before_anything_runs(name):
    with pytest.raises(UsageError) as caught:
        tenants.validate_name(name)
    assert repr(name)[1:-1][:10] in str(caught.value) or name == ""


def test_good_names_pass():
    for name in ("acme", "a", "shop_2", "a" * 40):
        assert tenants.validate_name(name) == name


def test_a_quoted_name_is_refused_and_nothing_is_created(main_url, backend):
    with pytest.raises(UsageError, match="not valid"):
        tenants.create("acme; drop schema public")
    assert tenants.list_tenants() == ()
    assert Product.select().count() == 0  # the main schema is there and untouched
    if backend == "postgresql":
        assert schemas() == set()


# -- registry, create, list, drop ---------------------------------------------------------------------
def test_create_list_and_drop_with_a_backup(main_url, backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # PostgreSQL backups go to ./backups
    acme = tenants.create("acme")
    tenants.create("beta")
    assert acme.state == "active" and acme.schema_version == "004_tenant_registry" and acme.server == "default"
    assert [t.name for t in tenants.list_tenants()] == ["acme", "beta"]
    with pytest.raises(TenantError, match="already exists"):
        tenants.create("acme")
    with pfdb.tenant("acme"):
        Product.create(sku="KEEP-1", name="kept in the backup", price="1.00")
    result = tenants.drop("acme")
    assert result.backup is not None and result.backup.exists() and "tenant-acme-" in result.backup.name
    assert [t.name for t in tenants.list_tenants()] == ["beta"]
    with pytest.raises(NotFoundError, match="no tenant named 'acme'"):
        with pfdb.tenant("acme"):
            pass
    if backend == "postgresql":
        assert schemas() == {"tenant_beta"}
    else:
        folder = Path(main_url.removeprefix("sqlite:///")).parent / "pfdb.tenants"
        assert sorted(p.name for p in folder.iterdir()) == ["beta.db"]
    # The backup is the tenant's data: recreate the tenant and restore it there.
    tenants.create("acme")
    with pfdb.tenant("acme"):
        assert Product.select().count() == 0
        pfdb.maintenance.restore(result.backup)
        assert [p.sku for p in Product.select()] == ["KEEP-1"]
    with pfdb.tenant("beta"):
        assert Product.select().count() == 0


def test_a_tenant_s_data_is_invisible_to_the_others_and_to_the_main_database(main_url):
    for name in ("acme", "beta"):
        tenants.create(name)
    with pfdb.tenant("acme"):
        Product.create(sku="A-1", name="acme's", price="2.50")
        with pfdb.db_session_scope():
            Category.create(name="Only acme")
    with pfdb.tenant("beta"):
        assert Product.select().count() == 0 and Category.select().count() == 0
        Product.create(sku="A-1", name="beta's own A-1", price="3.00")  # the same SKU: another table
    assert Product.select().count() == 0
    with pfdb.tenant("acme"):
        assert Product.get(Product.sku == "A-1").name == "acme's"
        with pfdb.tenant("beta"):  # nested: the inner one wins, the outer comes back
            assert Product.get(Product.sku == "A-1").name == "beta's own A-1"
        assert Product.get(Product.sku == "A-1").name == "acme's"


def test_switching_tenant_inside_a_transaction_is_refused(main_url):
    tenants.create("acme")
    with pfdb.db_session_scope():
        with pytest.raises(UsageError, match="inside a transaction"):
            with pfdb.tenant("acme"):
                pass


def test_health_and_info_in_a_tenant_scope_describe_the_tenant(main_url, backend):
    from pfdb import maintenance

    tenants.create("acme")
    with pfdb.tenant("acme"):
        Product.create(sku="H-1", name="x", price="1")
        report = pfdb.database_health_check()
        info = maintenance.info()
    assert report["status"] == "healthy", report
    assert report["migrations"]["current"] == "004_tenant_registry"
    assert info.tables["products"] == 1
    assert maintenance.info().tables["products"] == 0


def test_two_tenants_import_the_same_feed_at_once_each_seeing_only_its_rows(main_url, tmp_path):
    for name in ("acme", "beta"):
        tenants.create(name)
    feed = write(tmp_path, "feed.csv", PFDB_CSV)
    results, errors = {}, []
    barrier = threading.Barrier(2)

    def run(name):
        try:
            with pfdb.tenant(name):
                barrier.wait(timeout=30)
                results[name] = import_products(feed)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(name,)) for name in ("acme", "beta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert results["acme"].created == results["beta"].created == 3
    for name in ("acme", "beta"):
        with pfdb.tenant(name):
            assert sorted(p.sku for p in Product.select()) == ["P-1", "P-2", "P-3"]
            assert Category.select().count() >= 3
    assert Product.select().count() == 0 and Category.select().count() == 0


# -- the pool of one: nothing of one tenant's scope leaks into the next -------------------------------


def test_a_pool_of_one_connection_never_carries_a_tenant_into_the_next_scope(fresh_postgres_url):
    pfdb.init_database(fresh_postgres_url, pool_size=1, max_overflow=0, pool_timeout=60)
    for name in ("acme", "beta"):
        tenants.create(name)
        with pfdb.tenant(name):
            Product.create(sku=f"{name}-only", name=name, price="1")
    default_path = pfdb.db.execute_sql("SHOW search_path").fetchone()[0]
    pfdb.db.close()
    seen, errors = [], []

    def worker(names):
        try:
            for i in range(30):
                name = names[i % len(names)]
                if name is None:
                    with pfdb.db_read_scope() as database:
                        path = database.execute_sql("SHOW search_path").fetchone()[0]
                        skus = [p.sku for p in Product.select()]
                    seen.append((None, path, skus))
                else:
                    with pfdb.tenant(name), pfdb.db_read_scope() as database:
                        path = database.execute_sql("SHOW search_path").fetchone()[0]
                        skus = [p.sku for p in Product.select()]
                    seen.append((name, path, skus))
        except BaseException as exc:
            errors.append(exc)

    threads = [
        threading.Thread(target=worker, args=(order,)) for order in (["acme", None, "beta"], ["beta", "acme", None])
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert len(seen) == 60
    assert pfdb.db.pool_usage()["max_connections"] == 1
    for name, path, skus in seen:
        if name is None:
            assert path == default_path and skus == []
        else:
            assert path == f"tenant_{name}" and skus == [f"{name}-only"]


def test_with_roles_raw_sql_in_one_tenant_cannot_read_another_s_tables(fresh_postgres_url):
    pfdb.init_database(fresh_postgres_url)
    tenants.create("acme", role=True)
    tenants.create("beta", role=True)
    with pfdb.tenant("beta"):
        Product.create(sku="SECRET", name="beta's", price="9")
    with pfdb.tenant("acme") as binding:
        assert binding.role.startswith("pfdb_tenant_acme_")
        assert pfdb.db.execute_sql("SELECT current_user").fetchone()[0] == binding.role
        Product.create(sku="MINE", name="acme's", price="1")
        with pytest.raises(Exception, match="permission denied"):
            with pfdb.db.atomic():
                pfdb.db.execute_sql("SELECT sku FROM tenant_beta.products").fetchall()
        with pytest.raises(Exception, match="permission denied"):
            with pfdb.db.atomic():
                pfdb.db.execute_sql("SELECT count(*) FROM public.products").fetchall()
    assert pfdb.db.execute_sql("SELECT current_user").fetchone()[0] == "postgres"
    for name in ("acme", "beta"):
        tenants.drop(name, backup=False)  # roles belong to the whole server: dropped with their tenant
    assert pfdb.db.execute_sql("SELECT 1 FROM pg_roles WHERE rolname = %s", (binding.role,)).fetchone() is None


def test_sqlite_refuses_a_server_and_roles(tmp_path):
    pfdb.init_database(f"sqlite:///{tmp_path / 'shop.db'}")
    pfdb.migrations.migrate(backup=False)
    with pytest.raises(UsageError, match="SQLite tenants"):
        tenants.create("acme", server="eu2")
    with pytest.raises(UsageError, match="roles"):
        tenants.create("acme", role=True)
    assert tenants.list_tenants() == ()


# -- every tenant at once ---------------------------------------------------------------------------
FAILING = """
import peewee as pw


def migrate(migrator, database, *, fake=False):
    tables = database.get_tables()
    if "poison" in tables:
        raise RuntimeError("this tenant holds a poison table")
    migrator.sql("CREATE TABLE added_by_005 (id integer)")


def rollback(migrator, database, *, fake=False):
    pass
"""


@pytest.mark.fresh_database  # migrates the main schema too
@pytest.mark.parametrize("parallel", [1, 3])
def test_migrate_all_tenants_goes_on_past_a_failing_tenant(main_url, tmp_path, monkeypatch, parallel):
    for name in ("acme", "bad", "cozy", "dune"):
        tenants.create(name)
    with pfdb.tenant("bad"):
        pfdb.db.execute_sql("CREATE TABLE poison (id integer)")
    folder = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", folder)
    (folder / "005_added.py").write_text(FAILING)
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(folder))
    result = tenants.migrate_all(parallel=parallel, backup=False)
    by_name = {o.name: o for o in result.outcomes}
    assert list(by_name) == ["(main)", "acme", "bad", "cozy", "dune"]
    assert not result.ok and [o.name for o in result.failed] == ["bad"]
    assert "poison" in by_name["bad"].error
    for name in ("(main)", "acme", "cozy", "dune"):
        assert by_name[name].applied == ("005_added",)
    states = {t.name: t.schema_version for t in tenants.list_tenants()}
    assert states == {"acme": "005_added", "bad": "004_tenant_registry", "cozy": "005_added", "dune": "005_added"}
    status = {o.name: o for o in tenants.status_all().outcomes}
    assert status["bad"].pending == ("005_added",) and status["acme"].pending == ()
    with pfdb.tenant("acme"):
        assert "added_by_005" in pfdb.db.get_tables()
    with pfdb.tenant("bad"):
        assert "added_by_005" not in pfdb.db.get_tables()


# -- the Redis cache never serves one tenant's values to another -----------------------------------
def test_with_the_cache_on_tenants_never_see_each_other_s_cached_values(fresh_database_url, monkeypatch):
    import uuid

    import redis

    from pfdb import Configuration, cache

    prefix = f"pfdbtest-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("CACHE_URL", "redis://127.0.0.1:6379/0")
    monkeypatch.setenv("CACHE_KEY_PREFIX", prefix)
    try:
        pfdb.init_database(fresh_database_url)
        assert cache.enabled()
        for name in ("acme", "beta"):
            tenants.create(name)
            with pfdb.tenant(name):
                Configuration.set_value("shop.name", f"{name}'s shop")
        Configuration.set_value("shop.name", "the main shop")
        for _ in range(2):  # the second round is served from Redis
            for name in ("acme", "beta"):
                with pfdb.tenant(name):
                    assert Configuration.get_value("shop.name") == f"{name}'s shop"
            assert Configuration.get_value("shop.name") == "the main shop"
    finally:
        pfdb.close_database()
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)


def test_behind_a_transaction_pooler_tenant_scopes_are_refused_with_the_fix(main_url, backend):
    tenants.create("acme")
    if backend == "sqlite":
        return  # no pooler for a file
    url = main_url
    pfdb.init_database(url, pooler="transaction")
    with pytest.raises(pfdb.ConfigError, match="tenant scopes need session state"):
        with pfdb.tenant("acme"):
            pass


def test_a_copy_made_inside_a_tenant_scope_neither_routes_to_nor_unbinds_the_tenant(main_url, tmp_path):
    from pfdb.transfer import copy_database

    tenants.create("acme")
    Product.create(sku="MAIN-1", name="main's", price="1")
    with pfdb.tenant("acme"):
        Product.create(sku="ACME-1", name="acme's", price="1")
        result = copy_database(main_url, f"sqlite:///{tmp_path / 'copy.db'}")
        assert [p.sku for p in Product.select()] == ["ACME-1"]  # still acme's scope
    assert result.rows >= 1 and [p.sku for p in Product.select()] == ["MAIN-1"]  # main still bound


@pytest.mark.fresh_database  # rolls the main schema back
def test_a_bad_parallel_is_refused_before_the_main_database_is_migrated(main_url):
    from pfdb.errors import UsageError
    from pfdb.migrations import migration_names, rollback, status

    rollback(migration_names()[-2], backup=False, destructive_ok=True)
    with pytest.raises(UsageError, match="--parallel 0"):
        tenants.migrate_all(parallel=0, backup=False)
    assert list(status().pending) == [migration_names()[-1]]  # nothing was applied first


def test_a_role_that_cannot_be_made_leaves_no_schema_behind(fresh_postgres_url):
    import psycopg2
    from psycopg2 import sql

    pfdb.init_database(fresh_postgres_url)
    taken = tenants.role_name("gamma", fresh_postgres_url.rsplit("/", 1)[-1])
    admin = psycopg2.connect(fresh_postgres_url)
    admin.autocommit = True
    try:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("CREATE ROLE {}").format(sql.Identifier(taken)))  # CREATE ROLE will fail
        with pytest.raises(Exception, match="already exists"):
            tenants.create("gamma", role=True)
        assert "tenant_gamma" not in schemas()
        assert [t.name for t in tenants.list_tenants()] == []
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(taken)))
        admin.close()
