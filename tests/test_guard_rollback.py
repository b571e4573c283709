"""A rollback that drops tables or columns needs an explicit yes, and takes a backup first (issue 10, part 1).

``pfdb rollback`` with only 001 applied, and ``rollback zero``, used to drop every table
with no question and no backup, even with no terminal.
"""

from __future__ import annotations

import io
import shutil
import sqlite3

import pytest

import pfdb
from pfdb import Product
from pfdb.errors import DestructiveRollbackError
from pfdb.maintenance import check_backup
from pfdb.migrations import migrate, rollback, rollback_plan, status

INDEX_ONLY = """
def migrate(migrator, database, *, fake=False):
    migrator.add_index("products", "brand", "status")


def rollback(migrator, database, *, fake=False):
    migrator.drop_index("products", "brand", "status")
"""

ADD_NOTES = """
import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("products", notes=pw.TextField(null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("products", "notes")
"""

RAW_SQL = """
def migrate(migrator, database, *, fake=False):
    migrator.sql("CREATE TABLE audit_marks (id INTEGER PRIMARY KEY)")


def rollback(migrator, database, *, fake=False):
    migrator.sql("drop   table audit_marks")
"""

RUNS_CODE = """
def forget(database):
    database.execute_sql("DELETE FROM products")


def migrate(migrator, database, *, fake=False):
    pass


def rollback(migrator, database, *, fake=False):
    migrator.run(forget, database)
"""


@pytest.fixture
def mdir(tmp_path, monkeypatch):
    """A migrations folder of the test's own, starting with the real 001_initial; backups land in tmp_path."""
    from pfdb.migrations import migrations_dir

    folder = tmp_path / "migrations"
    folder.mkdir()
    (folder / "001_initial.py").write_bytes((migrations_dir() / "001_initial.py").read_bytes())
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(folder))
    monkeypatch.chdir(tmp_path)  # PostgreSQL backups go to ./backups
    return folder


@pytest.fixture(scope="module")
def shop_templates(tmp_path_factory):
    """backend -> a database at 001_initial holding one product, made once per module.

    Each test gets a copy (a file copy, or CREATE DATABASE … TEMPLATE): migrating 001 cost
    each PostgreSQL test about 0.3 s more than copying the result.
    """
    from conftest import pg_url

    from pfdb.migrations import migrations_dir

    folder = tmp_path_factory.mktemp("shop-template")
    (folder / "migrations").mkdir()
    (folder / "migrations" / "001_initial.py").write_bytes((migrations_dir() / "001_initial.py").read_bytes())
    made: dict[str, str] = {}  # backend -> the template: a SQLite path, or a database name
    servers = []

    def template(backend: str, request) -> str:
        if backend not in made:
            if backend == "sqlite":
                made[backend] = str(folder / "shop.db")
                url = f"sqlite:///{made[backend]}"
            else:
                servers.append(request.getfixturevalue("pg_server"))
                made[backend] = servers[0].create()
                url = pg_url(made[backend])
            with pytest.MonkeyPatch.context() as patch:
                patch.setenv("PFDB_MIGRATIONS_DIR", str(folder / "migrations"))
                pfdb.init_database(url)
                migrate(backup=False)
                Product.create(sku="KEEP", name="kept", price="9.99")
                pfdb.close_database()  # the last connection checkpoints SQLite's WAL; a template has no users
        return made[backend]

    yield template
    for server in servers:
        server.release(made["postgresql"])


@pytest.fixture
def shop(backend, tmp_path, mdir, shop_templates, request):
    """A migrated database (001_initial) holding one product: a copy of the module's template."""
    if backend == "sqlite":
        path = tmp_path / "pfdb.db"
        shutil.copyfile(shop_templates(backend, request), path)
        url = f"sqlite:///{path}"
    else:
        from conftest import pg_url

        server = request.getfixturevalue("pg_server")
        name = server.create(template=shop_templates(backend, request))
        request.addfinalizer(lambda: (pfdb.close_database(), server.release(name)))
        url = pg_url(name)
    pfdb.init_database(url)
    return url


def tables() -> set[str]:
    return set(pfdb.db.get_tables())


def applied() -> list[str]:
    return [m.name for m in status().applied]


def backup_products(path) -> int | None:
    """Products in a SQLite backup; None for a PostgreSQL dump (checked with check_backup instead)."""
    if path.suffix != ".db":
        assert check_backup(path) is not None
        return None
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT count(*) FROM products").fetchone()[0]


# -- the Python API ---------------------------------------------------------------------------------
@pytest.mark.parametrize("target", [None, "zero"])
def test_rolling_back_001_is_refused_without_destructive_ok(shop, target):
    with pytest.raises(DestructiveRollbackError) as caught:
        rollback(target)
    error = caught.value
    assert error.exit_code == 2 and error.migration == "001_initial"
    assert "table products" in error.drops and "table categories" in error.drops and len(error.drops) == 9
    assert str(error).startswith("rolling back 001_initial would drop table system_logs")
    assert "destructive_ok=True" in str(error) and "\n" not in str(error)
    assert "products" in tables() and applied() == ["001_initial"]
    assert Product.select().count() == 1


def test_a_confirmed_destructive_rollback_takes_a_backup_first(shop, tmp_path):
    plan = rollback_plan("zero")
    assert plan.destructive and plan.undo == ("001_initial",) and plan.current is None
    result = rollback("zero", destructive_ok=True)
    assert result.rolled_back == ("001_initial",) and result.current is None
    assert "table products" in result.drops
    assert result.backup is not None and result.backup.path.exists()
    assert "pre-rollback" in result.backup.path.name and result.backup.migration == "001_initial"
    assert tables() <= {"migratehistory"}
    assert backup_products(result.backup.path) in (1, None)


def test_backup_false_skips_the_backup(shop, tmp_path):
    result = rollback(destructive_ok=True, backup=False)
    assert result.backup is None and result.rolled_back == ("001_initial",)
    assert not (tmp_path / "backups").exists() or not list((tmp_path / "backups").iterdir())


def test_dropping_a_column_is_destructive_adding_an_index_back_is_not(shop, mdir):
    (mdir / "002_add_notes.py").write_text(ADD_NOTES)
    (mdir / "003_index.py").write_text(INDEX_ONLY)
    migrate(backup=False)
    plan = rollback_plan("001")
    assert plan.undo == ("003_index", "002_add_notes")
    assert plan.drops == {"002_add_notes": ("column products.notes",)}

    result = rollback()  # 003 only drops an index: no confirmation, still a backup
    assert result.rolled_back == ("003_index",) and result.drops == () and result.backup is not None
    with pytest.raises(DestructiveRollbackError, match="002_add_notes would drop column products.notes"):
        rollback("001")
    assert applied() == ["001_initial", "002_add_notes"]
    assert "notes" in {c.name for c in pfdb.db.get_columns("products")}
    assert rollback("001", destructive_ok=True, backup=False).rolled_back == ("002_add_notes",)


@pytest.mark.parametrize(
    "source, shown",
    [(RAW_SQL, "SQL: drop table audit_marks"), (RUNS_CODE, "whatever forget run by migrator.run() does")],
)
def test_raw_sql_that_drops_and_python_code_count_as_destructive(shop, mdir, source, shown):
    (mdir / "002_other.py").write_text(source)
    migrate(backup=False)
    with pytest.raises(DestructiveRollbackError) as caught:
        rollback()
    assert caught.value.drops == (shown,)
    assert applied() == ["001_initial", "002_other"] and Product.select().count() == 1


# -- the CLI ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [(), ("zero",), ("--lock-timeout", "5")])
def test_cli_refuses_a_destructive_rollback_without_a_terminal(shop, run_cli, args):
    code, out, err = run_cli("--database-url", shop, "rollback", *args)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "001_initial would drop table system_logs" in lines[0] and "add --yes" in lines[0]
    assert "products" in tables() and applied() == ["001_initial"] and Product.select().count() == 1


def test_cli_yes_rolls_back_and_prints_the_backup(shop, run_cli):
    code, out, err = run_cli("--database-url", shop, "rollback", "--yes")
    assert code == 0, err
    backup_line = next(line for line in out.splitlines() if line.startswith("backup: "))
    assert "pre-rollback" in backup_line and "rolled back: 001_initial" in out
    from pathlib import Path

    assert backup_products(Path(backup_line.removeprefix("backup: "))) in (1, None)
    pfdb.init_database(shop)
    assert "products" not in tables()


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("answer, code", [("n\n", 1), ("\n", 1), ("yes\n", 0)])
def test_cli_asks_on_a_terminal_showing_what_is_dropped(shop, run_cli, monkeypatch, answer, code):
    monkeypatch.setattr("sys.stdin", _Terminal(answer))
    result, out, err = run_cli("--database-url", shop, "rollback")
    assert result == code, err
    assert "Rolling back 001_initial drops, with their data:" in out and "  table products" in out
    pfdb.init_database(shop)
    if code:
        assert "cancelled; nothing was changed" in out and Product.select().count() == 1
    else:
        assert "backup: " in out and "products" not in tables()


def test_cli_non_destructive_rollback_needs_no_yes(shop, mdir, run_cli):
    (mdir / "002_index.py").write_text(INDEX_ONLY)
    migrate(backup=False)
    code, out, err = run_cli("--database-url", shop, "rollback")
    assert code == 0, err
    assert "rolled back: 002_index" in out and "backup: " in out


def test_nothing_to_undo_takes_no_backup(shop, tmp_path):
    result = rollback("001")
    assert result.rolled_back == () and result.current == "001_initial" and result.backup is None
    assert not (tmp_path / "backups").exists()
