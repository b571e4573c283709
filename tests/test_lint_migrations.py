"""pfdb lint: one small migration per rule, on both backends, written into a copy of pfdb's migrations.

The migration under test is the only pending one (004); lint never runs it, so raw SQL of
the other backend's dialect is fine here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import pfdb
from pfdb.errors import MigrationError
from pfdb.migration_lint import lint

ROOT = Path(__file__).resolve().parent.parent
PG = "postgresql"
BOTH = ("sqlite", PG)

HEADER = "import peewee as pw\n\n\ndef migrate(migrator, database, *, fake=False):\n"


@pytest.fixture
def folder(tmp_path, monkeypatch):
    migrations = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", migrations, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(migrations))
    return migrations


def write(folder: Path, body: str, extra: str = "", name: str = "004_change") -> None:
    lines = "".join(f"    {line}\n" for line in body.strip().splitlines())
    (folder / f"{name}.py").write_text(extra + HEADER + lines, encoding="utf-8")


# (migration body, the key lint must report, the backends where it applies)
CASES = {
    "drop_table": ('migrator.remove_model("system_logs")', "drop_table system_logs", BOTH),
    "drop_table_sql": ('migrator.sql("DROP TABLE IF EXISTS icons")', "drop_table icons", BOTH),
    "drop_column": ('migrator.remove_fields("products", "description")', "drop_column products.description", BOTH),
    "drop_column_sql": (
        'migrator.sql(\'ALTER TABLE "products" DROP COLUMN "description"\')',
        "drop_column products.description",
        BOTH,
    ),
    "rename_table": ('migrator.rename_table("icons", "pictograms")', "rename_table icons", BOTH),
    "rename_column": ('migrator.rename_field("products", "name", "title")', "rename_column products.name", BOTH),
    "rename_column_sql": (
        'migrator.sql("ALTER TABLE products RENAME COLUMN name TO title")',
        "rename_column products.name",
        BOTH,
    ),
    "add_not_null_column": (
        'migrator.add_fields("products", weight=pw.IntegerField(), allow_not_null=True)',
        "add_not_null_column products.weight",
        BOTH,
    ),
    "add_not_null_column_sql": (
        'migrator.sql("ALTER TABLE products ADD COLUMN weight integer NOT NULL")',
        "add_not_null_column products.weight",
        BOTH,
    ),
    "change_column_type": (
        'migrator.change_fields("configuration", value=pw.CharField(max_length=50, null=True))',
        "change_column_type configuration.value",
        BOTH,
    ),
    "change_column_type_sql": (
        'migrator.sql("ALTER TABLE products ALTER COLUMN name TYPE text")',
        "change_column_type products.name",
        BOTH,
    ),
    "add_index": ('migrator.add_index("products", "name")', "add_index products", (PG,)),
    "add_index_sql": ('migrator.sql("CREATE UNIQUE INDEX p_name ON products (name)")', "add_index products", (PG,)),
    "add_unique_constraint": (
        'migrator.sql("ALTER TABLE products ADD CONSTRAINT p_name UNIQUE (name)")',
        "add_unique_constraint products",
        (PG,),
    ),
    "add_foreign_key": (
        'migrator.sql("ALTER TABLE products ADD CONSTRAINT p_cat FOREIGN KEY (category_id) REFERENCES categories (id)")',
        "add_foreign_key products",
        (PG,),
    ),
    "set_not_null": ('migrator.add_not_null("products", "description")', "set_not_null products.description", BOTH),
    "set_not_null_sql": (
        'migrator.sql("ALTER TABLE products ALTER COLUMN description SET NOT NULL")',
        "set_not_null products.description",
        BOTH,
    ),
    "add_not_null_column_with_default": (  # peewee-migrate adds it nullable, backfills, then SET NOT NULL
        'migrator.add_fields("products", weight=pw.IntegerField(default=0))',
        "set_not_null products.weight",
        BOTH,
    ),
    "add_unique_field": (
        'migrator.add_fields("products", ean=pw.CharField(null=True, unique=True))',
        "add_index products",
        (PG,),
    ),
    "second_statement_of_sql": (
        'migrator.sql("UPDATE products SET name = name; ALTER TABLE products DROP COLUMN name")',
        "drop_column products.name",
        BOTH,
    ),
    "python_code": ("migrator.run(print, 'hello')", "python_code *", BOTH),
}


@pytest.mark.parametrize("case", list(CASES))
def test_each_rule_is_found_where_it_applies(db, backend, folder, case):
    body, key, backends = CASES[case]
    write(folder, body)
    result = lint()
    assert result.checked == ("004_change",)
    keys = [f.key for f in result.findings]
    if backend in backends:
        assert key in keys and not result.ok
        finding = next(f for f in result.findings if f.key == key)
        assert finding.migration == "004_change" and finding.why and finding.recipe and finding.operation
        assert finding.acknowledged is None
    else:
        assert key not in keys


SAFE = {  # the safe recipes pass
    "concurrent index": 'migrator.sql("CREATE INDEX CONCURRENTLY p_name ON products (name)")',
    "unique using index": 'migrator.sql("ALTER TABLE products ADD CONSTRAINT p_name UNIQUE USING INDEX p_name")',
    "foreign key not valid": 'migrator.sql("ALTER TABLE products ADD CONSTRAINT p_cat FOREIGN KEY (category_id) '
    'REFERENCES categories (id) NOT VALID")',
    "validate": 'migrator.sql("ALTER TABLE products VALIDATE CONSTRAINT p_cat")',
    "nullable column": 'migrator.add_fields("products", weight=pw.IntegerField(null=True))',
    "column with a default": 'migrator.sql("ALTER TABLE products ADD COLUMN weight integer NOT NULL DEFAULT 0")',
    "new table with its index": "class Box(pw.Model):\n    name = pw.CharField()\n"
    "    class Meta:\n        table_name = 'boxes'\n"
    "migrator.create_model(Box)\nmigrator.add_index('boxes', 'name')\nmigrator.sql('CREATE INDEX b ON boxes (name)')",
}


@pytest.mark.parametrize("case", list(SAFE))
def test_safe_recipes_pass(db, folder, case):
    write(folder, SAFE[case])
    result = lint()
    assert result.ok and result.findings == (), result.as_dict()


def test_sqlite_rebuild_of_a_large_table(db, backend, folder):
    pfdb.models.Configuration.create(key="k", value="v")
    write(folder, 'migrator.change_fields("configuration", value=pw.CharField(max_length=50, null=True))')
    large = [f.key for f in lint(large_rows=1).findings]
    small = [f.key for f in lint(large_rows=2).findings]
    assert "change_column_type configuration.value" in large and "change_column_type configuration.value" in small
    assert ("sqlite_rebuild configuration" in large) == (backend == "sqlite")
    assert "sqlite_rebuild configuration" not in small


def test_an_acknowledged_finding_passes_with_its_reason(db, folder):
    ack = 'LINT_ACKNOWLEDGED = {"drop_column products.desc*": "unused since 1.4"}\n'
    write(folder, 'migrator.remove_fields("products", "description")\nmigrator.remove_model("icons")', extra=ack)
    result = lint()
    by_key = {f.key: f for f in result.findings}
    assert by_key["drop_column products.description"].acknowledged == "unused since 1.4"
    assert by_key["drop_table icons"].acknowledged is None and not result.ok
    assert [f.key for f in result.problems] == ["drop_table icons"]
    write(folder, 'migrator.remove_fields("products", "description")', extra=ack)
    assert lint().ok and len(lint().findings) == 1


@pytest.mark.parametrize(
    "ack",
    ['["drop_column products.notes"]', '{"drop_column products.notes": ""}', '{"drop_colum products.notes": "x"}'],
)
def test_a_malformed_acknowledgement_is_a_clear_error(db, folder, ack):
    write(folder, "pass", extra=f"LINT_ACKNOWLEDGED = {ack}\n")
    with pytest.raises(MigrationError, match="LINT_ACKNOWLEDGED in migration 004_change"):
        lint()


def test_the_shipped_migrations_pass_or_are_acknowledged(db, backend):
    result = lint(["001", "002", "003", "004"])
    assert result.checked == (
        "001_initial",
        "002_unique_category_names",
        "003_postgres_jsonb_timestamptz",
        "004_tenant_registry",
    )
    assert result.ok, [f.key for f in result.problems]
    assert all(f.acknowledged for f in result.findings)
    assert bool(result.findings) == (backend == PG)  # 002's index and 003's types are PostgreSQL's


def test_cli_exit_codes_and_json(run_cli, database_url, folder):
    code, out, _ = run_cli("--database-url", database_url, "lint")
    assert code == 0 and "checked no pending migration: safe" in out
    write(folder, 'migrator.remove_fields("products", "description")')
    code, out, _ = run_cli("--database-url", database_url, "lint")
    assert code == 1 and "004_change: drop_column products.description (UNSAFE)" in out and "safe recipe:" in out
    code, out, _ = run_cli("--database-url", database_url, "lint", "--json")
    data = json.loads(out)
    assert code == 1 and len(out.strip().splitlines()) == 1 and data["ok"] is False
    assert data["findings"][0]["key"] == "drop_column products.description"
    code, out, _ = run_cli("--database-url", database_url, "lint", "--only", "002,003", "--json")
    assert code == 0 and json.loads(out)["checked"] == ["002_unique_category_names", "003_postgres_jsonb_timestamptz"]
    code, _, err = run_cli("--database-url", database_url, "lint", "--only", "9")
    assert code == 1 and "unknown migration '9'" in err
