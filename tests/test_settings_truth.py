"""Settings do what the README says, seen where a user sees them (subprocesses, the real output)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pfdb
from pfdb import migrations

ROOT = Path(__file__).resolve().parent.parent


def python(code: str, cwd: Path, **env: str) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "MIGRATION_"))}
    environ.update(env, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize("how", ["cli", "python"])
def test_database_echo_prints_the_sql_on_stderr(sqlite_url, tmp_path, how):
    if how == "cli":
        code = f"import sys; from pfdb.cli import main; sys.exit(main(['--database-url', {sqlite_url!r}, 'logs']))"
    else:
        code = f"import pfdb; pfdb.init_database({sqlite_url!r}); print(pfdb.Product.select().count())"
    quiet = python(code, tmp_path)
    loud = python(code, tmp_path, DATABASE_ECHO="true")
    assert quiet.returncode == 0 and loud.returncode == 0, loud.stderr
    assert "SELECT" not in quiet.stderr
    assert "SELECT" in loud.stderr and ('"system_logs"' in loud.stderr or '"products"' in loud.stderr)


def test_echo_leaves_an_application_s_own_logging_alone(sqlite_url, tmp_path):
    code = (
        "import logging, sys; logging.basicConfig(stream=sys.stdout, level=logging.DEBUG, format='APP %(message)s'); "
        f"import pfdb; pfdb.init_database({sqlite_url!r}); pfdb.Product.select().count()"
    )
    result = python(code, tmp_path, DATABASE_ECHO="true")
    assert result.returncode == 0 and "APP" in result.stdout and "SELECT" in result.stdout
    assert "SELECT" not in result.stderr  # no second handler of pfdb's own


def test_no_command_applies_auto_upgrade_on_the_side(run_cli, empty_url, backend):
    pfdb.init_database(empty_url)
    migrations.migrate(backup=False)
    migrations.rollback("zero", destructive_ok=True, backup=False)
    pfdb.close_database()
    env = {"MIGRATION_AUTO_UPGRADE": "true"}
    code, out, _ = run_cli("--database-url", empty_url, "migrate", "--dry-run", env=env)
    shipped = migrations.migration_names()
    assert (
        code == 0 and f"{len(shipped)} migration(s) would be applied ({', '.join(shipped)}); nothing was changed" in out
    )
    code, _, _ = run_cli("--database-url", empty_url, "status", "--exit-code", "--no-drift", env=env)
    assert code == 1  # still pending: neither the dry run nor status migrated
    pfdb.init_database(empty_url, migration_auto_upgrade=False)
    assert migrations.status().pending == tuple(shipped)


def test_init_on_an_in_memory_database_reports_what_it_did(run_cli):
    code, out, err = run_cli("--database-url", "sqlite:///:memory:", "init")
    assert code == 0, err
    shipped = migrations.migration_names()
    assert f"applied:  {', '.join(shipped)}" in out and f"current:  {shipped[-1]} (up to date)" in out


def test_create_migration_refuses_to_write_into_an_installed_package(tmp_path, monkeypatch):
    monkeypatch.delenv("PFDB_MIGRATIONS_DIR", raising=False)
    assert migrations.writable_migrations_dir() == ROOT / "migrations"  # a checkout: its own folder
    code = (
        "import pfdb.migrations as m, sys\n"
        "try:\n    m.writable_migrations_dir()\nexcept m.MigrationError as e:\n    print(e)\n"
    )
    site = tmp_path / "site"
    (site / "pfdb").mkdir(parents=True)
    for item in (ROOT / "pfdb").iterdir():
        if item.name != "__pycache__":
            (site / "pfdb" / item.name).symlink_to(item)
    (site / "pfdb" / "_migrations").symlink_to(ROOT / "migrations")
    # The copy resolves into the checkout through its symlinks, so copy migrations.py itself.
    (site / "pfdb" / "migrations.py").unlink()
    (site / "pfdb" / "migrations.py").write_text((ROOT / "pfdb" / "migrations.py").read_text())
    environ = {k: v for k, v in os.environ.items() if k != "PFDB_MIGRATIONS_DIR"}
    environ["PYTHONPATH"] = str(site)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=60
    )
    assert "pfdb is installed as a package" in result.stdout and "PFDB_MIGRATIONS_DIR" in result.stdout, result.stderr


@pytest.mark.postgres
def test_init_creates_a_missing_postgres_database_whose_url_sets_connect_timeout(pg_server, run_cli):
    """The URL's own connect_timeout wins, also while pfdb checks for (and creates) the database."""
    import uuid

    from conftest import pg_url

    name = f"pfdb_test_timeout_{uuid.uuid4().hex[:10]}"
    try:
        code, out, err = run_cli("--database-url", f"{pg_url(name)}?connect_timeout=3", "init", "--json")
        assert code == 0, err
        assert json.loads(out)["created"] is True
    finally:
        pfdb.close_database()
        pg_server.release(name)  # dropped in the background: a DROP waits for a checkpoint
