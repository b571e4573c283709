"""Restore only what is recognisably a pfdb backup (issue 10, part 1).

``pfdb restore`` accepted another application's peewee-migrate database (history
``0001_initial``, a ``blog_posts`` table) and a file holding only a ``migratehistory``
table, and on PostgreSQL such a dump dropped pfdb's tables. Each foreign file is built
here for real (sqlite3, or a scratch PostgreSQL database and ``pg_dump -Fc``) and must be
refused by ``restore`` and ``check_backup`` with the database untouched.
"""

from __future__ import annotations

import re
import sqlite3
import subprocess

import pytest

import pfdb
from pfdb import _pg_tools
from pfdb.errors import RestoreError
from pfdb.maintenance import backup, check_backup, restore
from pfdb.migrations import migration_names
from pfdb.models import Category, Product

HISTORY = "CREATE TABLE migratehistory (id {pk}, name VARCHAR(255) NOT NULL, migrated_at TIMESTAMP NOT NULL)"
RECORD = "INSERT INTO migratehistory (name, migrated_at) VALUES ('{name}', '2026-01-01 00:00:00')"

FOREIGN = {
    # another application's peewee-migrate database
    "blog": (
        [
            HISTORY,
            RECORD.format(name="0001_initial"),
            "CREATE TABLE blog_posts (id {pk}, title TEXT)",
            "INSERT INTO blog_posts (title) VALUES ('hello')",
        ],
        "its migration history starts at '0001_initial', pfdb's at '001_initial'",
    ),
    # a history table and nothing else, empty or naming pfdb's first migration
    "history-only": ([HISTORY], "its migratehistory table records no migration"),
    "history-001-only": ([HISTORY, RECORD.format(name="001_initial")], "it holds none of pfdb's tables"),
    # pfdb's migration name, somebody else's tables
    "blog-named-001": (
        [HISTORY, RECORD.format(name="001_initial"), "CREATE TABLE blog_posts (id {pk}, title TEXT)"],
        "it holds none of pfdb's tables (it has blog_posts)",
    ),
    # pfdb's history, but only some of the tables 001 creates
    "partial": (
        [HISTORY, RECORD.format(name="001_initial"), "CREATE TABLE users (id {pk}, email TEXT)"],
        "it lacks the tables categories, configuration, icons",
    ),
}


@pytest.fixture
def shop(db, tmp_path, monkeypatch):
    """A migrated database with a category and two products; backups land in tmp_path."""
    monkeypatch.chdir(tmp_path)
    parent = Category.create(name="Shirts")
    Product.create(sku="A", name="kept", price="1.00", category=parent)
    Product.create(sku="B", name="kept too", price="2.00")
    return db


def counts() -> dict[str, int]:
    return {
        "products": Product.select().count(),
        "categories": Category.select().count(),
        "tables": len(pfdb.db.get_tables()),
    }


def build_foreign(backend: str, statements: list[str], tmp_path, request) -> object:
    """The foreign file: a SQLite database, or a pg_dump -Fc of a scratch PostgreSQL database."""
    if backend == "sqlite":
        path = tmp_path / "foreign.db"
        with sqlite3.connect(path) as conn:
            for sql in statements:
                conn.execute(sql.format(pk="INTEGER PRIMARY KEY"))
        conn.close()
        return path
    import psycopg2
    from conftest import pg_url

    server = request.getfixturevalue("pg_server")
    name = server.create()
    request.addfinalizer(lambda: server.release(name))
    conn = psycopg2.connect(pg_url(name))
    with conn, conn.cursor() as cur:
        for sql in statements:
            cur.execute(sql.format(pk="SERIAL PRIMARY KEY"))
    major = conn.server_version // 10000
    conn.close()
    path = tmp_path / "foreign.dump"
    pg_dump = _pg_tools.find_tool("pg_dump", major, RuntimeError)
    subprocess.run([pg_dump, "-Fc", f"--file={path}", pg_url(name)], check=True)
    return path


@pytest.mark.parametrize("kind", list(FOREIGN))
def test_a_foreign_file_is_refused_and_the_database_untouched(shop, backend, tmp_path, request, kind):
    statements, message = FOREIGN[kind]
    foreign = build_foreign(backend, statements, tmp_path, request)
    before = counts()
    with pytest.raises(RestoreError, match=re.escape(message)) as caught:
        check_backup(foreign)
    assert caught.value.exit_code == 1 and caught.value.hint == "pass a file written by pfdb backup"
    with pytest.raises(RestoreError, match=re.escape(message)):
        restore(foreign)
    assert counts() == before
    assert {"products", "categories", "users", "migratehistory"} <= set(pfdb.db.get_tables())
    assert "blog_posts" not in pfdb.db.get_tables()
    assert not (tmp_path / "backups").exists()  # refused before the safety backup


@pytest.mark.parametrize("kind", ["blog", "history-only"])
def test_cli_restore_refuses_a_foreign_file_with_one_line(
    shop, backend, database_url, tmp_path, request, run_cli, kind
):
    foreign = build_foreign(backend, FOREIGN[kind][0], tmp_path, request)
    before = counts()
    code, out, err = run_cli("--database-url", database_url, "restore", str(foreign), "--yes")
    lines = err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and "is not a pfdb backup" in lines[0], (code, err)
    assert "restored" not in out
    assert counts() == before


def test_a_pfdb_backup_with_an_extra_table_still_restores(shop, backend, database_url, tmp_path):
    """Tables no migration here creates are allowed beside pfdb's own (a newer pfdb, an add-on)."""
    taken = backup(tmp_path / ("extra.db" if backend == "sqlite" else "extra.dump")).path
    if backend != "sqlite":  # PostgreSQL: the plain pfdb dump is the positive case
        assert check_backup(taken) == migration_names()[-1]
        return
    with sqlite3.connect(taken) as conn:
        conn.execute("CREATE TABLE addon_notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.close()
    Product.create(sku="C", name="after the backup")
    assert check_backup(taken) == migration_names()[-1]
    result = restore(taken)
    assert result.migration == migration_names()[-1] and Product.select().count() == 2
    assert "addon_notes" in pfdb.db.get_tables()
