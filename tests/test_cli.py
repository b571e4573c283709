"""The migration commands through the real CLI entry point: mapping, output and exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import processes
import pytest

import pfdb
from pfdb import Product
from pfdb.feeds import import_products

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "bin" / "pfdb"


def test_init_on_an_empty_database_then_again(run_cli, empty_url, backend):
    code, out, err = run_cli("--database-url", empty_url, "init")
    assert code == 0, err
    assert "applied:  001_initial, 002_unique_category_names" in out and "up to date" in out
    code, out, _ = run_cli("--database-url", empty_url, "init", "--json")
    data = json.loads(out)
    assert code == 0 and data["applied"] == [] and data["current"] == "004_tenant_registry"
    assert data["backend"] == backend and data["created"] is False


def _existing(empty_url: str) -> str:
    """An empty SQLite database is an empty file: status and logs no longer create one."""
    if empty_url.startswith("sqlite:///"):
        Path(empty_url[len("sqlite:///") :]).touch()
    return empty_url


def test_status_shows_applied_pending_and_exit_code(run_cli, empty_url):
    code, out, _ = run_cli("--database-url", _existing(empty_url), "status", "--exit-code")
    assert code == 1 and "[ ] 001_initial  (pending)" in out
    run_cli("--database-url", empty_url, "migrate")
    code, out, _ = run_cli("--database-url", empty_url, "status", "--exit-code")
    assert code == 0 and "[x] 001_initial  (applied 20" in out and "drift: none" in out
    code, out, _ = run_cli("--database-url", empty_url, "status", "--json", "--no-drift")
    data = json.loads(out)
    assert data["current"] == "004_tenant_registry" and data["pending"] == [] and data["drift"] is None


def test_migrate_rollback_cycle_keeps_data(run_cli, empty_url, backend):
    assert run_cli("--database-url", empty_url, "migrate")[0] == 0
    pfdb.init_database(empty_url)
    Product.create(sku="CLI-1", name="kept")
    code, out, _ = run_cli("--database-url", empty_url, "rollback", "001")
    assert code == 0 and "rolled back: 002_unique_category_names" in out
    code, out, _ = run_cli("--database-url", empty_url, "rollback", "001")
    assert code == 0 and "nothing to roll back: already at 001_initial" in out
    code, out, _ = run_cli(
        "--database-url", empty_url, "rollback", "zero", "--yes", env={"MIGRATION_BACKUP_BEFORE_UPGRADE": "false"}
    )
    assert code == 0 and "rolled back: 001_initial" in out
    code, out, _ = run_cli("--database-url", empty_url, "migrate", "--dry-run")
    assert code == 0 and 'CREATE TABLE IF NOT EXISTS "products"' in out and "nothing was changed" in out
    pfdb.init_database(empty_url)
    assert "products" not in pfdb.db.get_tables()


@pytest.mark.fresh_database  # changes the schema
def test_extra_arguments_are_refused_before_anything_runs(run_cli, database_url):
    code, out, err = run_cli("--database-url", database_url, "rollback", "001", "typo")
    assert code == 2 and "unexpected argument 'typo'" in err and out == ""
    code, _, err = run_cli("--database-url", database_url, "rollback", "--count", "2")
    assert code == 2 and "unknown option --count" in err
    code, _, err = run_cli(
        "--database-url",
        database_url,
        "rollback",
        "--yes",  # still nothing undone above
        env={"MIGRATION_BACKUP_BEFORE_UPGRADE": "false"},
    )
    assert code == 0


def test_check_exits_1_on_drift(run_cli, database_url):
    code, out, _ = run_cli("--database-url", database_url, "check", "--json")
    assert code == 0 and json.loads(out) == {"drift": False, "changes": []}
    Product._meta.indexes.append((("brand",), False))
    try:
        code, out, _ = run_cli("--database-url", database_url, "check")
    finally:
        Product._meta.indexes.pop()
    assert code == 1 and "add_index('products', 'brand'" in out


def test_create_migration_writes_a_safe_file_name(run_cli, database_url, tmp_path, monkeypatch):
    folder = tmp_path / "migrations"
    folder.mkdir()
    shutil.copy(ROOT / "migrations" / "001_initial.py", folder)
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(folder))
    code, out, _ = run_cli("--database-url", database_url, "create-migration", "add product weight")
    assert code == 0 and "no changes" in out
    code, out, _ = run_cli("--database-url", database_url, "create-migration", "Add a thing, v2!", "--empty")
    assert code == 0 and (folder / "002_add_a_thing_v2.py").exists()
    code, _, err = run_cli("--database-url", database_url, "create-migration")
    assert code == 2 and "missing argument DESCRIPTION" in err


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://u:pw@h/db", "unsupported scheme 'mysql:'"),
        ("sqlite://oops.db", "three slashes"),
        ("postgresql://u:Secr3tPw@h:nope/db", "malformed"),
    ],
)
def test_bad_database_url_is_a_usage_error(run_cli, url, message):
    code, out, err = run_cli("status", env={"DATABASE_URL": url})
    assert code == 2 and message in err and "Secr3tPw" not in err + out
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_unreachable_server_is_exit_1_without_password(run_cli):
    code, _, err = run_cli("--database-url", "postgresql://u:Secr3tPw@127.0.0.1:1/db", "migrate")
    assert code == 1 and "cannot connect" in err and "Secr3tPw" not in err


def test_wait_times_out_with_exit_1(run_cli):
    code, _, err = run_cli("--database-url", "postgresql://u@127.0.0.1:1/db", "wait", "--timeout", "0.6")
    assert code == 1 and "did not answer within 0.6 s" in err


def test_wait_returns_when_the_database_answers(run_cli, database_url):
    code, out, _ = run_cli("--database-url", database_url, "wait", "--timeout", "5")
    assert code == 0 and "database is up" in out


def test_unknown_command_and_debug(run_cli):
    code, _, err = run_cli("frobnicate")
    assert code == 2 and "unknown command 'frobnicate'" in err
    code, _, err = run_cli("--debug", "--database-url", "mysql://x/y", "status")
    assert code == 2 and "Traceback" in err


def test_help_lists_every_command_without_a_pager(run_cli):
    code, out, _ = run_cli("--help")
    assert code == 0
    for command in ("init", "status", "migrate", "rollback", "create-migration", "check", "wait"):
        assert command in out
    code, out, _ = run_cli("rollback", "--help")
    assert code == 0 and "pfdb rollback 001" in out


# -- the real executables --------------------------------------------------------------------------
def run(args, cwd, env_extra=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PAGER")}
    env.update(env_extra or {})
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def test_bin_pfdb_help_and_init_on_the_sqlite_default(tmp_path):
    result = run([sys.executable, str(BIN), "--help"], tmp_path)
    assert result.returncode == 0 and "create-migration" in result.stdout
    result = run([sys.executable, str(BIN), "init"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "pfdb.db").exists()  # the documented embedded default
    result = run([sys.executable, "-m", "pfdb", "status", "--exit-code"], tmp_path)
    assert result.returncode == 0 and "001_initial" in result.stdout


def test_a_command_on_an_unmigrated_database_says_to_migrate(run_cli, empty_url):
    code, _, err = run_cli("--database-url", _existing(empty_url), "logs")
    assert code == 1 and "has no pfdb schema" in err and "run pfdb migrate" in err


def test_values_reach_commands_exactly_as_typed(run_cli, database_url):
    """Fire would read 'abc#defgh12' as 'abc' and '1e1' as 10.0: pfdb passes text as typed."""
    code, _, err = run_cli("--database-url", database_url, "create-admin", "boss@example.com", "abc#defgh12")
    assert code == 0, err
    pfdb.init_database(database_url)
    assert pfdb.User.get_by_email("boss@example.com").check_password("abc#defgh12")
    code, out, err = run_cli("--database-url", database_url, "migrate", "--target", "1", "--lock-timeout", "1e1")
    assert code == 0 and "up to date" in out, err
    run_cli("--database-url", database_url, "backup")
    code, out, _ = run_cli("--database-url", database_url, "backup", "--help")
    assert code == 0 and "backup-path" in out and "FIRE_METADATA" not in out


def test_a_command_does_not_pay_for_asyncio_yet_fire_still_sees_coroutines(sqlite_url):
    # Fire imports asyncio (~25 ms) only to spot coroutine commands; pfdb lends it a stand-in.
    script = (
        "import sys; from pfdb.cli import main\n"
        f"code = main(['--database-url', {sqlite_url!r}, 'status', '--no-drift'])\n"
        "print(code, 'asyncio' in sys.modules)\n"
        "from fire import inspectutils\n"
        "async def job(): pass\n"
        "print(inspectutils.IsCoroutineFunction(job), inspectutils.IsCoroutineFunction(print))\n"
        "import asyncio; print(asyncio.run is not None, type(asyncio).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-3:] == ["0 False", "True False", "True module"]


@pytest.mark.parametrize("command", ["export", "info"])
def test_output_cut_short_by_the_reader_is_a_quiet_exit(tmp_path, sqlite_url, command):
    # `pfdb export | head -1`: the reader closes the pipe early; no error message, no traceback.
    (tmp_path / "feed.csv").write_text("sku,name,price\n" + "".join(f"S{i},Item {i},1.00\n" for i in range(20000)))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    pfdb.init_database(sqlite_url)  # the data, in process: the process under test is the reader's
    import_products(str(tmp_path / "feed.csv"))
    pfdb.close_database()
    child = processes.Popen(
        [sys.executable, str(BIN), "--database-url", sqlite_url, command],
        env=env,
        stdout=processes.PIPE,
        stderr=processes.PIPE,
        stdin=processes.DEVNULL,
    )
    if command == "export":
        assert child.stdout.readline().startswith(b"sku,")
    child.stdout.close()  # info: before it writes a line
    err = child.stderr.read().decode()
    child.wait(timeout=60)
    assert child.returncode == 1 and err == ""
