"""Tenants placed on a second real PostgreSQL server, and moved between servers with their data verified."""

from __future__ import annotations

import itertools
import json

import pytest
from pg_servers import TempPostgres

import pfdb
from pfdb import Product, tenants
from pfdb.errors import TenantError, UsageError

_NAMES = itertools.count()


@pytest.fixture(scope="module")
def second_server():
    """One server of the module's own (initdb on a free port), started once and removed at the end."""
    with TempPostgres() as server:
        yield server


@pytest.fixture
def eu2(second_server):
    """A database of this test's own on the second server; its URL."""
    name = f"shop_{next(_NAMES)}"
    second_server.sql(f"CREATE DATABASE {name}")
    yield second_server.url(name)
    pfdb.close_database()
    second_server.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def main(fresh_postgres_url, eu2):
    pfdb.init_database(fresh_postgres_url, servers=f"eu2={eu2}")
    return fresh_postgres_url


def schemas_on(url: str) -> set[str]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'tenant_%'")
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def fill(name: str, count: int = 25) -> None:
    with pfdb.tenant(name), pfdb.db_session_scope():
        for i in range(count):
            Product.create(sku=f"{name}-{i}", name=f"product {i} of {name}", price=f"{i}.50", attributes={"i": i})


def skus(name: str) -> list[str]:
    with pfdb.tenant(name):
        return sorted(p.sku for p in Product.select())


def test_a_tenant_created_on_a_named_server_lives_and_is_served_there(main, eu2):
    tenants.create("acme", server="eu2")
    tenants.create("home")
    fill("acme", 3)
    fill("home", 2)
    assert schemas_on(eu2) == {"tenant_acme"} and schemas_on(main) == {"tenant_home"}
    with pfdb.tenant("acme") as binding:
        assert binding.settings.database_url.port != pfdb.database.main_database().pfdb_url.port
        port = pfdb.db.execute_sql("SHOW port").fetchone()[0]
        assert int(port) == binding.settings.database_url.port
        report = pfdb.database_health_check()
    assert report["status"] == "healthy" and str(binding.settings.database_url.port) in report["database"]
    assert skus("acme") == ["acme-0", "acme-1", "acme-2"] and skus("home") == ["home-0", "home-1"]
    info = {t.name: t for t in tenants.list_tenants()}
    assert info["acme"].server == "eu2" and info["home"].server == "default"
    with pytest.raises(UsageError, match="no server named 'eu9'"):
        tenants.create("other", server="eu9")
    assert "other" not in {t.name for t in tenants.list_tenants()}


def test_a_tenant_moves_between_servers_with_its_data_verified(main, eu2):
    tenants.create("acme")
    fill("acme")
    before = skus("acme")
    result = tenants.move("acme", to="eu2")
    assert result.rows >= 25 and result.leftover is None
    assert all(t["rows"] == t["target_rows"] and t["checksum"] == t["target_checksum"] for t in result.copy["tables"])
    assert tenants.get("acme").server == "eu2" and tenants.get("acme").state == "active"
    assert schemas_on(eu2) == {"tenant_acme"} and schemas_on(main) == set()  # the old copy is gone
    assert skus("acme") == before
    with pfdb.tenant("acme"):
        assert Product.get(Product.sku == "acme-3").attributes == {"i": 3}
        Product.create(sku="after-move", name="written on eu2", price="1")  # sequences carried over
    # and back again
    tenants.move("acme", to="default")
    assert schemas_on(eu2) == set() and schemas_on(main) == {"tenant_acme"}
    assert skus("acme") == sorted([*before, "after-move"])


def test_a_failure_in_the_middle_of_a_move_leaves_the_tenant_where_it_was_and_readable(main, eu2):
    tenants.create("acme")
    fill("acme", 5)
    steps = []

    def fail_after_the_copy(step):
        steps.append(step)
        if step == "copied":  # verified on eu2, the registry not yet switched
            raise RuntimeError("power cut")

    with pytest.raises(TenantError, match="was not moved \\(power cut\\); it stays on server 'default'"):
        tenants.move("acme", to="eu2", on_step=fail_after_the_copy)
    assert steps == ["created", "copied"]
    assert tenants.get("acme").server == "default" and tenants.get("acme").state == "active"
    assert schemas_on(eu2) == set() and schemas_on(main) == {"tenant_acme"}  # the half-made copy is removed
    assert skus("acme") == [f"acme-{i}" for i in range(5)]
    fill_more = Product  # still writable where it is
    with pfdb.tenant("acme"):
        fill_more.create(sku="still-here", name="x", price="1")
    tenants.move("acme", to="eu2")  # and a second attempt goes through
    assert "still-here" in skus("acme") and tenants.get("acme").server == "eu2"


def test_a_move_to_where_it_is_or_a_stray_schema_is_refused_and_changes_nothing(main, eu2, second_server):
    tenants.create("acme")
    with pytest.raises(UsageError, match="already on server 'default'"):
        tenants.move("acme", to="default")
    import psycopg2

    conn = psycopg2.connect(eu2)
    conn.autocommit = True
    conn.cursor().execute("CREATE SCHEMA tenant_acme")
    conn.close()
    with pytest.raises(TenantError, match="already exists"):
        tenants.move("acme", to="eu2")
    assert tenants.get("acme").server == "default" and tenants.get("acme").state == "active"
    assert schemas_on(eu2) == {"tenant_acme"}  # someone else's schema is left alone


def test_the_cli_places_moves_and_masks_the_servers(run_cli, fresh_postgres_url, second_server, tmp_path):
    second_server.sql("ALTER USER postgres PASSWORD 'S3cret-pw'")
    second_server.sql("CREATE DATABASE cli_shop")
    url = second_server.url("cli_shop").replace("postgres@", "postgres:S3cret-pw@")
    env = {"DATABASE_SERVERS": f"eu2={url}"}
    try:
        code, out, err = run_cli(
            "--database-url", fresh_postgres_url, "tenant", "create", "acme", "--server", "eu2", env=env
        )
        assert code == 0 and "created tenant acme" in out, err
        code, out, err = run_cli("--database-url", fresh_postgres_url, "tenant", "list", "--json", env=env)
        data = json.loads(out)
        assert code == 0 and data["tenants"][0]["server"] == "eu2"
        assert "S3cret-pw" not in out and "***" in data["tenants"][0]["location"]
        code, out, err = run_cli(
            "--database-url", fresh_postgres_url, "tenant", "move", "acme", "--to", "default", env=env
        )
        assert code == 0 and "moved tenant acme" in out and "S3cret-pw" not in out + err, err
        code, out, err = run_cli("--database-url", fresh_postgres_url, "--tenant", "acme", "info", "--json", env=env)
        assert code == 0 and json.loads(out)["tables"]["products"] == 0, err
    finally:
        pfdb.close_database()
        second_server.sql("DROP DATABASE IF EXISTS cli_shop WITH (FORCE)")
        second_server.sql("ALTER USER postgres PASSWORD NULL")


# -- with a read replica: a tenant's reads there see its schema only --------------------------------
@pytest.fixture(scope="module")
def primary_and_replica():
    with TempPostgres() as primary:
        replica = primary.replica()
        primary.sql("CREATE DATABASE shop")
        yield primary, replica


def test_reads_a_replica_answers_in_a_tenant_scope_see_that_tenant_only(primary_and_replica):
    from pfdb import migrations

    primary, replica = primary_and_replica
    migrations.init(primary.url("shop"))
    for name in ("acme", "beta"):
        tenants.create(name)
        fill(name, 3)
    Product.create(sku="main-only", name="main", price="1")
    pfdb.close_database()
    primary.wait_for_replay()
    pfdb.init_database(primary.url("shop"), replica_urls=replica.url("shop"), pool_size=1, max_overflow=0)
    replica_db = pfdb.database.main_database().pfdb_replicas.replicas[0]
    for _ in range(3):
        for name in ("acme", "beta"):
            with pfdb.tenant(name):
                served = replica_db.pool_usage()
                assert sorted(p.sku for p in Product.select()) == [f"{name}-{i}" for i in range(3)]
                with pfdb.db_read_scope() as database:  # a whole read scope on a lent replica connection
                    assert database.execute_sql("SHOW search_path").fetchone()[0] == f"tenant_{name}"
                    assert Product.select().count() == 3
                assert served["max_connections"] == 1
        assert [p.sku for p in Product.select()] == ["main-only"]
        with pfdb.db_read_scope() as database:
            assert database.execute_sql("SELECT current_schema()").fetchone()[0] == "public"
    assert replica_db.pool_usage()["idle"] == 1  # the replica did serve them


def test_a_tenant_on_another_server_does_not_read_from_the_main_servers_replicas(main, eu2):
    pfdb.close_database()
    pfdb.init_database(main, servers=f"eu2={eu2}", replica_urls=eu2)  # any other server stands in for main's replica
    assert pfdb.database.main_database().pfdb_replicas is not None
    name = f"far{next(_NAMES)}"
    tenants.create(name, server="eu2")
    with pfdb.tenant(name):
        assert pfdb.database.current_tenant().database.pfdb_replicas is None
        assert Product.select().count() == 0
