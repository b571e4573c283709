"""docs/blue-green.md's example, run: a column renamed in three releases, the old release's queries
working between every step; and expand/contract on both backends (migrate stops before a contract
step, --contract applies it, status shows the phase, lint accepts its drops)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

import pfdb
from pfdb import migrations
from pfdb.migration_lint import lint

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "blue-green.md"
BLOCK = re.compile(r"^```python migration=(?P<name>\w+)\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def documented() -> dict[str, str]:
    return {m["name"]: m["body"] for m in BLOCK.finditer(PAGE.read_text(encoding="utf-8"))}


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """pfdb's migrations in a folder of the test's own: each release adds its migration there."""
    target = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", target, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(target))
    return target


def release(folder: Path, name: str) -> None:
    (folder / f"{name}.py").write_text(documented()[name], encoding="utf-8")


def sql(statement: str, params: tuple = ()) -> list[tuple]:
    with pfdb.db_session_scope() as database:
        statement = statement.replace("?", database.param)
        cursor = database.execute_sql(statement, params)
        return cursor.fetchall() if cursor.description else []


# What each release's code does: the old release keeps doing it while the next one deploys.
def release_0_and_1_write(sku: str, text: str) -> None:
    pfdb.Product.create(sku=sku, name=sku, description=text)


def release_2_writes(sku: str, text: str) -> None:
    with pfdb.db_session_scope():
        pfdb.Product.create(sku=sku, name=sku, description=text)
        sql("UPDATE products SET body_html = ? WHERE sku = ?", (text, sku))


def release_2_and_3_read(sku: str) -> str | None:
    return sql("SELECT body_html FROM products WHERE sku = ?", (sku,))[0][0]


def test_the_page_holds_the_three_migrations():
    names = list(documented())
    assert names == ["005_add_body_html", "006_backfill_body_html", "007_drop_description"]
    assert "CONTRACT = True" in documented()["007_drop_description"]


@pytest.mark.fresh_database
def test_a_column_renamed_in_three_releases(fresh_database_url, folder):
    pfdb.init_database(fresh_database_url, migration_backup_before_upgrade=False)
    release_0_and_1_write("OLD-1", "<p>before</p>")

    # Release 1: add and backfill. Release 0 keeps writing description meanwhile.
    release(folder, "005_add_body_html")
    assert lint().ok and pfdb.rehearse_migrations().ok
    assert migrations.migrate().applied == ("005_add_body_html",)
    release_0_and_1_write("OLD-2", "<p>written by release 1</p>")  # after the backfill: body_html empty
    assert release_2_and_3_read("OLD-1") == "<p>before</p>"
    assert release_2_and_3_read("OLD-2") is None

    # Release 2: writes both; its backfill catches what release 1 wrote alone.
    release(folder, "006_backfill_body_html")
    assert lint().ok and pfdb.rehearse_migrations().ok
    assert migrations.migrate().applied == ("006_backfill_body_html",)
    assert release_2_and_3_read("OLD-2") == "<p>written by release 1</p>"
    release_0_and_1_write("OLD-3", "<p>release 1, still running</p>")
    release_2_writes("NEW-2", "<p>release 2</p>")

    # Release 3: the contract step waits while release 2 instances run.
    release(folder, "007_drop_description")
    result = lint()
    assert result.ok and [(f.key, bool(f.acknowledged)) for f in result.findings] == [
        ("drop_column products.description", True)
    ]
    assert pfdb.rehearse_migrations().migrations == ()  # nothing before the contract step
    rehearsal = pfdb.rehearse_migrations(contract=True)
    assert rehearsal.ok and rehearsal.migrations == ("007_drop_description",), rehearsal.as_dict()
    waiting = migrations.migrate()
    assert waiting.applied == () and waiting.contract_waiting == ("007_drop_description",)
    assert migrations.status().phase == "expand applied, 1 contract step waiting (pfdb migrate --contract)"
    release_2_writes("NEW-3", "<p>release 2, still running</p>")  # description is still there
    assert migrations.migrate(contract=True).applied == ("007_drop_description",)
    assert migrations.status().phase == "up to date"
    columns = {c.name for c in pfdb.db.get_columns("products")}
    assert "body_html" in columns and "description" not in columns
    assert release_2_and_3_read("NEW-3") == "<p>release 2, still running</p>"
    assert release_2_and_3_read("NEW-2") == "<p>release 2</p>"
    assert release_2_and_3_read("OLD-1") == "<p>before</p>"
    # What release 1 wrote after release 2's backfill is the case the docs tell to avoid:
    # release 2 must not start while release 1 writes. Here it did, and the row kept nothing.
    assert release_2_and_3_read("OLD-3") is None

    # The contract step rolls back with its values.
    migrations.rollback(destructive_ok=True, backup=False)
    assert sql("SELECT description FROM products WHERE sku = 'NEW-3'")[0][0] == "<p>release 2, still running</p>"


CONTRACT_STEP = """
CONTRACT = True


def migrate(migrator, database, *, fake=False):
    migrator.remove_fields("products", "description")


def rollback(migrator, database, *, fake=False):
    import peewee as pw

    migrator.add_fields("products", description=pw.TextField(null=True))
"""

EXPAND_STEP = """
import peewee as pw


def migrate(migrator, database, *, fake=False):
    migrator.add_fields("categories", note=pw.TextField(null=True))


def rollback(migrator, database, *, fake=False):
    migrator.remove_fields("categories", "note")
"""


@pytest.mark.fresh_database
def test_migrate_stops_before_a_contract_step_and_contract_applies_the_rest(fresh_database_url, folder, run_cli):
    (folder / "900_expand.py").write_text(EXPAND_STEP, encoding="utf-8")
    (folder / "901_contract.py").write_text(CONTRACT_STEP, encoding="utf-8")
    (folder / "902_expand_again.py").write_text(EXPAND_STEP.replace("note", "note2"), encoding="utf-8")
    pfdb.init_database(fresh_database_url)
    assert migrations.is_contract_step("901_contract") and not migrations.is_contract_step("900_expand")
    state = migrations.status()
    assert state.contract_pending == ("901_contract",)
    assert state.phase == "1 expand step pending, then 1 contract step"
    pfdb.close_database()

    env = {"MIGRATION_BACKUP_BEFORE_UPGRADE": "false"}
    code, out, err = run_cli("--database-url", fresh_database_url, "migrate", "--dry-run", env=env)
    assert code == 0 and "1 migration(s) would be applied (900_expand)" in out, err
    code, out, err = run_cli("--database-url", fresh_database_url, "migrate", env=env)
    assert code == 0, err
    assert "applied: 900_expand" in out
    assert "stopped before contract step 901_contract (2 migration(s) waiting): run pfdb migrate --contract" in out
    code, out, _ = run_cli("--database-url", fresh_database_url, "migrate", "--json", env=env)
    data = json.loads(out)
    assert code == 0 and data["applied"] == [] and data["contract_waiting"] == ["901_contract", "902_expand_again"]
    code, out, _ = run_cli("--database-url", fresh_database_url, "status", "--no-drift")
    assert "[ ] 901_contract  (pending, contract step)" in out
    assert "phase: expand applied, 1 contract step waiting (pfdb migrate --contract)" in out
    code, out, _ = run_cli("--database-url", fresh_database_url, "status", "--json", "--no-drift")
    assert json.loads(out)["contract_pending"] == ["901_contract"]
    code, out, err = run_cli("--database-url", fresh_database_url, "migrate", "--contract", env=env)
    assert code == 0 and "applied: 901_contract" in out and "applied: 902_expand_again" in out, err
    assert "stopped before" not in out
    code, out, _ = run_cli("--database-url", fresh_database_url, "status", "--no-drift")
    assert "phase: up to date" in out


def test_init_of_an_empty_database_applies_contract_steps_too(empty_url, folder):
    (folder / "900_contract.py").write_text(CONTRACT_STEP, encoding="utf-8")
    result = migrations.init(empty_url)
    assert result.applied[-1] == "900_contract" and result.pending == ()


def test_lint_accepts_drops_in_a_contract_step_only(db, folder):
    body = 'def migrate(migrator, database, *, fake=False):\n    migrator.remove_fields("products", "description")\n'
    body += '    migrator.rename_field("products", "name", "title")\n'
    (folder / "900_drop.py").write_text(body, encoding="utf-8")
    unsafe = {f.key for f in lint().problems}
    assert unsafe == {"drop_column products.description", "rename_column products.name"}
    (folder / "900_drop.py").write_text("CONTRACT = True\n\n" + body, encoding="utf-8")
    result = lint()
    assert {f.key for f in result.problems} == {"rename_column products.name"}  # a rename still breaks
    dropped = next(f for f in result.findings if f.key == "drop_column products.description")
    assert dropped.acknowledged and "contract step" in dropped.acknowledged
