"""Backup, restore, info and optimize on both backends: consistency under concurrent writers,
refusal of bad files with the database untouched, atomic restores, permissions, no leaked password."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import processes
import pytest

import pfdb
from pfdb import Configuration, RestoreError, SystemLog, User, _pg_tools, _sqlite_tools, maintenance
from pfdb.errors import BackupError, UnsafePathError
from pfdb.maintenance import backup, check_backup, info, optimize, restore

ROOT = Path(__file__).resolve().parent.parent
INITIAL = ROOT / "migrations" / "001_initial.py"
LATEST = "004_tenant_registry"  # the last migration pfdb ships
PASSWORD = "s3cretpw"

WRITER = """
import pathlib, sys, time
import pfdb
from pfdb import Configuration, SystemLog, db_session_scope

url, wid, stop = sys.argv[1], sys.argv[2], pathlib.Path(sys.argv[3])
pfdb.init_database(url)
deadline = time.monotonic() + 60
i = 0
while not stop.exists() and time.monotonic() < deadline:
    with db_session_scope():  # one transaction: a key in both tables, or in neither
        Configuration.create(key=f"w{wid}-{i}", value=str(i))
        SystemLog.create(level="INFO", message=f"w{wid}-{i}")
    i += 1
    if i == 1:
        print("started", flush=True)
print(i, flush=True)
"""


def add_rows(n: int, prefix: str = "k") -> None:
    with pfdb.db_session_scope():
        for i in range(n):
            Configuration.create(key=f"{prefix}{i}", value=str(i))


def snapshot() -> dict[str, list]:
    """Every row that matters, comparable across a backup and a restore."""
    with pfdb.db_session_scope():
        return {
            "configuration": [(c.key, c.value) for c in Configuration.select().order_by(Configuration.key)],
            "system_logs": sorted(log.message for log in SystemLog.select()),
            "users": [(u.email, u.password_hash) for u in User.select().order_by(User.email)],
        }


def assert_consistent(keys: list[str], messages: list[str]) -> None:
    """Each writer's rows are a prefix 0..n-1 and are in both tables: one moment, no torn transaction."""
    assert keys and sorted(keys) == sorted(messages)
    by_writer: dict[str, list[int]] = {}
    for key in keys:
        writer, n = key.split("-")
        by_writer.setdefault(writer, []).append(int(n))
    for numbers in by_writer.values():
        assert sorted(numbers) == list(range(len(numbers)))


def password_url(url: str) -> str:
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1) if url.startswith("postgresql") else url


def file_state(url: str) -> str:
    """A hash of the SQLite file and its WAL: byte-for-byte comparison."""
    path = Path(url.removeprefix("sqlite:///"))
    digest = hashlib.sha256()
    for p in (path, Path(f"{path}-wal")):
        digest.update(p.read_bytes() if p.exists() else b"-")
    return digest.hexdigest()


def dump_keys(path: Path) -> list[str]:
    """The configuration keys inside a pg_dump archive, read with pg_restore (no database)."""
    out = subprocess.run(
        ["pg_restore", "--data-only", "--table=configuration", "--file=-", str(path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.split("FROM stdin;\n", 1)[1].split("\n\\.", 1)[0].splitlines()
    header = re.search(r"COPY \S+ \(([^)]*)\) FROM stdin", out).group(1).split(", ")
    return sorted(line.split("\t")[header.index("key")] for line in lines)


# -- backup -----------------------------------------------------------------------------------
def test_backup_holds_the_data_and_restore_brings_it_back(db, backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    add_rows(5)
    before = snapshot()
    result = backup()
    assert result.path.exists() and result.path.parent == tmp_path / "backups"
    name = pfdb.database.get_settings().database_url.name
    assert re.fullmatch(rf"{name}-\d{{8}}T\d{{6}}Z\.{'db' if backend == 'sqlite' else 'dump'}", result.path.name)
    assert result.migration == LATEST and result.size == result.path.stat().st_size > 0
    assert stat.S_IMODE(result.path.stat().st_mode) == 0o600
    assert not [p for p in result.path.parent.iterdir() if p.name.endswith(".tmp")]

    Configuration.delete().where(Configuration.key == "k0").execute()
    add_rows(2, prefix="after")
    assert snapshot() != before
    restored = restore(result.path)
    assert snapshot() == before
    assert restored.migration == LATEST and restored.pending == ()
    assert stat.S_IMODE(restored.safety_backup.path.stat().st_mode) == 0o600
    assert "pre-restore" in restored.safety_backup.path.name


def test_backup_path_can_be_a_file_or_a_folder(db, tmp_path):
    target = tmp_path / "elsewhere" / "nightly #1.bak"
    assert backup(target).path == target and target.exists()
    first = backup(f"{tmp_path}/folder/").path  # a trailing slash: a folder, made if missing
    second = backup(tmp_path / "folder").path
    assert first.parent == second.parent == tmp_path / "folder" and first != second  # same second, no clash


def test_backup_refuses_to_overwrite_the_database_itself(sqlite_url):
    pfdb.init_database(sqlite_url)
    with pytest.raises(UnsafePathError, match="is the database itself"):  # exit 2, like every path clash
        backup(sqlite_url.removeprefix("sqlite:///"))


def test_backup_to_an_unwritable_place_is_a_clear_error(db, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(BackupError, match="cannot (write a backup to|create the folder)") as caught:
        backup(blocker / "sub" / "x.bak")
    assert caught.value.hint == "choose a writable --backup-path"


def test_backup_while_two_processes_insert_is_consistent(db, backend, database_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    stop = tmp_path / "stop"
    writers = [
        processes.Popen(
            [sys.executable, str(script), database_url, str(n), str(stop)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for n in (1, 2)
    ]
    try:
        for w in writers:
            assert w.stdout.readline().strip() == "started", w.stderr.read()

        def live_count() -> int:
            with pfdb.db_session_scope():
                return Configuration.select().count()

        grew = []

        def progress(done: int, total: int) -> None:
            # At the first step, wait (bounded) until the writers have committed more rows:
            # the copy then provably runs while they write.
            if not grew:
                start, deadline = live_count(), time.monotonic() + 10
                while live_count() < start + 5 and time.monotonic() < deadline:
                    pass
                grew.append(live_count() - start)

        monkeypatch.setattr(_sqlite_tools, "PAGES_PER_STEP", 1)  # many small steps to write between
        result = backup(progress=progress)
        if backend == "sqlite":
            assert grew and grew[0] >= 5
        deadline = time.monotonic() + 10
        # the writers carry on after the backup
        while live_count() == 0 and time.monotonic() < deadline:
            pass
    finally:
        stop.touch()
        written = [int(w.communicate(timeout=60)[0].strip().splitlines()[-1]) for w in writers]
    assert all(n > 0 for n in written), written

    if backend == "sqlite":
        conn = sqlite3.connect(result.path)
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        keys = [r[0] for r in conn.execute("SELECT key FROM configuration")]
        messages = [r[0] for r in conn.execute("SELECT message FROM system_logs")]
        conn.close()
    else:
        keys = dump_keys(result.path)
        messages = keys  # checked again after the restore below
    assert_consistent(keys, messages)
    assert len(keys) < sum(written)  # a moment in the middle, not the end

    restore(result.path)
    state = snapshot()
    restored_keys = [k for k, _ in state["configuration"]]
    assert sorted(restored_keys) == sorted(keys)
    assert_consistent(restored_keys, state["system_logs"])


# -- restore refuses bad files -------------------------------------------------------------
@pytest.fixture
def bad_files(tmp_path, db, backend, monkeypatch):
    """A truncated real backup, random bytes, a SQLite database of something else, a missing path."""
    monkeypatch.chdir(tmp_path)
    add_rows(3)
    good = backup(tmp_path / f"good.{'db' if backend == 'sqlite' else 'dump'}").path
    data = good.read_bytes()
    files = {
        "truncated": tmp_path / "truncated.bak",
        "random": tmp_path / "random.bak",
        "foreign": tmp_path / "foreign.db",
        "missing": tmp_path / "missing.bak",
    }
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["random"].write_bytes(os.urandom(20000))
    conn = sqlite3.connect(files["foreign"])
    conn.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
    conn.execute("INSERT INTO notes (body) VALUES ('hello')")
    conn.commit()
    conn.close()
    return files


EXPECTED = {
    "sqlite": {
        "truncated": "is truncated",
        "random": "is not a SQLite database",
        "foreign": "not a pfdb backup: it has no migratehistory table",
        "missing": "does not exist",
    },
    "postgresql": {
        "truncated": "is a truncated or damaged pg_dump archive",
        "random": "is not a pg_dump custom-format archive",
        "foreign": "is a SQLite database, not a PostgreSQL dump",
        "missing": "does not exist",
    },
}


@pytest.mark.parametrize("kind", ["truncated", "random", "foreign", "missing"])
def test_restore_refuses_a_bad_file_and_changes_nothing(bad_files, kind, backend, database_url, tmp_path):
    before = snapshot()
    if backend == "sqlite":
        pfdb.db.close()
        before_bytes = file_state(database_url)
    backups_before = sorted((tmp_path / "backups").glob("*")) if (tmp_path / "backups").exists() else []
    with pytest.raises(RestoreError, match=re.escape(EXPECTED[backend][kind])) as caught:
        restore(bad_files[kind])
    assert caught.value.hint
    if backend == "sqlite":
        assert file_state(database_url) == before_bytes
    assert snapshot() == before
    after = sorted((tmp_path / "backups").glob("*")) if (tmp_path / "backups").exists() else []
    assert after == backups_before  # refused before any safety copy was taken


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_restore_refuses_a_dump_of_another_database(db, pg_server, tmp_path):
    from conftest import pg_url

    name = pg_server.create()
    pg_server.created.append(name)
    subprocess.run(["psql", "-q", "-c", "CREATE TABLE notes (id int)", pg_url(name)], check=True)
    foreign = tmp_path / "foreign.dump"
    subprocess.run(["pg_dump", "-Fc", f"--file={foreign}", pg_url(name)], check=True)
    with pytest.raises(RestoreError, match="is a PostgreSQL dump but not of a pfdb database"):
        restore(foreign)


@pytest.mark.parametrize("backend", [pytest.param("sqlite")])
def test_sqlite_restore_refuses_a_postgres_dump(db, tmp_path):
    dump = tmp_path / "x.dump"
    dump.write_bytes(b"PGDMP\x01\x0e\x00" + b"\x00" * 200)
    with pytest.raises(RestoreError, match="is a PostgreSQL dump, not a SQLite backup"):
        restore(dump)


# -- restore is atomic for other processes -------------------------------------------------
READER = """
import json, sys, time
import pfdb
from pfdb._peewee import peewee as pw

url, old, new = sys.argv[1], tuple(json.loads(sys.argv[2])), tuple(json.loads(sys.argv[3]))
database = pfdb.init_database(url)
seen = {"old": 0, "new": 0, "bad": [], "errors": []}
streak, deadline = 0, time.monotonic() + 30
while streak < 50 and time.monotonic() < deadline:
    try:
        with database.atomic():  # one read transaction: both counts from one moment
            row = database.execute_sql("SELECT (SELECT count(*) FROM configuration), "
                                       "(SELECT count(*) FROM system_logs)").fetchone()
        row = tuple(row)
    except Exception as exc:
        seen["errors"].append(f"{type(exc).__name__}: {exc}")
        continue
    if row == old:
        seen["old"] += 1
        if seen["old"] == 1:
            print("ready", flush=True)
    elif row == new:
        seen["new"] += 1
        streak += 1
    else:
        seen["bad"].append(row)
print(json.dumps(seen), flush=True)
"""


def test_restore_is_atomic_for_a_reader_in_another_process(db, backend, database_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    add_rows(40)  # the backup: 40 settings, no log entries
    saved = backup()
    Configuration.delete().execute()
    with pfdb.db_session_scope():
        SystemLog.insert_many([{"level": "INFO", "message": "x" * 2000} for _ in range(300)]).execute()
    script = tmp_path / "reader.py"
    script.write_text(READER)
    reader = processes.Popen(
        [sys.executable, str(script), database_url, "[0, 300]", "[40, 0]"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert reader.stdout.readline().strip() == "ready", reader.stderr.read()
        restore(saved.path)
        out, err = reader.communicate(timeout=60)
    finally:
        if reader.poll() is None:
            reader.kill()
    seen = json.loads(out.strip().splitlines()[-1])
    assert seen["bad"] == [], seen  # never a mix of the two states
    if backend == "postgresql":
        # pg_restore locks table after table; a reader holding one while waiting for the
        # next may be the side the server aborts. That is an error to retry, not a torn read.
        seen["errors"] = [e for e in seen["errors"] if "deadlock detected" not in e]
    assert seen["errors"] == [], seen
    assert seen["old"] >= 1 and seen["new"] >= 50


# -- restore reports the migration state ----------------------------------------------------
NOTE_MIGRATION = """
def migrate(migrator, database, *, fake=False):
    migrator.sql("CREATE TABLE extra_notes (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id))")


def rollback(migrator, database, *, fake=False):
    migrator.sql("DROP TABLE extra_notes")
"""


@pytest.fixture
def two_migrations(tmp_path, monkeypatch):
    folder = tmp_path / "migrations"
    folder.mkdir()
    for shipped in sorted(INITIAL.parent.glob("0*.py")):
        (folder / shipped.name).write_text(shipped.read_text())
    (folder / "004_extra_notes.py").write_text(NOTE_MIGRATION)
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


@pytest.mark.fresh_database  # changes the schema
def test_migrate_takes_a_backup_only_when_something_is_pending(db, two_migrations, run_cli, database_url, tmp_path):
    add_rows(2)
    code, out, err = run_cli("--database-url", database_url, "migrate")
    assert code == 0, err
    line = next(li for li in out.splitlines() if li.startswith("backup: "))
    path = Path(line.removeprefix("backup: "))
    assert path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "applied: 004_extra_notes" in out
    assert check_backup(path) == LATEST  # taken before the migration ran
    folder = path.parent
    before = sorted(folder.iterdir())
    code, out, _ = run_cli("--database-url", database_url, "migrate")
    assert code == 0 and "backup:" not in out and "nothing to migrate" in out
    assert sorted(folder.iterdir()) == before


@pytest.mark.fresh_database  # changes the schema
def test_restoring_an_older_backup_reports_pending_migrations(db, two_migrations, run_cli, database_url, monkeypatch):
    add_rows(2)
    old = backup()
    pfdb.migrations.migrate(backup=False)
    with pfdb.db_session_scope():
        pfdb.db.execute_sql("INSERT INTO extra_notes (id, user_id) VALUES (1, NULL)")
    code, out, err = run_cli("--database-url", database_url, "restore", str(old.path), "--yes")
    assert code == 0, err
    assert f"(migration {LATEST})" in out and "run pfdb migrate (pending: 004_extra_notes)" in out
    pfdb.init_database(database_url)
    assert "extra_notes" not in pfdb.db.get_tables()  # the backup's schema, exactly
    assert len(snapshot()["configuration"]) == 2
    # with MIGRATION_AUTO_UPGRADE the restore brings it up to date itself
    pfdb.init_database(database_url, migration_auto_upgrade=True)
    result = restore(old.path)
    assert result.migrated == ("004_extra_notes",) and result.pending == ()


@pytest.mark.fresh_database  # changes the schema
def test_restoring_a_backup_from_newer_code_warns(db, two_migrations, run_cli, database_url, monkeypatch):
    pfdb.migrations.migrate(backup=False)
    newer = backup()
    monkeypatch.delenv("PFDB_MIGRATIONS_DIR")  # back to code that knows the shipped migrations only
    code, out, err = run_cli("--database-url", database_url, "restore", str(newer.path), "--yes")
    assert code == 0, err
    assert "(migration 004_extra_notes)" in out
    assert "warning: the restored data has migrations this pfdb does not know: 004_extra_notes" in out


# -- info and optimize -------------------------------------------------------------------------
def test_info_describes_the_database(db, backend):
    add_rows(3)
    result = info()
    data = result.as_dict()
    assert data["backend"] == backend and result.tables["configuration"] == 3
    assert result.migrations["current"] == LATEST and result.migrations["pending"] == []
    assert result.size > 0
    if backend == "sqlite":
        assert result.settings["journal_mode"] == "wal" and result.settings["foreign_keys"] == 1
        assert result.wal_size is not None
        assert result.pool is None and data["pool"] is None  # no pool settings that mean nothing here
    else:
        assert result.pool["pool_size"] == 10
        assert {"server_version", "max_connections", "shared_buffers", "timezone"} <= set(result.settings)
        assert "in_use" in result.pool
    json.dumps(data)


def test_optimize_runs_and_reports_sizes(db, backend):
    add_rows(50)
    Configuration.delete().execute()
    result = optimize()
    assert result.size_before > 0 and result.size_after > 0
    if backend == "sqlite":
        assert result.steps[:3] == ("ANALYZE", "PRAGMA optimize", "VACUUM")
        assert pfdb.db.execute_sql("PRAGMA wal_checkpoint").fetchone()[1] == 0  # WAL truncated
    else:
        assert result.steps == ("VACUUM (ANALYZE)",)


def test_optimize_refuses_inside_a_transaction(db):
    with pfdb.db_session_scope(), pytest.raises(pfdb.UsageError, match="inside a transaction"):
        optimize()


# -- PostgreSQL tools ---------------------------------------------------------------------------
def fake_tool(folder: Path, name: str, version: str) -> None:
    folder.mkdir(exist_ok=True)
    tool = folder / name
    tool.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
    tool.chmod(0o755)


@pytest.mark.parametrize("backend", [pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_missing_or_old_pg_dump_says_what_to_install(db, tmp_path, monkeypatch):
    monkeypatch.setattr(_pg_tools, "VERSIONED_BIN_DIRS", ())
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(BackupError, match=r"pg_dump was not found.*install postgresql-client-1\d"):
        backup(tmp_path / "x.dump")
    fake_tool(empty, "pg_dump", "9.6.24")
    with pytest.raises(
        BackupError, match=r"pg_dump 9 cannot dump a server of version 1\d; install postgresql-client-1\d"
    ):
        backup(tmp_path / "x.dump")
    assert not (tmp_path / "x.dump").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


# -- the commands --------------------------------------------------------------------------------
def test_cli_backup_info_optimize_restore(run_cli, database_url, backend, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = password_url(database_url)
    code, out, err = run_cli("--database-url", url, "backup")
    assert code == 0, err
    path = Path(re.search(r"^backup: (.+)$", out, re.M).group(1))
    assert path.exists() and f"migration {LATEST}" in out
    code, out, _ = run_cli("--database-url", url, "backup", "--backup-path", str(tmp_path / "b#1e3.bak"), "--json")
    data = json.loads(out)
    assert code == 0 and data["path"] == str(tmp_path / "b#1e3.bak") and data["migration"] == LATEST

    code, out, _ = run_cli("--database-url", url, "info")
    assert code == 0 and f"backend:    {backend}" in out and "configuration" in out and f"{LATEST} (up to date)" in out
    code, out, _ = run_cli("--database-url", url, "info", "--json")
    data = json.loads(out)
    assert code == 0 and data["tables"]["migratehistory"] == 4 and data["backend"] == backend

    code, out, _ = run_cli("--database-url", url, "optimize", "--json")
    assert code == 0 and json.loads(out)["size_after"] > 0
    code, out, _ = run_cli("--database-url", url, "optimize")
    assert code == 0 and "ran: " in out and " -> " in out

    code, out, err = run_cli("--database-url", url, "restore", str(path), stdin="")
    assert code == 2 and "refusing without --yes" in err and "standard input is not a terminal" in err
    code, out, err = run_cli("--database-url", url, "restore", str(path), "--yes")
    assert code == 0, err
    assert "safety backup of the previous data: " in out and "restored: " in out
    code, out, err = run_cli("--database-url", url, "restore", str(tmp_path / "nope.db"), "--yes")
    assert code == 1 and out == "" and err.startswith("error: backup file ") and "does not exist" in err
    assert err.count("\n") == 1


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.parametrize("backend", ["sqlite"])  # the prompt is the command's, the same for both
def test_cli_restore_asks_on_a_terminal(run_cli, database_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    pfdb.init_database(database_url)
    path = backup().path
    pfdb.close_database()
    monkeypatch.setattr(sys, "stdin", Terminal())
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    code, out, _ = run_cli("--database-url", database_url, "restore", str(path))
    assert code == 1 and "cancelled; nothing was changed" in out
    monkeypatch.setattr("builtins.input", lambda prompt: "yes")
    code, out, _ = run_cli("--database-url", database_url, "restore", str(path))
    assert code == 0 and "restored: " in out


def test_cli_health(run_cli, database_url, backend):
    code, out, _ = run_cli("--database-url", database_url, "health")
    assert code == 0 and "status:     healthy" in out and f"migrations: {LATEST}" in out
    code, out, _ = run_cli("--database-url", database_url, "health", "--json")
    data = json.loads(out)
    assert code == 0 and data["status"] == "healthy" and data["migrations"] == {"current": LATEST, "pending": []}
    if backend == "postgresql":
        assert data["pool"]["in_use"] == 0


def test_cli_health_fails_for_an_unreachable_server(run_cli):
    url = f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/x"
    code, out, err = run_cli("--database-url", url, "health")
    assert code == 1 and "status:     unhealthy" in out and "error:" in out
    code, out, err = run_cli("--database-url", url, "health", "--json")
    assert code == 1 and json.loads(out)["status"] == "unhealthy"
    assert PASSWORD not in out + err


@pytest.mark.postgres
def test_no_command_prints_the_password_nor_passes_it_in_argv(run_cli, postgres_url, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    url = password_url(postgres_url)
    calls = []
    real = subprocess.Popen  # what subprocess.run starts too: every tool pfdb runs

    def spy(args, *a, **kw):
        calls.append((list(args), (kw.get("env") or {}).get("PGPASSWORD")))
        return real(args, *a, **kw)

    monkeypatch.setattr(_pg_tools.subprocess, "Popen", spy)
    outputs = []
    for argv in (
        ["backup"],
        ["backup", "--json"],
        ["info"],
        ["info", "--json"],
        ["health", "--json"],
        ["optimize", "--json"],
        ["logs", "--json"],
        ["restore", "missing.dump", "--yes"],
    ):
        outputs.append(run_cli("--database-url", url, *argv))
    saved = next(Path(line[8:]) for line in outputs[0][1].splitlines() if line.startswith("backup: "))
    outputs.append(run_cli("--database-url", url, "restore", str(saved), "--yes", "--json"))
    # an error from pg_dump itself, with the password in the URL it was given
    monkeypatch.setattr(_pg_tools, "VERSIONED_BIN_DIRS", ())
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    outputs.append(run_cli("--database-url", url, "backup"))
    assert outputs[-1][0] == 1 and "pg_dump was not found" in outputs[-1][2]
    assert [code for code, _, _ in outputs[:-1]] == [0, 0, 0, 0, 0, 0, 0, 1, 0]
    for _, out, err in outputs:
        assert PASSWORD not in out and PASSWORD not in err
    assert "postgres:***@" in outputs[3][1]
    # pg_dump and pg_restore get the password through PGPASSWORD, never in argv
    assert any("pg_dump" in args[0] for args, _ in calls) and any("--clean" in args for args, _ in calls)
    for args, env_password in calls:
        assert PASSWORD not in " ".join(args), args
        if "--version" not in args:
            assert env_password == PASSWORD, args


def test_bin_pfdb_backup_in_a_subprocess(database_url, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "MIGRATION_"))}
    env["DATABASE_URL"] = password_url(database_url)
    result = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "pfdb"), "backup", "--backup-path", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    path = Path(result.stdout.splitlines()[0].removeprefix("backup: "))
    assert path.parent == tmp_path and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert PASSWORD not in result.stdout + result.stderr
    assert result.stderr == ""  # no progress bar when stderr is not a terminal


def test_human_size():
    assert maintenance.human_size(512) == "512 bytes"
    assert maintenance.human_size(147456) == "144.0 KiB"
    assert maintenance.human_size(None) == "-"


def test_progress_bar_only_on_a_terminal_and_for_large_databases(monkeypatch):
    from pfdb.progress import BackupBar

    for stream, total, shown in ((Terminal(), 8192, True), (Terminal(), 100, False), (io.StringIO(), 8192, False)):
        monkeypatch.setattr(sys, "stderr", stream)
        bar = BackupBar()
        bar(1024, total)
        bar(total, total)
        bar.close()
        assert ("backup" in stream.getvalue()) is shown, (total, stream.getvalue())


def test_copy_and_export_bars_draw_with_the_same_bar(monkeypatch):
    from pfdb.progress import CopyBar, ProgressBar

    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    copy = CopyBar()
    for table in ("users", "products"):
        copy(table, 5, 10)
        copy(table, 10, 10)
    copy.close()
    export = ProgressBar("exporting", unit="products")
    export(1000)
    export.close()
    shown = stream.getvalue()
    assert "users" in shown and "products" in shown and "exporting" in shown


@pytest.mark.parametrize("command", ["backup", "restore", "info", "optimize", "health", "create-admin", "logs"])
def test_every_operations_command_has_help_with_an_example(run_cli, command):
    code, out, _ = run_cli(command, "--help")
    assert code == 0 and f"Example: pfdb {command}" in out


def test_health_check_does_not_import_peewee_migrate(sqlite_url):
    code = (
        f"import sys, pfdb; pfdb.init_database({sqlite_url!r}); r = pfdb.database_health_check(); "
        "print(r['status'], r['migrations']['current'], 'peewee_migrate' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["healthy", LATEST, "False"]
