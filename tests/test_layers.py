"""The layers (docs/architecture.md): imports point one way, each rule has one home.

The import-linter contract is checked here against a copy of pfdb with an upward import and
with a cycle put in, so a contract that stopped catching either would fail this file.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import pfdb
from pfdb import config, lifecycle, migrations
from pfdb.database import borrow_connection, get_database

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")


# -- the contract ------------------------------------------------------------------------------
def _lint(tmp_path: Path, change: tuple[str, str, str] | None = None) -> subprocess.CompletedProcess:
    """``lint-imports`` over a copy of pfdb, with one line added after an anchor in one module."""
    shutil.copytree(ROOT / "pfdb", tmp_path / "pfdb", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if change is not None:
        module, anchor, line = change
        path = tmp_path / "pfdb" / module
        text = path.read_text(encoding="utf-8")
        assert anchor in text
        path.write_text(text.replace(anchor, f"{anchor}{line}\n", 1), encoding="utf-8")
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(tmp_path)},
    )


@pytest.fixture
def lint(tmp_path):
    if not Path(LINT_IMPORTS).exists():
        pytest.skip("import-linter is not installed (pip install '.[test]')")
    return lambda change=None: _lint(tmp_path, change)


def test_the_layers_contract_holds(lint):
    result = lint()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2 kept, 0 broken" in result.stdout


def test_an_upward_import_inside_a_function_breaks_the_contract(lint):
    # what database.py did before: the health check imported migrations inside a function
    result = lint(
        ("database.py", "def get_database() -> pw.Database:\n", "    from .migrations import status  # noqa: F401")
    )
    assert result.returncode == 1
    assert "pfdb.database is not allowed to import pfdb.migrations" in result.stdout


def test_an_import_cycle_breaks_the_contract(lint):
    # migrations -> maintenance, while maintenance reads the schema from migrations
    result = lint(("migrations.py", "def check() -> DriftReport:\n", "    from . import maintenance  # noqa: F401"))
    assert result.returncode == 1
    assert "No cycles are allowed in pfdb" in result.stdout and ".migrations -> .maintenance" in result.stdout


def test_no_module_but_config_reads_the_environment():
    readers = [
        str(path.relative_to(ROOT))
        for path in (ROOT / "pfdb").rglob("*.py")
        if path.name != "config.py" and re.search(r"os\.environ(\.get|\[)|os\.getenv", path.read_text(encoding="utf-8"))
    ]
    assert readers == []


def test_environment_variables_are_read_by_config(monkeypatch, tmp_path):
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(tmp_path))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert config.migrations_dir_setting() == str(tmp_path) and migrations.migrations_dir() == tmp_path
    assert config.cache_home() == tmp_path / "cache"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert config.cache_home() == Path.home() / ".cache"


# -- the policies lifecycle composes ---------------------------------------------------------
def test_the_package_s_init_database_and_health_check_are_the_lifecycle_s():
    assert pfdb.init_database is lifecycle.init_database
    assert pfdb.database_health_check is lifecycle.database_health_check


def test_pfdb_init_reads_the_settings_and_env_file_once(run_cli, empty_url, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("DATABASE_POOL_SIZE=3\n")
    calls = []
    real = config.read_environment
    monkeypatch.setattr(config, "read_environment", lambda *a, **k: calls.append(1) or real(*a, **k))
    code, out, err = run_cli("--database-url", empty_url, "init")
    assert code == 0, err
    assert len(calls) == 1 and pfdb.database.get_settings().pool_size == 3


def test_health_is_unhealthy_while_migrations_are_unapplied(run_cli, empty_url):
    pfdb.init_database(empty_url)
    names = migrations.migration_names()
    migrations.migrate(names[-2], backup=False)  # all but the newest
    report = pfdb.database_health_check()
    assert report["status"] == "unhealthy" and report["connection_test"] is True
    assert report["migrations"] == {"current": names[-2], "pending": names[-1:]}
    assert report["error"] == f"1 migration not applied ({names[-1]}); run pfdb migrate"
    code, out, _ = run_cli("--database-url", empty_url, "health")
    assert code == 1 and "status:     unhealthy" in out and f"not applied ({names[-1]})" in out
    code, out, _ = run_cli("--database-url", empty_url, "health", "--json")
    assert code == 1 and json.loads(out)["status"] == "unhealthy"
    pfdb.init_database(empty_url)
    migrations.migrate(backup=False)
    assert pfdb.database_health_check()["status"] == "healthy"
    assert run_cli("--database-url", empty_url, "health")[0] == 0


def test_init_database_with_auto_upgrade_migrates_and_backs_up_through_the_hook(empty_url):
    taken = []
    previous = migrations.set_backup_hook(lambda label="": taken.append(label))
    try:
        pfdb.init_database(empty_url)
        migrations.migrate(migrations.migration_names()[0], backup=False)  # some data, one pending
        pfdb.init_database(empty_url, migration_auto_upgrade=True, migration_backup_before_upgrade=True)
        assert migrations.status().pending == () and taken == [""]
    finally:
        migrations.set_backup_hook(previous)
    assert previous is lifecycle.backup_before_change


def test_a_backup_asked_for_without_a_hook_is_a_clear_error(empty_url):
    pfdb.init_database(empty_url)
    migrations.migrate(migrations.migration_names()[0], backup=False)
    previous = migrations.set_backup_hook(None)
    try:
        with pytest.raises(pfdb.MigrationError, match="no backup function is set"):
            migrations.migrate(backup=True)
        assert len(migrations.status().pending) == len(migrations.migration_names()) - 1  # nothing ran
    finally:
        migrations.set_backup_hook(previous)


# -- errors translated at the database boundary ------------------------------------------------
def test_a_query_on_a_database_without_tables_says_to_run_pfdb_init(empty_url, run_cli):
    pfdb.init_database(empty_url)
    with pytest.raises(pfdb.SchemaMissingError) as caught:
        pfdb.Product.select().count()
    message = str(caught.value)
    assert "has no pfdb schema" in message and "run pfdb init" in message and "products" in message
    assert "\n" not in message
    pfdb.close_database()
    code, _, err = run_cli("--database-url", empty_url, "logs")
    assert code == 1 and err.startswith("error: the database") and "run pfdb init" in err
    assert "unexpected" not in err and "Traceback" not in err


def test_other_errors_pass_the_boundary_unchanged(db):
    with pytest.raises(Exception) as caught:
        db.execute_sql("SELECT no_such_column FROM products")
    assert not isinstance(caught.value, pfdb.PfdbError)


# -- one way to borrow a connection --------------------------------------------------------------
def test_borrow_connection_gives_back_only_what_it_opened(db):
    database = get_database()
    if not database.is_closed():
        database.close()
    with borrow_connection() as borrowed:
        assert borrowed is database and not database.is_closed()
        with borrow_connection():  # nested: the outer one keeps it
            pass
        assert not database.is_closed()
    assert database.is_closed()
    database.connect()
    with borrow_connection():
        pass
    assert not database.is_closed()  # the caller's own connection stays open
    database.close()
