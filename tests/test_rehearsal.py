"""pfdb migrate --rehearse: pending migrations applied, rolled back and applied again on a scratch copy.

Each test writes its pending migration (900) into a copy of pfdb's migrations folder; the real
database must come out exactly as it went in (schema, history and a checksum of every row), and
the copy must be gone, also after a failure or Ctrl-C.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import psycopg2
import pytest
from conftest import PG_ADMIN_URL

import pfdb
from pfdb import migrations
from pfdb.models import Product
from pfdb.rehearsal import describe_schema, schema_differences

ROOT = Path(__file__).resolve().parent.parent

GOOD = """
import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("products", notes=pw.TextField(null=True))
    migrator.sql("CREATE INDEX products_description_x ON products (description)")
    migrator.sql("UPDATE products SET notes = name")


def rollback(migrator, database, *, fake=False):
    migrator.sql("DROP INDEX products_description_x")
    migrator.remove_fields("products", "notes")
"""
FORGETS_INDEX = GOOD.replace('    migrator.sql("DROP INDEX products_description_x")\n', "")
FAILS = GOOD.replace("UPDATE products SET notes = name", "UPDATE no_such_table SET x = 1")
INTERRUPTED = GOOD.replace('    migrator.sql("UPDATE products SET notes = name")\n', "    raise KeyboardInterrupt\n")


@pytest.fixture
def folder(tmp_path, monkeypatch):
    target = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(target))
    scratch = tmp_path / "tmp"  # where a SQLite copy is made: must be empty afterwards
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    return target


def pending(folder: Path, body: str, name: str = "900_change") -> None:
    (folder / f"{name}.py").write_text(body, encoding="utf-8")


def fingerprint() -> tuple:
    """The real database as a rehearsal must leave it: schema, history, and every row hashed."""
    database = pfdb.db.obj
    digest = hashlib.sha256()
    with pfdb.db_read_scope():
        schema = describe_schema(database)
        for table in sorted(schema):
            rows = database.execute_sql(f'SELECT * FROM "{table}" ORDER BY 1').fetchall()
            digest.update(f"{table}:{rows!r}".encode())
    return schema, [m.name for m in migrations.status().applied], digest.hexdigest()


def copies_left(backend: str, url: str, folder: Path) -> list[str]:
    if backend == "sqlite":
        return [p.name for p in (folder.parent / "tmp").iterdir()]
    name = url.rsplit("/", 1)[1]
    conn = psycopg2.connect(PG_ADMIN_URL)
    try:
        with conn.cursor() as cursor:
            cursor.execute("SELECT datname FROM pg_database WHERE datname LIKE %s", (f"{name[:40]}_rehearsal_%",))
            return [r[0] for r in cursor.fetchall()]
    finally:
        conn.close()


@pytest.fixture
def real(fresh_database_url, folder):
    pfdb.init_database(fresh_database_url)
    Product.create(sku="R-1", name="kept", description="as it was")
    Product.create(sku="R-2", name="also kept")
    return fresh_database_url


@pytest.mark.fresh_database
def test_a_good_migration_passes_and_nothing_of_the_real_database_changes(real, folder, backend):
    pending(folder, GOOD)
    before = fingerprint()
    result = pfdb.rehearse_migrations()
    assert result.ok and result.failed is None, result.as_dict()
    assert result.migrations == ("900_change",)
    assert [(s.action, s.migration) for s in result.steps] == [
        ("copy", None),
        ("apply", "900_change"),
        ("rollback", "900_change"),
        ("reapply", "900_change"),
        ("drop", None),
    ]
    assert all(s.seconds >= 0 and s.ok for s in result.steps)
    assert result.rows["products"] == {"before": 2, "applied": 2, "rolled_back": 2, "reapplied": 2}
    assert result.rows["migratehistory"]["applied"] == result.rows["migratehistory"]["before"] + 1
    assert result.copy_method == ("backup API" if backend == "sqlite" else "template")
    assert fingerprint() == before
    assert migrations.status().pending == ("900_change",)
    assert copies_left(backend, real, folder) == [] and result.copy_removed


@pytest.mark.postgres
def test_with_someone_connected_postgresql_copies_with_pg_dump(fresh_postgres_url, folder):
    real = fresh_postgres_url
    pfdb.init_database(real)
    Product.create(sku="R-1", name="kept", description="as it was")
    Product.create(sku="R-2", name="also kept")
    pending(folder, GOOD)
    before = fingerprint()
    other = psycopg2.connect(real)  # an application instance: the database cannot be a template now
    try:
        result = pfdb.rehearse_migrations()
    finally:
        other.close()
    assert result.ok and result.copy_method == "pg_dump", result.as_dict()
    assert result.rows["products"]["reapplied"] == 2
    assert fingerprint() == before and copies_left("postgresql", real, folder) == []


@pytest.mark.fresh_database
def test_a_rollback_that_forgets_an_index_fails_naming_the_migration(real, folder, backend, run_cli):
    pending(folder, FORGETS_INDEX)
    before = fingerprint()
    result = pfdb.rehearse_migrations()
    assert not result.ok and result.failed == "900_change"
    step = result.failed_step
    assert step.action == "rollback" and "the rollback of 900_change does not undo it" in step.error
    assert [d.split(":")[0] for d in step.differences] == ["extra index products_description_x on products"]
    assert [s.action for s in result.steps] == ["copy", "apply", "rollback", "drop"]
    assert fingerprint() == before and copies_left(backend, real, folder) == []
    pfdb.close_database()
    code, out, err = run_cli("--database-url", real, "migrate", "--rehearse")
    assert code == 1, err
    assert "rehearsal FAILED at 900_change; the database was not touched" in out
    assert "extra index products_description_x on products" in out
    code, out, err = run_cli("--database-url", real, "migrate", "--rehearse", "--json")
    assert out, err
    data = json.loads(out)
    assert code == 1 and out.count("\n") == 1
    assert data["ok"] is False and data["failed"] == "900_change" and data["copy_removed"] is True
    assert data["differences"][0].startswith("extra index products_description_x")


@pytest.mark.fresh_database
def test_a_migration_that_fails_to_apply_fails_naming_it(real, folder, backend):
    pending(folder, FAILS)
    before = fingerprint()
    result = pfdb.rehearse_migrations()
    assert not result.ok and result.failed == "900_change"
    assert result.failed_step.action == "apply"
    assert result.failed_step.error.startswith("migration 900_change failed:")
    assert "no_such_table" in result.failed_step.error
    assert fingerprint() == before and copies_left(backend, real, folder) == []


@pytest.mark.fresh_database
def test_ctrl_c_during_the_rehearsal_still_drops_the_copy(real, folder, backend):
    pending(folder, INTERRUPTED)
    before = fingerprint()
    with pytest.raises(KeyboardInterrupt):
        pfdb.rehearse_migrations()
    assert fingerprint() == before and copies_left(backend, real, folder) == []


def test_nothing_pending_is_nothing_to_rehearse(db, run_cli, database_url):
    result = pfdb.rehearse_migrations()
    assert result.ok and result.migrations == () and result.copy_method is None
    code, out, _ = run_cli("--database-url", database_url, "migrate", "--rehearse")
    assert code == 0 and "nothing to rehearse: no pending migration" in out
    code, out, _ = run_cli("--database-url", database_url, "migrate", "--rehearse", "--json")
    assert code == 0 and json.loads(out)["ok"] is True


def test_rehearse_refuses_options_it_cannot_honour(run_cli, database_url):
    code, _, err = run_cli("--database-url", database_url, "migrate", "--rehearse", "--dry-run")
    assert code == 2 and "--rehearse takes no --target, --fake or --dry-run" in err


def test_schema_differences_name_what_differs():
    before = {"products": {"columns": {"name": "TEXT NULL"}, "indexes": {}, "constraints": {}}}
    after = {
        "products": {"columns": {"name": "TEXT NOT NULL", "x": "INT NULL"}, "indexes": {"i": "(x)"}, "constraints": {}},
        "extra": {"columns": {}, "indexes": {}, "constraints": {}},
    }
    assert schema_differences(before, after) == [
        "extra table extra",
        "column products.name differs: TEXT NULL before, TEXT NOT NULL after",
        "extra column products.x: INT NULL",
        "extra index i on products: (x)",
    ]
    assert schema_differences(after, before)[0] == "missing table extra"


def test_an_in_memory_database_is_copied_through_its_connection(folder):
    pfdb.init_database("sqlite:///:memory:")
    pfdb.db.connect()  # the one connection the database lives in
    migrations.migrate(backup=False)
    Product.create(sku="M-1", name="in memory")
    pending(folder, GOOD)
    result = pfdb.rehearse_migrations()
    assert result.ok and result.copy_method == "backup API" and result.rows["products"]["reapplied"] == 1
    assert migrations.status().pending == ("900_change",)
    with pfdb.db.atomic():  # the backup would wait for this transaction forever: refused instead
        with pytest.raises(pfdb.MigrationError, match="cannot be rehearsed inside a transaction"):
            pfdb.rehearse_migrations()
