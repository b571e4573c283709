"""``rollback --fake``: the undo of ``migrate --fake``, removing history rows and running no rollback code."""

from __future__ import annotations

import json

import pytest

import pfdb
from pfdb import migrations
from pfdb.errors import MigrationError
from pfdb.models import Product

SHIPPED = tuple(migrations.migration_names())


def applied() -> list[str]:
    return [m.name for m in migrations.status().applied]


@pytest.fixture
def fresh(empty_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # PostgreSQL backups would go to ./backups
    monkeypatch.setenv("MIGRATION_BACKUP_BEFORE_UPGRADE", "true")
    pfdb.init_database(empty_url)
    return empty_url


def test_fake_rollback_undoes_a_fake_migrate_that_a_real_rollback_cannot(fresh):
    assert migrations.migrate(fake=True).applied == SHIPPED
    assert "products" not in pfdb.db.get_tables()
    with pytest.raises(MigrationError) as failed:  # the bug this is for: rollback code finds nothing to undo
        migrations.rollback("zero", destructive_ok=True, backup=False)
    assert "\n" not in str(failed.value)  # one line, also for psycopg2's message
    left = applied()  # SQLite undid the steps that touch no table (003, 002) before 001 failed
    assert left and left[0] == "001_initial"
    result = migrations.rollback("zero", fake=True)
    assert result.rolled_back == tuple(reversed(left)) and result.current is None
    assert result.fake and result.backup is None and result.drops == ()
    assert applied() == []
    assert migrations.migrate().applied == SHIPPED  # now for real
    assert "products" in pfdb.db.get_tables()


def test_fake_rollback_keeps_tables_and_rows_and_takes_no_backup(fresh, tmp_path):
    migrations.migrate()
    Product.create(sku="KEEP-1", name="kept")
    result = migrations.rollback("001", fake=True)  # backup defaults to the setting, which is on
    assert result.rolled_back == SHIPPED[:0:-1] and result.current == "001_initial" and result.backup is None
    assert applied() == ["001_initial"] and Product.get().sku == "KEEP-1"
    assert "categories_parent_id_name" in {i.name for i in pfdb.db.get_indexes("categories")}  # 002 not undone
    assert not (tmp_path / "backups").exists()
    assert migrations.migrate(fake=True).applied == SHIPPED[1:]
    assert migrations.status().up_to_date


def test_fake_rollback_of_a_migration_whose_file_is_gone(fresh):
    migrations.migrate(fake=True)
    with pfdb.db_session_scope():
        pfdb.db.execute_sql(
            f"INSERT INTO migratehistory (name, migrated_at) VALUES ('999_gone', {pfdb.db.param})",
            (pfdb.models.utcnow().replace(tzinfo=None),),
        )
    assert migrations.rollback(fake=True).rolled_back == ("999_gone",)
    assert applied() == list(SHIPPED)


def test_fake_rollback_errors(fresh):
    with pytest.raises(MigrationError, match="nothing to roll back"):
        migrations.rollback(fake=True)
    migrations.migrate("001", fake=True)
    with pytest.raises(MigrationError, match="002_unique_category_names is not applied"):
        migrations.rollback("002", fake=True)
    with pytest.raises(MigrationError, match="unknown migration"):
        migrations.rollback("nonsense", fake=True)
    assert applied() == ["001_initial"]


def test_cli_rollback_fake_needs_no_yes_and_no_terminal(fresh, run_cli, tmp_path):
    assert run_cli("--database-url", fresh, "migrate")[0] == 0
    code, out, err = run_cli("--database-url", fresh, "rollback", "zero", "--fake", "--json", stdin="")
    assert code == 0, err
    data = json.loads(out)
    assert out.count("\n") == 1 and data["fake"] is True and data["backup"] is None
    assert data["rolled_back"] == list(SHIPPED[::-1]) and data["current"] is None and data["drops"] == []
    assert not (tmp_path / "backups").exists()
    code, out, err = run_cli("--database-url", fresh, "migrate", "--fake")
    assert code == 0, err
    code, out, err = run_cli("--database-url", fresh, "rollback", "--fake", stdin="")
    assert code == 0 and f"rolled back: {SHIPPED[-1]} (fake: history only" in out, err
    code, out, err = run_cli("--database-url", fresh, "rollback", "zero", "--fake", "--yes")
    assert code == 0 and out.count("rolled back: ") == len(SHIPPED) - 1
    code, out, err = run_cli("--database-url", fresh, "rollback", "--fake")
    assert code == 1 and "nothing to roll back" in err
