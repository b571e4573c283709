"""The tenant commands and the global --tenant on both backends: the mapping, the output, the exit codes."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest
from feeds_samples import PFDB_CSV, write

import pfdb
from pfdb import Product, tenants

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def url(database_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # backups/ lands here
    return database_url  # on PostgreSQL the shared database: its reset drops the tenants' schemas


def test_tenant_create_list_and_every_command_with_tenant(run_cli, url, tmp_path, backend, monkeypatch):
    for name in ("acme", "beta"):
        code, out, err = run_cli("--database-url", url, "tenant", "create", name)
        assert code == 0 and f"created tenant {name}" in out, err
    code, out, _ = run_cli("--database-url", url, "tenant", "list")
    assert code == 0 and [line.split()[0] for line in out.splitlines()] == ["acme", "beta"]
    feed = write(tmp_path, "feed.csv", PFDB_CSV)
    code, out, err = run_cli("--database-url", url, "--tenant", "acme", "import", str(feed))
    assert code == 0, err
    code, out, err = run_cli("--database-url", url, "export", str(tmp_path / "main.csv"), "--tenant", "acme")
    assert code == 0, err
    with open(tmp_path / "main.csv", encoding="utf-8", newline="") as handle:
        assert sorted(row["sku"] for row in csv.DictReader(handle)) == ["P-1", "P-2", "P-3"]  # acme's three
    code, out, err = run_cli("--database-url", url, "--tenant", "beta", "info", "--json", env={})
    assert code == 0 and json.loads(out)["tables"]["products"] == 0
    code, out, err = run_cli("--database-url", url, "info", "--json", env={"PFDB_TENANT": "acme"})
    assert code == 0 and json.loads(out)["tables"]["products"] == 3, err
    monkeypatch.delenv("PFDB_TENANT")
    code, out, err = run_cli("--database-url", url, "--tenant", "acme", "health", "--json")
    assert code == 0 and json.loads(out)["migrations"]["current"] == "004_tenant_registry", err
    code, out, err = run_cli("--database-url", url, "--tenant", "acme", "status", "--json")
    assert code == 0 and json.loads(out)["pending"] == [], err
    code, out, err = run_cli("--database-url", url, "--tenant", "acme", "migrate")
    assert code == 0 and "up to date" in out, err
    # backup and restore one tenant
    code, out, err = run_cli("--database-url", url, "--tenant", "acme", "backup", "--json")
    assert code == 0, err
    path = Path(json.loads(out)["path"])
    assert path.name.startswith("tenant-acme-")
    code, out, err = run_cli("--database-url", url, "--tenant", "beta", "restore", str(path), "--yes")
    if backend == "postgresql":  # a backup of another tenant's schema is refused: it would write there
        assert code == 1 and "not a backup of this tenant" in err
    pfdb.init_database(url)
    with pfdb.tenant("acme"):
        Product.delete().execute()
    code, out, err = run_cli("--database-url", url, "--tenant", "acme", "restore", str(path), "--yes")
    assert code == 0, err
    with pfdb.tenant("acme"):
        assert Product.select().count() == 3
    assert Product.select().count() == 0  # the main database never saw any of it
    if backend == "postgresql":
        code, _, err = run_cli("--database-url", url, "restore", str(path), "--yes")
        assert code == 1 and "a tenant's backup, not the main database's" in err


def test_tenant_names_and_missing_tenants_are_clear_errors(run_cli, url):
    code, out, err = run_cli("--database-url", url, "--tenant", "acme; drop schema public", "info")
    assert code == 2 and out == "" and "tenant name 'acme; drop schema public' is not valid" in err
    code, _, err = run_cli("--database-url", url, "tenant", "create", "pg_catalog")
    assert code == 2 and "reserved" in err
    code, _, err = run_cli("--database-url", url, "--tenant", "ghost", "info")
    assert code == 1 and "there is no tenant named 'ghost'" in err and "pfdb tenant create ghost" in err
    code, _, err = run_cli("--database-url", url, "tenant", "frobnicate", "x")
    assert code == 2 and "unknown action" in err
    code, _, err = run_cli("--database-url", url, "tenant", "drop")
    assert code == 2 and "needs the tenant's NAME" in err
    code, _, err = run_cli("--database-url", url, "tenant", "list", "--yes")
    assert code == 2 and "takes no --yes" in err
    code, _, err = run_cli("--database-url", url, "--tenant", "acme", "init")
    assert code == 2 and "main database" in err
    code, _, err = run_cli("--database-url", url, "migrate", "--parallel", "2")
    assert code == 2 and "--all-tenants" in err
    code, _, err = run_cli("--tenant")
    assert code == 2 and "--tenant needs" in err


def test_tenant_drop_asks_or_needs_yes_and_says_where_the_backup_is(run_cli, url, tmp_path):
    assert run_cli("--database-url", url, "tenant", "create", "acme")[0] == 0
    code, out, err = run_cli("--database-url", url, "tenant", "drop", "acme")  # stdin is not a terminal
    assert code == 2 and "refusing without --yes" in err
    code, out, err = run_cli("--database-url", url, "tenant", "drop", "acme", "--yes", "--json")
    data = json.loads(out)
    assert code == 0 and data["action"] == "drop" and Path(data["backup"]).is_file(), err
    code, out, _ = run_cli("--database-url", url, "tenant", "list", "--json")
    assert json.loads(out)["tenants"] == []


FAILING = """
def migrate(migrator, database, *, fake=False):
    if "poison" in database.get_tables():
        raise RuntimeError("this tenant holds a poison table")
    migrator.sql("CREATE TABLE added_by_005 (id integer)")


def rollback(migrator, database, *, fake=False):
    pass
"""


@pytest.mark.fresh_database  # migrates the main schema too
def test_migrate_all_tenants_prints_a_line_each_and_exits_1_when_one_failed(run_cli, url, tmp_path, monkeypatch):
    for name in ("acme", "bad", "cozy"):
        assert run_cli("--database-url", url, "tenant", "create", name)[0] == 0
    pfdb.init_database(url)
    with pfdb.tenant("bad"):
        pfdb.db.execute_sql("CREATE TABLE poison (id integer)")
    pfdb.close_database()
    folder = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", folder, ignore=shutil.ignore_patterns("__pycache__"))
    (folder / "005_added.py").write_text(FAILING)
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(folder))
    code, out, _ = run_cli("--database-url", url, "status", "--all-tenants", "--exit-code")
    assert code == 1 and out.count("(pending: 005_added)") == 4
    code, out, err = run_cli("--database-url", url, "migrate", "--all-tenants", "--parallel", "2")
    lines = out.splitlines()
    assert code == 1, err
    assert lines[0].startswith("(main): applied 005_added") and lines[1].startswith("acme: applied 005_added")
    assert lines[2].startswith("bad: FAILED: ") and "poison" in lines[2]
    assert lines[3].startswith("cozy: applied 005_added") and lines[4] == "1 of 4 failed: bad"
    code, out, _ = run_cli("--database-url", url, "status", "--all-tenants", "--json")
    data = json.loads(out)
    assert code == 0 and [t["name"] for t in data["tenants"] if t["pending"]] == ["bad"]
    code, out, _ = run_cli("--database-url", url, "migrate", "--all-tenants", "--json")
    data = json.loads(out)
    assert code == 1 and data["ok"] is False and [t["name"] for t in data["tenants"] if not t["ok"]] == ["bad"]
    assert {t.name: t.schema_version for t in tenants_after(url)}["bad"] == "004_tenant_registry"


def tenants_after(url):
    pfdb.init_database(url)
    return tenants.list_tenants()
