"""``pfdb copy``: every table and row, in every direction, verified, all or nothing."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import processes
import pytest
from conftest import pg_url

import pfdb
from pfdb import migrations
from pfdb.errors import CopyError, UsageError
from pfdb.feeds import import_products
from pfdb.models import (
    MODELS,
    Category,
    Configuration,
    Icon,
    Job,
    Product,
    ProductImage,
    SyncHistory,
    SystemLog,
    User,
)
from pfdb.transfer import copy_database

ROOT = Path(__file__).resolve().parent.parent
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)]


@pytest.fixture
def new_url(tmp_path, request):
    """A factory of URLs of new databases: empty (nothing created yet for SQLite), or ``migrated``
    (a copy of the session's migrated template: what migrating an empty one gives, without
    paying for the migrations again)."""
    made = []

    def make(backend: str, name: str = "db", *, migrated: bool = False) -> str:
        if backend == "sqlite":
            path = tmp_path / f"{name}-{len(made)}.db"
            made.append(None)  # the next name differs even when this one is not a server's
            if migrated:
                shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
            return f"sqlite:///{path}"
        server = request.getfixturevalue("pg_server")
        dbname = server.copy_of_template(request.getfixturevalue("pg_template")) if migrated else server.create()
        made.append(dbname)
        return pg_url(dbname)

    yield make
    pfdb.close_database()
    made = [dbname for dbname in made if dbname is not None]
    if made:
        server = request.getfixturevalue("pg_server")
        for dbname in made:
            server.release(dbname)


def fill(url: str) -> None:
    """A database with a row in every table: several category levels, any script, NULLs, JSON."""
    migrations.init(url)
    with pfdb.db_session_scope():
        user = User(email="ops@example.com", first_name="Zoë", last_name=None)
        user.set_password("correct horse battery")
        user.save()
        root = Category.create(name="Vêtements")
        child = Category.create(name="Рубашки", slug="rubashki", parent=root)
        Category.create(name="シャツ", slug="shatsu", parent=child, description="")
        Icon.create(category=child, url="https://img.example.com/i.png", generation={"prompt": "a shirt", "n": 1})
        for n in range(30):
            product = Product.create(
                sku=f"SKU-{n}",
                name=f"Produit {n} 日本",
                price=Decimal("19.90") + n,
                compare_at_price=None if n % 2 else Decimal("100"),
                currency="EUR",
                weight=Decimal("1.5") if n % 3 else None,
                category=child if n % 2 else root,
                attributes={"tags": ["été", "sale"], "n": n} if n % 4 else None,
                description="line one\nline\ttwo \\ back\r\b\v\f end" if n == 0 else "",
            )
            ProductImage.create(
                product=product,
                url=f"https://img.example.com/{n}.jpg",
                content_hash=f"{n:064x}",
                position=0,
                is_primary=True,
            )
        job = Job.create(job_type="import_products", user=user, parameters={"file": "feed.csv"})
        job.start(total_items=10)
        job.complete({"created": 10})
        SyncHistory.create(
            sync_type="product_feed",
            direction="import",
            source="feed.csv",
            status="completed",
            job=job,
            user=user,
            error_details={"rejects": []},
        )
        SystemLog.create(level="ERROR", logger="shop", message="boom ✗", extra={"order": 42}, user=user)
        Configuration.set_value("import.batch_size", 5000)
        Configuration.set_value("shop.name", "Café Ünïcode")
    pfdb.close_database()


def snapshot(url: str) -> dict[str, list[dict]]:
    pfdb.init_database(url)
    try:
        return {m._meta.table_name: list(m.select().order_by(m._meta.primary_key).dicts()) for m in MODELS}
    finally:
        pfdb.close_database()


@pytest.mark.parametrize("source_backend", BACKENDS)
@pytest.mark.parametrize("target_backend", BACKENDS)
def test_copy_carries_every_table_and_row(new_url, source_backend, target_backend, tmp_path):
    source, target = new_url(source_backend, "source", migrated=True), new_url(target_backend, "target")
    fill(source)
    result = copy_database(source, target)
    assert result.migration == migrations.migration_names()[-1] and result.created is (target_backend == "sqlite")
    assert all(t.ok for t in result.tables) and {t.table for t in result.tables} == {m._meta.table_name for m in MODELS}
    assert result.rows == sum(t.rows for t in result.tables) > 60
    before, after = snapshot(source), snapshot(target)
    assert after == before  # ids, timestamps, Decimals, JSON, NULLs and text in any script
    assert (
        after["products"][0]["description"] == "line one\nline\ttwo \\ back\r\b\v\f end"
        and after["categories"][2]["description"] == ""
    )
    if target_backend == "sqlite":
        assert (Path(target.removeprefix("sqlite:///")).stat().st_mode & 0o777) == 0o600
        assert not list(tmp_path.glob(".*.tmp*"))  # no debris of the copy
    # the copy is a working pfdb database: no drift, healthy, and new rows get new ids
    pfdb.init_database(target)
    assert not migrations.check().has_drift and pfdb.database_health_check()["status"] == "healthy"
    new = Product.create(sku="NEW-1", name="New", price="1.00")
    assert new.id == max(p["id"] for p in before["products"]) + 1
    feed = tmp_path / "feed.csv"
    feed.write_text("sku,name,price\nSKU-1,Renamed,5.00\nSKU-X,Extra,7.00\n", encoding="utf-8")
    imported = import_products(str(feed))
    assert (imported.created, imported.updated) == (1, 1)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_target_with_data_is_refused_unless_replace_which_backs_it_up(new_url, backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # PostgreSQL backups go to ./backups
    source, target = new_url(backend, "source", migrated=True), new_url(backend, "target", migrated=True)
    fill(source)
    migrations.init(target)
    Product.create(sku="ONLY-IN-TARGET", name="Keep me", price="1.00")
    pfdb.close_database()
    with pytest.raises(CopyError, match="already holds pfdb data") as refused:
        copy_database(source, target)
    assert "--replace" in str(refused.value)
    pfdb.init_database(target)
    assert Product.select().count() == 1  # untouched
    pfdb.close_database()
    result = copy_database(source, target, replace=True)
    assert result.backup and Path(result.backup).exists()
    assert snapshot(target) == snapshot(source)


def test_same_database_unknown_migrations_and_other_versions_are_refused(new_url, tmp_path, monkeypatch):
    source = new_url("sqlite", "source", migrated=True)
    fill(source)
    path = Path(source.removeprefix("sqlite:///"))
    (tmp_path / "link.db").symlink_to(path)
    for same in (source, f"sqlite:///{tmp_path}/../{tmp_path.name}/{path.name}", f"sqlite:///{tmp_path / 'link.db'}"):
        with pytest.raises(UsageError, match="the same database"):
            copy_database(source, same)
    # a target at another schema version: a migrations folder with one more migration
    extra = tmp_path / "migrations"
    extra.mkdir()
    for name in migrations.migration_names():
        (extra / f"{name}.py").write_text((ROOT / "migrations" / f"{name}.py").read_text())
    (extra / "900_notes.py").write_text(
        "def migrate(migrator, database, *, fake=False):\n"
        "    migrator.sql('CREATE TABLE notes (id INTEGER PRIMARY KEY)')\n\n\n"
        "def rollback(migrator, database, *, fake=False):\n"
        "    migrator.sql('DROP TABLE notes')\n"
    )
    target = new_url("sqlite", "target")
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(extra))
    migrations.init(target)
    pfdb.close_database()
    with pytest.raises(CopyError, match="the target is at migration 900_notes and the source at"):
        copy_database(source, target)
    # a source with a migration this pfdb does not know
    monkeypatch.delenv("PFDB_MIGRATIONS_DIR")
    with pytest.raises(CopyError, match="migrations this pfdb does not know: 900_notes"):
        copy_database(target, new_url("sqlite", "third"))


def test_a_missing_source_is_refused_and_creates_nothing(new_url, tmp_path):
    target = new_url("sqlite", "target")
    with pytest.raises(CopyError, match="there is no database at"):
        copy_database(f"sqlite:///{tmp_path / 'nope.db'}", target)
    assert not (tmp_path / "nope.db").exists() and not Path(target.removeprefix("sqlite:///")).exists()


COPY_SCRIPT = """
import sys, pfdb.transfer as t
def progress(table, done, total):
    print(table, done, flush=True)
    if table == "products":
        import time; time.sleep(0.05)
t.BATCH_ROWS = 200
t.copy_database(sys.argv[1], sys.argv[2], progress=progress)
"""


@pytest.mark.parametrize("target_backend", BACKENDS)
def test_a_killed_copy_leaves_the_target_as_it_was(new_url, target_backend, tmp_path):
    source = new_url("sqlite", "source", migrated=True)
    fill(source)
    pfdb.init_database(source)
    with pfdb.db_session_scope():
        Product.insert_many(
            [
                {
                    "sku": f"BULK-{n}",
                    "name": "Bulk",
                    "price": "1.00",
                    "created_at": "2026-01-01",
                    "updated_at": "2026-01-01",
                }
                for n in range(4000)
            ]
        ).execute()
    pfdb.close_database()
    target = new_url(target_backend, "target", migrated=target_backend == "postgresql")
    if target_backend == "postgresql":
        migrations.init(target)  # an existing, empty pfdb database
        pfdb.close_database()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = processes.Popen(
        [sys.executable, "-c", COPY_SCRIPT, source, target],
        stdout=subprocess.PIPE,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    for line in child.stdout:
        if line.startswith("products") and int(line.split()[1]) >= 1000:
            break
    child.kill()
    child.wait(timeout=30)
    if target_backend == "sqlite":
        assert not Path(target.removeprefix("sqlite:///")).exists()  # nothing under the final name
        assert list(tmp_path.glob(".target-*.db.copy-*.tmp*"))  # the killed copy's temporary file
    else:
        pfdb.init_database(target)
        assert Product.select().count() == 0 and Category.select().count() == 0
        pfdb.close_database()
    result = copy_database(source, target)  # a re-run completes, and cleans the leftovers
    assert all(t.ok for t in result.tables)
    if target_backend == "sqlite":
        assert not list(tmp_path.glob(".target-*.db.copy-*.tmp*"))


WRITER = """
import os, sys, time, pfdb
from pfdb.models import Product, SystemLog
pfdb.init_database(sys.argv[1])
stop, n = sys.argv[2], 0
deadline = time.monotonic() + 60  # a safety net: the test asks it to stop
def batch():
    with pfdb.db_session_scope():
        for i in range(5):
            Product.create(sku=f"W-{n}-{i}", name="written during the copy", price="2.00")
        SystemLog.create(level="INFO", logger="writer", message=f"batch {n}")
while not os.path.exists(stop) and time.monotonic() < deadline:
    batch()
    n += 1
    if n == 1:
        print("writing", flush=True)  # a batch is in: the copy may start
    time.sleep(0.005)
batch()  # one more after the copy ended: the copy cannot have seen it
n += 1
print(n)
"""


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_source_is_read_as_one_snapshot_while_it_is_written(new_url, backend, tmp_path):
    source, target = new_url(backend, "source", migrated=True), new_url("sqlite", "target")
    fill(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    stop = tmp_path / "stop-writing"
    writer = processes.Popen(
        [sys.executable, "-c", WRITER, source, str(stop)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # Until its first batch is in (not a fixed second), then beside it; it stops when the copy is done.
    assert writer.stdout.readline().strip() == "writing", writer.communicate(timeout=60)[1]
    import pfdb.transfer as transfer

    old = transfer.BATCH_ROWS
    transfer.BATCH_ROWS = 7  # many small batches: the copy takes a while beside the writer
    try:
        copy_database(source, target)
    finally:
        transfer.BATCH_ROWS = old
        stop.touch()
    out, err = writer.communicate(timeout=60)
    assert writer.returncode == 0, err
    pfdb.init_database(target)
    products = Product.select().where(Product.sku.startswith("W-")).count()
    logs = SystemLog.select().where(SystemLog.logger == "writer").count()
    assert products == 5 * logs  # each writer transaction is wholly in, or wholly out
    assert 0 < logs < int(out)  # the copy saw some of them, and the writer went on after it


def test_cli_copy(run_cli, new_url):
    source, target = new_url("sqlite", "source", migrated=True), new_url("sqlite", "target")
    fill(source)
    code, out, err = run_cli("copy", source, target, "--json")
    assert code == 0, err
    data = json.loads(out)
    assert len(out.strip().splitlines()) == 1 and data["rows"] > 60 and all(t["ok"] for t in data["tables"])
    code, _, err = run_cli("copy", source, target)
    assert code == 1 and "already holds pfdb data" in err and "--replace" in err
    code, out, err = run_cli("copy", source, target, "--replace")
    assert code == 0 and "verified" in out and "backup of the replaced target" in out, err
    code, _, err = run_cli("copy", source, source)
    assert code == 2 and "the same database" in err


JSON_DOCS = [
    '{"b": 1, "a": [1, 2.50, -0, -0.0, 1e5, 1.5E+2, 1.23e-2, 0.0, 12345678901234567890], "ccc": {"é": "x", "zz": null}}',
    '"\\u0001 \\" \\\\ \\n \\t \\b \\f \\r \\u001f \\u007f ✗ \\u2028"',
    "[]",
    "{}",
    '{"a": 1, "a": 2}',
    '{"日本": 1, "ab": 2, "b": 3, "aé": 4, "ae": true, "": false}',
    "3.0",
    '[{"k": [[], {}]}, "s"]',
]
# (n, int, text, timestamp, bool, money, weight, uuid, json) as SQLite may hold them
TRICKY_ROWS = [
    (1, 7, "a\tb\\c\nd\r\b\v\f end", "2026-12-03 16:17:43.648000", 1, 19.9, 1.5, "0" * 31 + "1", JSON_DOCS[0]),
    (2, None, "", "2026-12-03 16:17:43", 0, 50, None, None, JSON_DOCS[1]),
    (3, -3, None, "2026-12-03 16:17:43.000001", None, None, 0.001, None, JSON_DOCS[2]),
    (4, 5.0, "Рубашки 日本 ✗", "2026-12-03T16:17:43.5+02:00", "t", "7.5", 2, None, JSON_DOCS[3]),
    (5, 0, "\x01raw\x1f \\N \\.", "2026-12-03 16:17:43.100000", 1, 0.1, None, None, JSON_DOCS[4]),
    (6, 2**40, "x", "0999-01-01 00:00:00.000000", 0, 1234567890.12, 999.999, None, JSON_DOCS[5]),
    (7, 1, "\\", None, 1, -0.5, 0, None, JSON_DOCS[6]),
    (8, 2, "tab\there", "2026-12-03 00:00:00", 0, 0, None, None, JSON_DOCS[7]),
    (9, 3, "plain", "2026-12-03 00:00:00", 0, 0, None, None, None),
]
TRICKY_KINDS = ["int", "int", "text", "datetime", "bool", "decimal.2", "decimal.3", "uuid", "json"]
TRICKY_COLUMNS = ["n", "i", "t", "ts", "b", "money", "weight", "u", "j"]


@pytest.mark.postgres
def test_sqlite_rows_render_exactly_as_postgresql_writes_them(new_url, tmp_path):
    """The checksum's one rule: a row held by SQLite, rendered by ``_copy_format``, is the very
    line PostgreSQL's COPY writes for it once loaded (escapes, trimmed fractions and '+00',
    decimals to their places, jsonb's key order and numbers, UUIDs, NULLs); and that line,
    read back into SQLite, renders the same again."""
    import sqlite3

    import psycopg2

    from pfdb import _copy_format

    lite = sqlite3.connect(tmp_path / "tricky.db")
    schema = "n INTEGER, i INTEGER, t TEXT, ts DATETIME, b INTEGER, money DECIMAL(12, 2), "
    schema += "weight DECIMAL(10, 3), u VARCHAR(40), j TEXT"
    for table in ("source", "back"):
        lite.execute(f"CREATE TABLE {table} ({schema})")
    lite.executemany("INSERT INTO source VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", TRICKY_ROWS)
    render = _copy_format.lines_function(TRICKY_KINDS)
    lines = render(lite.execute("SELECT * FROM source ORDER BY n").fetchall())
    assert lines == [_copy_format.copy_line(TRICKY_KINDS, row) for row in TRICKY_ROWS]  # fast paths = slow path

    conn = psycopg2.connect(new_url("postgresql"))
    try:
        cur = conn.cursor()
        cur.execute("SET TIME ZONE 'UTC'")
        cur.execute(
            "CREATE TABLE tricky (n integer, i bigint, t text, ts timestamptz, b boolean, money numeric(12, 2), "
            "weight numeric(10, 3), u uuid, j jsonb)"
        )
        cur.copy_expert("COPY tricky FROM STDIN", io.StringIO("\n".join(lines) + "\n"))
        out = io.StringIO()
        cur.copy_expert("COPY (SELECT * FROM tricky ORDER BY n) TO STDOUT", out)
        assert out.getvalue().split("\n")[:-1] == lines
        for doc in JSON_DOCS:
            cur.execute("SELECT %s::jsonb::text", (doc,))
            assert _copy_format.jsonb_text(doc) == cur.fetchone()[0], doc
    finally:
        conn.close()
    assert lines[3].split("\t")[3] == "2026-12-03 14:17:43.5+00" and lines[0].split("\t")[5] == "19.90"

    readers = [_copy_format.from_copy_text(kind) for kind in TRICKY_KINDS]
    back = [tuple(f(v) for f, v in zip(readers, line.split("\t"), strict=True)) for line in lines]
    lite.executemany("INSERT INTO back VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", back)
    assert render(lite.execute("SELECT * FROM back ORDER BY n").fetchall()) == lines
    assert _copy_format.sum_lines(lines) == _copy_format.sum_lines(reversed(lines)) != _copy_format.sum_lines(lines[1:])
    lite.close()


@pytest.mark.postgres
def test_a_copy_that_postgresql_rejects_stops_its_thread_and_raises(new_url):
    """The COPY runs in a thread: its error reaches the caller, and the connection is free."""
    from pfdb.config import parse_database_url
    from pfdb.transfer import _CopyInThread, _Side

    url = new_url("postgresql", "target", migrated=True)
    migrations.init(url)
    pfdb.close_database()
    side = _Side(parse_database_url(url)).open()
    try:
        with pytest.raises(Exception, match="not-null constraint"):
            with _CopyInThread(side, "configuration", ["id"]) as writer:
                writer.put("1\n")  # no created_at: rejected
                for _ in range(50):
                    writer.put("2\n")  # the thread has failed: put raises instead of waiting forever
        side.conn.rollback()
        cur = side.cursor()
        cur.execute("SELECT COUNT(*) FROM configuration")
        assert cur.fetchone()[0] == 0
    finally:
        side.close()


def test_a_copy_that_cannot_connect_masks_every_secret(new_url):
    target = new_url("sqlite", "target")
    for source in (
        "postgresql://app:Url-Secr3t@127.0.0.1:1/shop",
        "postgresql://app@127.0.0.1:1/shop?password=Opt-Secr3t",
    ):
        with pytest.raises(CopyError) as failed:
            copy_database(source, target)
        assert "Secr3t" not in str(failed.value) and "***" in str(failed.value)


SCHEMA_QUERIES = {
    "columns": "SELECT table_name, ordinal_position, column_name, data_type, character_maximum_length, "
    "numeric_precision, numeric_scale, is_nullable, column_default FROM information_schema.columns "
    "WHERE table_schema = 'public' ORDER BY 1, 2",
    "indexes": "SELECT tablename, indexname, indexdef FROM pg_indexes WHERE schemaname = 'public' ORDER BY 1, 2",
    "constraints": "SELECT conrelid::regclass::text, conname, contype, pg_get_constraintdef(oid), condeferrable, "
    "condeferred, convalidated, conindid::regclass::text FROM pg_constraint "
    "WHERE connamespace = 'public'::regnamespace ORDER BY 1, 2",
    "sequences": "SELECT sequencename, data_type, start_value, increment_by, max_value, cycle FROM pg_sequences "
    "WHERE schemaname = 'public' ORDER BY 1",
    "owned sequences": "SELECT s.relname, t.relname, a.attname FROM pg_depend d "
    "JOIN pg_class s ON s.oid = d.objid AND s.relkind = 'S' JOIN pg_class t ON t.oid = d.refobjid "
    "JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid WHERE d.deptype = 'a' ORDER BY 1",
    "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1",
}


def pg_schema(url: str) -> dict[str, list[tuple]]:
    import psycopg2

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            schema = {}
            for name, sql in SCHEMA_QUERIES.items():
                cur.execute(sql)
                schema[name] = cur.fetchall()
            return schema
    finally:
        conn.close()


@pytest.mark.postgres
@pytest.mark.parametrize("source_backend", BACKENDS)
def test_a_postgresql_target_has_the_schema_of_a_migrated_database(new_url, source_backend, tmp_path, monkeypatch):
    """The copy drops indexes and foreign keys for the load and builds them again after it:
    the target ends with exactly the indexes, constraints and sequences pfdb's migrations make,
    whether it was new or replaced."""
    monkeypatch.chdir(tmp_path)  # the replaced target's backup goes to ./backups
    source, target, migrated = (
        new_url(source_backend, "source", migrated=True),
        new_url("postgresql", "target"),
        new_url("postgresql", migrated=True),
    )
    fill(source)
    migrations.init(migrated)
    pfdb.close_database()
    expected = pg_schema(migrated)
    assert expected["indexes"] and expected["owned sequences"]
    assert {c[2] for c in expected["constraints"]} >= {"p", "f"}
    copy_database(source, target)
    assert pg_schema(target) == expected
    copy_database(source, target, replace=True)
    assert pg_schema(target) == expected


MANGLE = {
    "sqlite": [
        "CREATE TRIGGER mangle AFTER INSERT ON products BEGIN "
        "UPDATE products SET name = name || ' (changed)' WHERE id = NEW.id AND NEW.sku = 'SKU-7'; END"
    ],
    "postgresql": [
        "CREATE FUNCTION mangle() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        "IF NEW.sku = 'SKU-7' THEN NEW.name := NEW.name || ' (changed)'; END IF; RETURN NEW; END $$",
        "CREATE TRIGGER mangle BEFORE INSERT ON products FOR EACH ROW EXECUTE FUNCTION mangle()",
    ],
}


@pytest.mark.parametrize("target_backend", BACKENDS)
def test_a_target_that_stores_something_else_fails_verification_naming_the_table(new_url, target_backend):
    """A target that changes one value as it is written (here a trigger) is caught by the
    checksums: the copy fails naming the table, and nothing is kept (on PostgreSQL the
    indexes and foreign keys dropped for the load are back too)."""
    source, target = new_url("sqlite", "source", migrated=True), new_url(target_backend, "target", migrated=True)
    fill(source)
    migrations.init(target)
    for statement in MANGLE[target_backend]:
        pfdb.db.execute_sql(statement)
    pfdb.close_database()
    before = pg_schema(target) if target_backend == "postgresql" else None
    with pytest.raises(CopyError, match="verification failed for table products: the source has 30 rows") as failed:
        copy_database(source, target)
    assert "nothing was kept" in str(failed.value)
    pfdb.init_database(target)
    assert Product.select().count() == 0 and Category.select().count() == 0
    pfdb.close_database()
    if target_backend == "postgresql":
        assert pg_schema(target) == before


@pytest.mark.parametrize("target_backend", BACKENDS)
def test_rows_the_target_refuses_fail_the_copy_with_one_line_and_nothing_kept(new_url, target_backend):
    """An image of a product that does not exist (SQLite does not check foreign keys unless
    asked): PostgreSQL refuses it when the foreign key is built after the load, SQLite at
    commit; either way one clear error, and the target as it was."""
    import sqlite3

    source, target = new_url("sqlite", "source", migrated=True), new_url(target_backend, "target")
    fill(source)
    lite = sqlite3.connect(source.removeprefix("sqlite:///"))
    lite.execute(
        "INSERT INTO product_images (product_id, url, content_hash, position, is_primary, created_at, updated_at) "
        "VALUES (9999, 'https://img.example.com/orphan.jpg', 'x', 0, 0, '2026-12-03 00:00:00', '2026-12-03 00:00:00')"
    )
    lite.commit()
    lite.close()
    with pytest.raises(CopyError, match="(?i)the copy failed: .*foreign key") as failed:
        copy_database(source, target)
    assert "nothing was kept" in str(failed.value) and "\n" not in str(failed.value)
    if target_backend == "postgresql":
        pfdb.init_database(target)
        assert Product.select().count() == 0 and ProductImage.select().count() == 0
        pfdb.close_database()
    else:
        assert not Path(target.removeprefix("sqlite:///")).exists()
