"""The shared PostgreSQL test database comes back exactly as migrated, whatever a test did to it.

The tests here drive a ``SharedDatabase`` of this module's own (not the session's), so they can
look at the database after the reset that ordinary tests never see.
"""

from __future__ import annotations

import psycopg2
import pytest
import shared_database
from conftest import pg_url
from shared_database import RESET_APPLICATION, SEQUENCES, SharedDatabase, catalog_state, children_first, fingerprint

import pfdb
from pfdb import Category, Configuration, Product, migrations

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def module_shared(pg_server, pg_template):
    # One for the module: every database made here is a DROP DATABASE, so a checkpoint, later.
    database = SharedDatabase(create=lambda: pg_server.create(pg_template), discard=pg_server.release, url_of=pg_url)
    database.acquire()
    yield database
    database.close()
    pg_server.release(database.name)


@pytest.fixture
def shared(module_shared):
    module_shared.replaced_after.clear()
    yield module_shared
    pfdb.close_database()
    module_shared.reset("after the test")  # the next test starts clean whatever this one did


def state(name: str) -> tuple:
    """Schema fingerprint, migration history, sequence positions and row count of a database."""
    conn = psycopg2.connect(pg_url(name))
    try:
        with conn.cursor() as cur:
            schema = fingerprint(cur)
            cur.execute("SELECT id, name, migrated_at FROM migratehistory ORDER BY id")
            history = cur.fetchall()
            cur.execute(SEQUENCES)
            sequences = cur.fetchall()
            cur.execute(
                "SELECT (SELECT count(*) FROM products) + (SELECT count(*) FROM categories)"
                " + (SELECT count(*) FROM configuration)"
            )
            return schema, history, sequences, cur.fetchone()[0]
    finally:
        conn.close()


def test_rows_history_and_sequences_come_back_without_a_new_database(shared):
    name = shared.name
    template = state(name)
    pfdb.init_database(pg_url(name))
    shoes = Category.create(name="Shoes", slug="shoes")
    Product.create(sku="A-1", name="Boot", category=shoes)
    Configuration.create(key="k", value="v")
    pfdb.db.execute_sql("INSERT INTO migratehistory (name, migrated_at) VALUES ('999_fake', now())")
    with pfdb.db.atomic() as txn:  # a sequence moves on even when its rows are rolled back
        Product.create(sku="A-2", name="Gone")
        txn.rollback()
    assert state(name) != template
    pfdb.close_database()

    shared.reset("this test")

    assert shared.name == name and shared.replaced_after == []  # emptied, not replaced
    assert not shared._truncate_only  # pfdb's schema has no triggers: emptied by DELETE
    assert state(name) == template
    pfdb.init_database(pg_url(name))
    assert Category.create(name="Again", slug="again").id == 1


def test_a_session_left_open_with_locks_is_ended(shared):
    """A connection the test opened itself, idle in a transaction holding a row lock, must not block TRUNCATE."""
    template = state(shared.name)
    pfdb.init_database(pg_url(shared.name))
    Configuration.create(key="k", value="v")
    pfdb.close_database()
    left_open = psycopg2.connect(pg_url(shared.name))
    with left_open.cursor() as cur:
        cur.execute("SELECT * FROM configuration FOR UPDATE")
        cur.execute("LOCK TABLE products IN ACCESS SHARE MODE")

    shared.reset("this test")

    assert shared.replaced_after == [] and state(shared.name) == template
    with pytest.raises(psycopg2.Error):  # terminated by the reset
        left_open.cursor().execute("SELECT 1")
    left_open.close()


def test_a_test_that_ends_every_session_does_not_cost_a_fresh_copy(shared):
    """The reset keeps one session between tests; a test that terminates it (a silent-server test, say) only costs a reconnect."""
    template = state(shared.name)
    name = shared.name
    shared.reset("before")  # the reset's own session is open now
    pfdb.init_database(pg_url(shared.name))
    Configuration.create(key="k", value="v")
    pfdb.close_database()
    admin = psycopg2.connect(pg_url("postgres"))
    admin.autocommit = True
    with admin.cursor() as cur:
        cur.execute(
            "SELECT count(*) FILTER (WHERE application_name = %s AND pg_terminate_backend(pid, 5000))"
            " FROM pg_stat_activity WHERE datname = %s",
            (RESET_APPLICATION, name),
        )
        assert cur.fetchone()[0] == 1  # the reset's kept session, terminated
    admin.close()

    shared.reset("this test")

    assert shared.name == name and shared.replaced_after == []  # emptied through a new session, not replaced
    assert state(shared.name) == template


SCHEMA_CHANGES = {
    "drop a table": 'DROP TABLE "system_logs"',
    "create a table": "CREATE TABLE notes (id serial PRIMARY KEY)",
    "add a column": "ALTER TABLE products ADD COLUMN extra text",
    "change a default": "ALTER TABLE products ALTER COLUMN name SET DEFAULT 'x'",
    "add an index": "CREATE INDEX products_name_extra ON products (name)",
    "drop a constraint": "ALTER TABLE products DROP CONSTRAINT products_category_id_fkey",
    "alter a sequence": "ALTER SEQUENCE products_id_seq INCREMENT BY 10",
    "create a function": "CREATE FUNCTION one() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "create a view": "CREATE VIEW cheap AS SELECT id FROM products",
    "create a type": "CREATE TYPE mood AS ENUM ('ok')",
    "create a schema": "CREATE SCHEMA other",
    "database setting": "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET work_mem = ''8MB''', current_database());"
    " END $$",
}


@pytest.mark.parametrize("statement", SCHEMA_CHANGES.values(), ids=SCHEMA_CHANGES.keys())
def test_the_fingerprint_sees_each_kind_of_schema_change(shared, statement):
    """Each change is made in a transaction that is then rolled back: no database is spent on it."""
    conn = psycopg2.connect(pg_url(shared.name))
    try:
        with conn.cursor() as cur:
            before, catalogs = fingerprint(cur), catalog_state(cur)
            cur.execute(statement)
            changed = fingerprint(cur)
            assert catalog_state(cur) != catalogs  # the quick check that decides whether the fingerprint runs
            conn.rollback()
            assert changed != before and fingerprint(cur) == before
    finally:
        conn.close()


def test_a_schema_changed_and_changed_back_is_emptied_not_replaced(shared, monkeypatch):
    """The catalogs moved (a table renamed and back), so the fingerprint runs once, and matches."""
    name = shared.name
    template = state(name)
    calls = []
    real = shared_database.fingerprint_and_catalogs
    monkeypatch.setattr(shared_database, "fingerprint_and_catalogs", lambda cur: calls.append(1) or real(cur))
    pfdb.init_database(pg_url(name))
    Configuration.create(key="k", value="v")
    pfdb.db.execute_sql("ALTER TABLE configuration RENAME TO configuration_moved")
    pfdb.db.execute_sql("ALTER TABLE configuration_moved RENAME TO configuration")
    pfdb.close_database()

    shared.reset("this test")
    assert len(calls) == 1  # the quick check saw the catalogs move
    shared.reset("the next test")  # from the state the first reset recorded
    assert len(calls) == 1  # nothing moved since: no fingerprint

    assert shared.name == name and shared.replaced_after == [] and state(name) == template


def test_a_sequence_moved_without_being_used_comes_back(shared):
    """pg_sequences shows no position for an unused sequence; the reset reads the sequence itself."""
    name = shared.name
    pfdb.init_database(pg_url(name))
    pfdb.db.execute_sql("SELECT setval('categories_id_seq', 50, false)")
    pfdb.close_database()

    shared.reset("this test")

    pfdb.init_database(pg_url(name))
    assert Category.create(name="First", slug="first").id == 1


def test_a_tenant_s_schema_is_dropped_not_the_database_replaced(shared):
    """Schemas the template does not have are dropped; the database stays."""
    from pfdb import tenants

    name = shared.name
    template = state(name)
    pfdb.init_database(pg_url(name))
    tenants.create("acme")
    with pfdb.tenant("acme"):
        Product.create(sku="T-1", name="acme's", price="1.00")
    pfdb.close_database()

    shared.reset("this test")

    assert shared.name == name and shared.replaced_after == [] and state(name) == template
    conn = psycopg2.connect(pg_url(name))
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE %s", (tenants.SCHEMA_PREFIX + "%",))
            assert cur.fetchone()[0] == 0
    finally:
        conn.close()


def test_a_changed_schema_gets_a_fresh_copy(shared):
    name = shared.name
    template = state(name)
    pfdb.init_database(pg_url(name))
    migrations.rollback("zero", destructive_ok=True, backup=False)
    pfdb.close_database()

    shared.reset("this test")

    assert shared.replaced_after == ["this test"] and shared.name != name
    assert state(shared.name) == template


def test_a_vanished_shared_database_is_replaced(shared, pg_server):
    template = state(shared.name)
    gone = f"{shared.name}_gone"  # renamed rather than dropped: no checkpoint to wait for
    # As DROP DATABASE … WITH (FORCE) would, end the sessions first: the reset's own among them.
    pg_server.execute(f"SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity WHERE datname = '{shared.name}'")
    pg_server.execute(f'ALTER DATABASE "{shared.name}" RENAME TO "{gone}"')
    pg_server.release(gone)

    shared.reset("this test")

    assert shared.replaced_after == ["this test"] and state(shared.name) == template


def test_delete_order_puts_referencing_tables_first():
    keys = [
        (("s", "images"), ("s", "products")),
        (("s", "products"), ("s", "categories")),
        (("s", "categories"), ("s", "categories")),
    ]
    tables = [("s", "categories"), ("s", "images"), ("s", "products"), ("s", "users")]
    order = children_first(tables, keys)
    assert sorted(order) == sorted(tables)
    assert order.index(("s", "images")) < order.index(("s", "products")) < order.index(("s", "categories"))
    cycle = [(("s", "a"), ("s", "b")), (("s", "b"), ("s", "a"))]
    assert sorted(children_first([("s", "a"), ("s", "b")], cycle)) == [("s", "a"), ("s", "b")]


CYCLE = """
CREATE TABLE ring_a (id int PRIMARY KEY, b_id int);
CREATE TABLE ring_b (id int PRIMARY KEY, a_id int REFERENCES ring_a ON DELETE RESTRICT);
ALTER TABLE ring_a ADD FOREIGN KEY (b_id) REFERENCES ring_b ON DELETE RESTRICT;
"""


def test_rows_no_delete_can_remove_are_truncated(pg_server, pg_template):
    """Two tables referencing each other with RESTRICT: every DELETE fails, TRUNCATE … CASCADE takes over."""

    def create() -> str:
        name = pg_server.create(pg_template)
        conn = psycopg2.connect(pg_url(name))
        with conn, conn.cursor() as cur:
            cur.execute(CYCLE)
        conn.close()
        return name

    database = SharedDatabase(create=create, discard=pg_server.release, url_of=pg_url)
    try:
        database.acquire()
        template = state(database.name)
        conn = psycopg2.connect(pg_url(database.name))
        with conn, conn.cursor() as cur:
            cur.execute(
                "INSERT INTO ring_a VALUES (1, NULL); INSERT INTO ring_b VALUES (1, 1); UPDATE ring_a SET b_id = 1"
            )
        conn.close()

        database.reset("this test")

        assert database.replaced_after == [] and state(database.name) == template
        conn = psycopg2.connect(pg_url(database.name))
        with conn, conn.cursor() as cur:
            cur.execute("SELECT (SELECT count(*) FROM ring_a) + (SELECT count(*) FROM ring_b)")
            assert cur.fetchone()[0] == 0
        conn.close()
    finally:
        database.close()
        if database.name:
            pg_server.release(database.name)


# -- the shared empty database (empty_url) ----------------------------------------------------------


@pytest.fixture(scope="module")
def module_empty(pg_server):
    database = SharedDatabase(create=pg_server.create, discard=pg_server.release, url_of=pg_url, empty=True)
    database.acquire()
    yield database
    database.close()
    pg_server.release(database.name)


@pytest.fixture
def empty(module_empty):
    module_empty.replaced_after.clear()
    yield module_empty
    pfdb.close_database()
    module_empty.reset("after the test")


def empty_state(name: str) -> tuple:
    """Schema fingerprint and the owner and privileges of the schemas and the database."""
    conn = psycopg2.connect(pg_url(name))
    try:
        with conn.cursor() as cur:
            schema = fingerprint(cur)
            cur.execute(shared_database.PRIVILEGES)
            return schema, [row[2:] for row in cur.fetchall()]  # the database's name aside
    finally:
        conn.close()


def test_a_migrated_empty_database_is_emptied_not_replaced(empty, pg_server):
    name = empty.name
    before = empty_state(name)
    new = pg_server.create()  # what CREATE DATABASE gives, to compare with
    try:
        assert empty_state(new) == before
    finally:
        pg_server.release(new)
    pfdb.init_database(pg_url(name))
    migrations.migrate(backup=False)
    Product.create(sku="E-1", name="kept?", price="1.00")
    pfdb.close_database()
    assert empty_state(name) != before

    empty.reset("this test")

    assert empty.name == name and empty.replaced_after == []
    assert empty_state(name) == before
    pfdb.init_database(pg_url(name))
    assert pfdb.db.get_tables() == []


def test_privileges_a_test_granted_on_the_empty_database_are_taken_back(empty):
    name = empty.name
    before = empty_state(name)
    conn = psycopg2.connect(pg_url(name))
    with conn, conn.cursor() as cur:
        cur.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")  # the schema itself unchanged: no fingerprint sees it
    conn.close()
    assert empty_state(name)[1] != before[1]

    empty.reset("this test")

    assert empty.name == name and empty.replaced_after == []
    assert empty_state(name) == before


def test_privileges_a_test_granted_on_the_database_itself_cost_a_new_empty_database(empty):
    name = empty.name
    before = empty_state(name)
    conn = psycopg2.connect(pg_url(name))
    with conn, conn.cursor() as cur:
        cur.execute(f'GRANT TEMPORARY ON DATABASE "{name}" TO PUBLIC; REVOKE CONNECT ON DATABASE "{name}" FROM PUBLIC')
    conn.close()

    empty.reset("this test")

    assert empty.replaced_after == ["this test"] and empty.name != name
    assert empty_state(empty.name) == before


def test_what_dropping_the_schemas_cannot_undo_costs_a_new_empty_database(empty):
    name = empty.name
    before = empty_state(name)
    conn = psycopg2.connect(pg_url(name))
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE notes (id int); ALTER DATABASE \"{name}\" SET work_mem = '8MB'")
    conn.close()

    empty.reset("this test")

    assert empty.replaced_after == ["this test"] and empty.name != name
    assert empty_state(empty.name) == before
