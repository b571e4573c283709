"""Only ``init`` and ``migrate`` create a database; every other command says there is none.
And a SQLite file pfdb creates (with its -wal and -shm) is owner-only, as are backup folders."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from contextlib import contextmanager

import pytest
from conftest import ROOT

import pfdb
from pfdb.errors import ConfigError, DatabaseNotFoundError
from pfdb.maintenance import backup

COMMANDS = [
    ["info"],
    ["status"],
    ["health"],
    ["logs"],
    ["export", "-"],
    ["backup"],
    ["optimize"],
    ["rollback"],
    ["create-admin", "a@example.com", "--password-stdin"],
    ["import", "-"],
    ["import-categories", "-"],
    ["restore", "{backup}", "--yes"],
    ["wait", "--timeout", "0.2"],
]
STDIN = {"create-admin": "hunter2hunter2\n", "import": "sku,name\nA-1,Apple\n", "import-categories": "A > B\n"}


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: a[0])
def test_commands_other_than_init_and_migrate_create_nothing(
    argv, tmp_path, tmp_path_factory, sqlite_template, run_cli, monkeypatch
):
    argv = [a.format(backup=sqlite_template) for a in argv]  # a real pfdb database to restore from
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("--database-url", "sqlite:///typo.db", *argv, stdin=STDIN.get(argv[0], ""))
    assert code in (1, 2), (out, err)
    said = err if argv[0] != "health" else out  # health prints its report, error included, on stdout
    assert "no SQLite database at typo.db" in said and "pfdb init" in said, (out, err)
    assert len(err.strip().splitlines()) == 1 or argv[0] in ("wait", "health"), err
    assert sorted(os.listdir(tmp_path)) == [], "a command invented files"


def test_check_compares_models_and_migrations_without_a_database(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("--database-url", "sqlite:///typo.db", "check")
    assert code == 0 and "no drift" in out
    assert sorted(os.listdir(tmp_path)) == []


def test_status_in_an_empty_folder_creates_no_default_database(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli("status")
    assert code == 1 and "no SQLite database at pfdb.db" in err and "pfdb init" in err
    assert not (tmp_path / "pfdb.db").exists()


@pytest.mark.parametrize("command", ["init", "migrate"])
def test_init_and_migrate_create_the_database(command, tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli("--database-url", "sqlite:///new/shop.db", command)
    assert code == 0, err
    assert (tmp_path / "new" / "shop.db").is_file()
    code, out, err = run_cli("--database-url", "sqlite:///new/shop.db", "status", "--exit-code")
    assert code == 0 and "[x] 001_initial" in out


def test_a_url_naming_a_folder_is_a_usage_error(tmp_path, run_cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for command in ("init", "info"):
        code, _, err = run_cli("--database-url", "sqlite:///./dir/", command)
        assert code == 2 and "names a folder" in err and "sqlite:///./dir/pfdb.db" in err
    assert not (tmp_path / "dir").exists()
    (tmp_path / "existing").mkdir()
    for command in ("init", "info"):
        code, _, err = run_cli("--database-url", "sqlite:///existing", command)
        assert code == 2 and "names a folder" in err, err


def test_python_embedders_still_get_a_new_file_and_can_opt_out(tmp_path):
    # The README's Python example: init_database() on a new file just works.
    target = tmp_path / "embedded.db"
    pfdb.init_database(f"sqlite:///{target}")
    with pfdb.db_session_scope() as database:
        database.execute_sql("SELECT 1")
    assert target.is_file()
    missing = tmp_path / "missing.db"
    pfdb.init_database(f"sqlite:///{missing}", create=False)
    with pytest.raises(DatabaseNotFoundError, match="pfdb init"):
        with pfdb.db_session_scope():
            pass
    assert not missing.exists()
    with pytest.raises(ConfigError, match="names a folder"):
        pfdb.init_database(f"sqlite:///{tmp_path}/")


# -- permissions --------------------------------------------------------------------------------
@contextmanager
def _umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_a_new_sqlite_database_and_its_wal_and_shm_are_owner_only(mask, tmp_path):
    target = tmp_path / "shop.db"
    with _umask(mask):
        pfdb.init_database(f"sqlite:///{target}")
        with pfdb.db_session_scope() as database:
            database.execute_sql("CREATE TABLE t (x)")
            database.execute_sql("INSERT INTO t VALUES (1)")
            files = {p.name: _mode(p) for p in tmp_path.iterdir()}
    assert files == {"shop.db": 0o600, "shop.db-wal": 0o600, "shop.db-shm": 0o600}


@pytest.mark.parametrize("mask", ["000", "022"])
def test_pfdb_init_creates_an_owner_only_file(mask, tmp_path):
    proc = subprocess.run(
        f"umask {mask} && exec {sys.executable} {ROOT / 'bin' / 'pfdb'} init",
        shell=True,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr
    assert _mode(tmp_path / "pfdb.db") == 0o600
    assert not {p.name for p in tmp_path.iterdir()} - {"pfdb.db", "pfdb.db-wal", "pfdb.db-shm", "backups"}


@pytest.mark.parametrize("mask", [0o000, 0o022])
def test_backup_folders_are_0700_whatever_the_umask(mask, db, tmp_path):
    with _umask(mask):
        result = backup(f"{tmp_path}/a/b/c/")
        default = backup()  # default folder, made by the same function
    for folder in (tmp_path / "a", tmp_path / "a" / "b", tmp_path / "a" / "b" / "c", default.path.parent):
        assert _mode(folder) == 0o700, folder
    assert _mode(result.path) == 0o600 and _mode(default.path) == 0o600
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o755)
    with _umask(mask):
        named = backup(shared / "x" / "y" / "named.bak")
    assert _mode(shared / "x") == _mode(shared / "x" / "y") == 0o700 and _mode(named.path) == 0o600
    assert _mode(shared) == 0o755  # a folder that was there keeps its mode
