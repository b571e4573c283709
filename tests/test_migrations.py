"""Migrations through the Python API on both backends: apply, roll back, fail safely, detect drift."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from decimal import Decimal
from pathlib import Path

import peewee as pw
import processes
import pytest

import pfdb
from pfdb import Category, MigrationError, Product, migrations
from pfdb.migrations import check, create, migrate, rollback, status

ROOT = Path(__file__).resolve().parent.parent
INITIAL = ROOT / "migrations" / "001_initial.py"
# every migration pfdb ships, in order
SHIPPED = ("001_initial", "002_unique_category_names", "003_postgres_jsonb_timestamptz", "004_tenant_registry")

ADD_NOTES = """
import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("products", notes=pw.TextField(null=True))
    migrator.create_model(type("Supplier", (pw.Model,), {
        "name": pw.CharField(max_length=100),
        "Meta": type("Meta", (), {"table_name": "suppliers"}),
    }))


def rollback(migrator, database, *, fake=False):
    migrator.remove_model("suppliers")
    migrator.remove_fields("products", "notes")
"""

FAILING = """
import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.create_model(type("Half", (pw.Model,), {
        "name": pw.CharField(),
        "Meta": type("Meta", (), {"table_name": "half_done"}),
    }))
    migrator.add_fields("categories", note=pw.TextField(null=True))
    migrator.sql("UPDATE categories SET note = 'touched'")
    migrator.sql("SELECT * FROM no_such_table")


def rollback(migrator, database, *, fake=False):
    pass
"""


@pytest.fixture
def mdir(tmp_path, monkeypatch):
    """A migrations folder of the test's own, starting with the real 001_initial."""
    folder = tmp_path / "migrations"
    folder.mkdir()
    shutil.copy(INITIAL, folder)
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(folder))
    return folder


@pytest.fixture
def fresh(empty_url):
    pfdb.init_database(empty_url)
    return empty_url


def tables() -> set[str]:
    return set(pfdb.db.get_tables())


def columns(table: str) -> set[str]:
    return {c.name for c in pfdb.db.get_columns(table)}


def applied() -> list[str]:
    return [m.name for m in status().applied]


def test_initial_creates_the_whole_schema_and_reports_no_drift(fresh):
    assert status().pending == SHIPPED
    assert migrate().applied == SHIPPED
    expected = {
        "users",
        "categories",
        "products",
        "product_images",
        "icons",
        "jobs",
        "sync_history",
        "system_logs",
        "configuration",
        "tenants",
        "migratehistory",
    }
    assert tables() == expected
    indexes = {i.name: i for t in expected for i in pfdb.db.get_indexes(t)}
    assert indexes["products_sku"].unique and indexes["users_email"].unique
    assert indexes["products_category_id_status"].columns == ["category_id", "status"]
    assert indexes["product_images_product_id_content_hash"].unique
    assert "shopify_sync_status" in indexes["products_pending_sync"].sql  # partial index
    assert not check().has_drift
    state = status(drift=True)
    assert state.up_to_date and state.drift == () and state.current == SHIPPED[-1]
    assert state.applied[0].applied_at.tzinfo is not None


def test_rollback_of_initial_removes_everything(fresh):
    migrate()
    result = rollback("zero", destructive_ok=True, backup=False)
    assert result.rolled_back == SHIPPED[::-1] and result.current is None
    assert tables() <= {"migratehistory"}
    assert applied() == []
    migrate()  # and it comes back
    assert "products" in tables()


def test_migrate_rollback_to_001_and_again_keeps_data(fresh, mdir):
    (mdir / "002_add_notes.py").write_text(ADD_NOTES)
    assert migrate().applied == ("001_initial", "002_add_notes")
    assert "notes" in columns("products") and "suppliers" in tables()
    Product.create(sku="KEEP", name="survives", price="9.99")

    assert rollback("001", destructive_ok=True, backup=False).rolled_back == ("002_add_notes",)
    assert "notes" not in columns("products") and "suppliers" not in tables()
    assert applied() == ["001_initial"]
    assert Product.get(Product.sku == "KEEP").price == Decimal("9.99")

    assert migrate().applied == ("002_add_notes",)
    assert Product.get(Product.sku == "KEEP").name == "survives"
    assert rollback(destructive_ok=True, backup=False).rolled_back == ("002_add_notes",)  # no target: the last one


def test_migrate_up_to_a_target(fresh, mdir):
    (mdir / "002_add_notes.py").write_text(ADD_NOTES)
    assert migrate("001").applied == ("001_initial",)
    assert status().pending == ("002_add_notes",)
    assert migrate("001").applied == ()


def test_fake_records_without_running(fresh):
    assert migrate(fake=True).applied == SHIPPED
    assert applied() == list(SHIPPED) and "products" not in tables()


def test_a_failing_migration_leaves_nothing_behind(fresh, mdir):
    migrate()
    Category.create(name="Before")
    (mdir / "002_broken.py").write_text(FAILING)
    with pytest.raises(MigrationError) as info:
        migrate()
    message = str(info.value)
    assert "002_broken failed" in message and "no_such_table" in message
    assert "half_done" not in tables()
    assert "note" not in columns("categories")
    assert applied() == ["001_initial"]
    assert [c.name for c in Category.select()] == ["Before"]


def test_validation_hook_failure_rolls_the_step_back(fresh, mdir):
    migrate()
    (mdir / "002_add_notes.py").write_text(
        ADD_NOTES
        + textwrap.dedent("""
        def validate_migrate(database):
            count = database.execute_sql("SELECT COUNT(*) FROM products WHERE notes IS NULL").fetchone()[0]
            if count:
                raise ValueError(f"{count} products have no notes")
    """)
    )
    Product.create(sku="N", name="no notes")
    with pytest.raises(MigrationError, match="validate_migrate of 002_add_notes failed: 1 products have no notes"):
        migrate()
    assert "notes" not in columns("products") and applied() == ["001_initial"]


def test_validation_hook_passing_and_rollback_hook(fresh, mdir):
    (mdir / "002_add_notes.py").write_text(
        ADD_NOTES
        + textwrap.dedent("""
        def validate_migrate(database):
            return "notes" in [c.name for c in database.get_columns("products")]

        def validate_rollback(database):
            return False
    """)
    )
    assert migrate().applied == ("001_initial", "002_add_notes")
    with pytest.raises(MigrationError, match="validate_rollback of 002_add_notes returned False"):
        rollback(destructive_ok=True, backup=False)
    assert "notes" in columns("products") and applied() == ["001_initial", "002_add_notes"]


@pytest.mark.parametrize("target, message", [("007", "unknown migration '007'"), ("nonsense", "unknown migration")])
def test_unknown_rollback_target_undoes_nothing(fresh, target, message):
    migrate()
    with pytest.raises(MigrationError, match=message):
        rollback(target)
    assert applied() == list(SHIPPED)


def test_rollback_to_a_migration_that_is_not_applied(fresh, mdir):
    (mdir / "002_add_notes.py").write_text(ADD_NOTES)
    migrate("001")
    with pytest.raises(MigrationError, match="002_add_notes is not applied"):
        rollback("002")
    rollback("zero", destructive_ok=True, backup=False)
    with pytest.raises(MigrationError, match="nothing to roll back"):
        rollback("zero")
    assert applied() == []


def test_dry_run_shows_sql_and_changes_nothing(fresh):
    result = migrate(dry_run=True)
    assert result.dry_run and result.applied == SHIPPED
    assert any(s.startswith('CREATE TABLE IF NOT EXISTS "products"') for s in result.sql)
    assert any("products_pending_sync" in s for s in result.sql)
    assert not tables() - {"migratehistory"} and applied() == []


def test_auto_upgrade_on_init(empty_url):
    pfdb.init_database(empty_url, migration_auto_upgrade=True)
    assert applied() == list(SHIPPED)


# -- creating migrations from model changes -------------------------------------------------------
@pytest.fixture
def extra_field():
    """Add a field to Product for one test, as a developer editing models.py would."""
    added: list[str] = []

    def add(name: str, field: pw.Field) -> None:
        Product._meta.add_field(name, field)
        added.append(name)

    yield add
    for name in added:
        Product._meta.remove_field(name)
        delattr(Product, name)


def test_status_keeps_its_drift_answer_until_models_or_migrations_change(fresh, mdir, extra_field):
    from pfdb import _drift_cache

    migrate()
    assert status(drift=True).drift == ()
    cached = json.loads((_drift_cache.cache_dir() / "drift.json").read_text())
    assert cached["changes"] == []
    # The stored answer is what status reads (check never does): plant one to see it.
    (_drift_cache.cache_dir() / "drift.json").write_text(json.dumps({"key": cached["key"], "changes": ["planted"]}))
    assert status(drift=True).drift == ("planted",) and not check().has_drift

    extra_field("weight_net", pw.DecimalField(max_digits=10, decimal_places=3, null=True))
    drift = status(drift=True).drift  # a model change makes a new key: recomputed
    assert len(drift) == 1 and "weight_net" in drift[0]

    create("add product net weight")
    assert status(drift=True).drift == ()  # so does a new migration file


def test_status_works_when_the_cache_cannot_be_written(fresh, tmp_path, monkeypatch):
    (tmp_path / "not-a-folder").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "not-a-folder"))
    migrate()
    assert status(drift=True).drift == () and status(drift=True).drift == ()


def test_check_detects_a_model_change_and_create_writes_a_runnable_migration(fresh, mdir, extra_field):
    migrate()
    extra_field("weight_net", pw.DecimalField(max_digits=10, decimal_places=3, null=True))
    drift = check()
    assert drift.has_drift and "weight_net" in drift.changes[0]

    result = create("Add product net weight!! (kg)")
    assert result.name == "002_add_product_net_weight_kg"
    assert result.path == mdir / "002_add_product_net_weight_kg.py"
    source = result.path.read_text()
    assert "rounding='ROUND_HALF_EVEN'" in source  # peewee-migrate writes a bare, undefined name
    compile(source, str(result.path), "exec")

    assert migrate().applied == ("002_add_product_net_weight_kg",)  # runs as written
    assert "weight_net" in columns("products") and not check().has_drift
    Product.create(sku="W", name="weighed", weight_net=Decimal("1.250"))
    assert rollback(destructive_ok=True, backup=False).rolled_back == ("002_add_product_net_weight_kg",)  # as written
    assert "weight_net" not in columns("products")


def test_new_composite_index_creates_no_churn(fresh, mdir):
    migrate()
    Product._meta.indexes.append((("brand", "status"), False))
    try:
        result = create("index products by brand")
        assert [c for c in result.changes] == ["migrator.add_index('products', 'brand', 'status', unique=False)"]
        migrate()
        assert "products_brand_status" in {i.name for i in pfdb.db.get_indexes("products")}
        assert check().changes == ()  # nothing dropped and re-added
        rollback(backup=False)
        assert "products_brand_status" not in {i.name for i in pfdb.db.get_indexes("products")}
    finally:
        Product._meta.indexes.remove((("brand", "status"), False))


def test_create_with_no_changes_writes_nothing(fresh, mdir):
    migrate()
    result = create("nothing really")
    assert result.path is None and result.name is None
    assert sorted(p.name for p in mdir.glob("0*.py")) == ["001_initial.py"]


def test_empty_migration_template_runs(fresh, mdir):
    result = create("backfill handles", auto=False)
    assert result.path.name == "002_backfill_handles.py"
    assert "def migrate(" in result.path.read_text() and "validate_migrate" in result.path.read_text()
    assert migrate().applied == ("001_initial", "002_backfill_handles")
    assert rollback(backup=False).rolled_back == ("002_backfill_handles",)


@pytest.mark.parametrize("description", ["", "   ", "!!!"])
def test_create_refuses_a_description_without_words(fresh, mdir, description):
    with pytest.raises(MigrationError, match="has no letters or digits"):
        create(description)


# -- concurrent deploys ---------------------------------------------------------------------------
SLOW = """
import time


def migrate(migrator, database, *, fake=False):
    migrator.sql("CREATE TABLE slow_marker (id INTEGER PRIMARY KEY)")
    migrator.run(time.sleep, 0.5)


def rollback(migrator, database, *, fake=False):
    migrator.sql("DROP TABLE slow_marker")
"""


def test_concurrent_migrate_applies_each_migration_once(empty_url, mdir, tmp_path):
    (mdir / "002_slow.py").write_text(SLOW)
    runner = tmp_path / "run.py"
    runner.write_text(
        textwrap.dedent(f"""
        import json, sys
        import pfdb
        from pfdb.migrations import migrate
        pfdb.init_database({empty_url!r})
        print(json.dumps(migrate(backup=False, lock_timeout=60).applied))
    """)
    )
    procs = [
        processes.Popen([sys.executable, str(runner)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    outputs = [(p.wait(timeout=120), *p.communicate()) for p in procs]
    assert all(code == 0 for code, _, _ in outputs), outputs
    import json

    everything = [name for _, out, _ in outputs for name in json.loads(out)]
    assert sorted(everything) == ["001_initial", "002_slow"]
    pfdb.init_database(empty_url)
    assert applied() == ["001_initial", "002_slow"]


def test_lock_timeout_gives_a_clear_error(postgres_url):
    import psycopg2

    pfdb.init_database(postgres_url)
    holder = psycopg2.connect(postgres_url)
    holder.autocommit = True
    holder.cursor().execute("SELECT pg_advisory_lock(%s)", (migrations._PG_LOCK_KEY,))
    try:
        with pytest.raises(migrations.MigrationLockTimeout, match="held the migration lock for more than 0.3 s"):
            rollback(lock_timeout=0.3, destructive_ok=True, backup=False)
    finally:
        holder.close()
    assert applied() == list(SHIPPED)


def test_drift_check_does_not_swallow_other_threads_queries(db):
    """Checking drift fakes the migrations; the application's other threads keep writing for real."""
    import threading

    done = threading.Event()
    checks = 0  # drift checks finished while the writer was writing
    written = 0

    def writer() -> None:
        # Writes until a number of checks ran beside it (not a fixed count of writes: under
        # the GIL each commit took ~45 ms against the checks, and 150 of them 7 s).
        nonlocal written
        while written < 30 or checks < 30:
            with pfdb.db_session_scope():
                Product.create(sku=f"BG-{written}", name="written meanwhile")
            written += 1
        done.set()

    thread = threading.Thread(target=writer)
    thread.start()
    while not done.is_set():
        assert not check().has_drift
        checks += 1
    thread.join()
    assert checks >= 30 and Product.select().count() == written


def test_the_drift_cache_key_follows_a_field_class_change():
    # peewee-migrate types a custom field by its peewee base: a new base is drift, so a new key.
    from pfdb import _drift_cache
    from pfdb.models import MODELS
    from pfdb.models.fields import UTCDateTimeField

    key = _drift_cache.drift_key(MODELS, migrations.migrations_dir(), "sqlite")
    assert _drift_cache.drift_key(MODELS, migrations.migrations_dir(), "sqlite") == key
    assert _drift_cache.drift_key(MODELS, migrations.migrations_dir(), "postgresql") != key
    UTCDateTimeField.__bases__ = (pw.TextField,)
    try:
        assert _drift_cache.drift_key(MODELS, migrations.migrations_dir(), "sqlite") != key
    finally:
        UTCDateTimeField.__bases__ = (pw.DateTimeField,)
