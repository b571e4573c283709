"""Indexes built CONCURRENTLY (PostgreSQL) by a migration helper, outside the step's transaction;
an INVALID index left by a failed build is dropped so a retry works. SQLite: a plain CREATE INDEX."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import peewee as pw
import psycopg2
import pytest

import pfdb
from pfdb import migrations
from pfdb.errors import MigrationError
from pfdb.migration_lint import lint
from pfdb.models import Product

ROOT = Path(__file__).resolve().parent.parent

ONLINE = """
from pfdb.migrations import add_index_concurrently, drop_index_concurrently


def migrate(migrator, database, *, fake=False):
    add_index_concurrently(migrator, "products", "{column}", unique={unique})


def rollback(migrator, database, *, fake=False):
    drop_index_concurrently(migrator, "products", "{column}")
"""


@pytest.fixture
def folder(tmp_path, monkeypatch):
    target = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(target))
    return target


def write(folder: Path, column: str = "description", unique: bool = False, name: str = "900_index") -> None:
    (folder / f"{name}.py").write_text(ONLINE.format(column=column, unique=unique), encoding="utf-8")


def indexes(table: str = "products") -> dict[str, bool]:
    """Index name -> valid (SQLite's are always valid)."""
    database = pfdb.db.obj
    if isinstance(database, pw.SqliteDatabase):
        return {i.name: True for i in database.get_indexes(table)}
    rows = database.execute_sql(
        "SELECT c.relname, i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = %s::regclass",
        (table,),
    ).fetchall()
    return dict(rows)


@pytest.fixture
def fresh(fresh_database_url, folder):
    pfdb.init_database(fresh_database_url, migration_backup_before_upgrade=False)
    return fresh_database_url


@pytest.mark.fresh_database
def test_the_index_is_built_concurrently_and_dropped_the_same_way(fresh, folder, backend, caplog):
    write(folder)
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        assert migrations.migrate().applied == ("900_index",)
    assert indexes()["products_description"] is True
    executed = " ".join(r.getMessage() for r in caplog.records)
    concurrently = 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "products_description"' in executed
    assert concurrently == (backend == "postgresql")  # outside a transaction: inside one PostgreSQL refuses it
    assert ('CREATE INDEX IF NOT EXISTS "products_description"' in executed) == (backend == "sqlite")
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="peewee"):
        assert migrations.rollback(backup=False).rolled_back == ("900_index",)
    assert "products_description" not in indexes()
    executed = " ".join(r.getMessage() for r in caplog.records)
    assert ('DROP INDEX CONCURRENTLY IF EXISTS "products_description"' in executed) == (backend == "postgresql")
    assert migrations.status().pending == ("900_index",)


@pytest.mark.fresh_database
def test_a_failed_build_leaves_no_invalid_index_and_a_retry_works(fresh, folder, backend):
    Product.create(sku="D-1", name="same name")
    Product.create(sku="D-2", name="same name")
    write(folder, column="name", unique=True)
    with pytest.raises(MigrationError) as failed:
        migrations.migrate()
    message = str(failed.value)
    assert message.startswith("migration 900_index failed:") and "\n" not in message
    if backend == "postgresql":  # PostgreSQL keeps the half-built index, marked INVALID: pfdb dropped it
        assert "the INVALID index products_name it left was dropped" in message
    assert "products_name" not in indexes()
    assert migrations.status().pending == ("900_index",)
    Product.update(name="another name").where(Product.sku == "D-2").execute()
    assert migrations.migrate().applied == ("900_index",)
    assert indexes()["products_name"] is True


@pytest.mark.postgres
@pytest.mark.fresh_database
def test_an_invalid_index_left_by_a_killed_build_is_dropped_before_the_next(fresh_postgres_url, folder):
    pfdb.init_database(fresh_postgres_url, migration_backup_before_upgrade=False)
    Product.create(sku="D-1", name="same name")
    Product.create(sku="D-2", name="same name")
    conn = psycopg2.connect(fresh_postgres_url)  # what a pfdb killed mid-build leaves behind
    conn.autocommit = True
    with conn.cursor() as cursor, pytest.raises(psycopg2.Error):
        cursor.execute('CREATE UNIQUE INDEX CONCURRENTLY "products_name" ON products (name)')
    conn.close()
    assert indexes()["products_name"] is False
    Product.update(name="another name").where(Product.sku == "D-2").execute()
    write(folder, column="name", unique=True)
    assert migrations.migrate().applied == ("900_index",)
    assert indexes()["products_name"] is True


def test_a_migration_mixing_it_with_other_operations_is_refused(fresh, folder):
    body = ONLINE.format(column="description", unique=False).replace(
        '    add_index_concurrently(migrator, "products", "description", unique=False)\n',
        '    add_index_concurrently(migrator, "products", "description", unique=False)\n'
        '    migrator.sql("UPDATE products SET name = name")\n',
    )
    (folder / "900_index.py").write_text(body, encoding="utf-8")
    with pytest.raises(MigrationError, match="mixes indexes built CONCURRENTLY with other operations"):
        migrations.migrate()
    assert migrations.status().pending == ("900_index",)


def test_lint_knows_it_as_the_safe_recipe_and_dry_run_shows_it(fresh, folder, backend):
    write(folder)
    assert lint().findings == ()
    (folder / "900_index.py").write_text(
        'def migrate(migrator, database, *, fake=False):\n    migrator.add_index("products", "description")\n',
        encoding="utf-8",
    )
    assert [f.key for f in lint().findings] == (["add_index products"] if backend == "postgresql" else [])
    write(folder)
    sql = migrations.migrate(dry_run=True).sql
    expected = 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "products_description" ON "products" ("description")'
    assert (expected in sql) == (backend == "postgresql")
    assert "products_description" not in indexes()
    assert pfdb.rehearse_migrations().ok  # and its rollback undoes it
