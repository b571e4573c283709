"""No debris after a crash (issue 10, §7): kill -9 of the CLI during backup, export and restore.

The CLI runs as a real subprocess. To kill it mid-copy without racing the clock, the child
wraps the API function the command calls so that its own progress callback says "started"
(a file) and then sleeps: the copy itself is the real one, only paced. On PostgreSQL,
``pg_dump``/``pg_restore`` are held by a table lock the test takes, so pfdb is killed while
its child is verifiably running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import processes
import pytest

import pfdb
from pfdb import Configuration, Product, _files

ROOT = Path(__file__).resolve().parent.parent

# The CLI, with backup() and export_products() paced by a progress callback that marks the
# start (argv[1]) and sleeps; everything else as bin/pfdb runs it.
PACED_CLI = textwrap.dedent("""
    import os, sys, time
    import pfdb.feeds, pfdb.maintenance
    started = sys.argv[1]

    def pace(*_):
        open(started, "a").close()
        time.sleep(0.5)

    real_backup, real_export = pfdb.maintenance.backup, pfdb.feeds.export_products

    def backup(path=None, *, progress=None, **kwargs):
        def both(done, total):
            if progress is not None:
                progress(done, total)
            pace()
        return real_backup(path, progress=both, **kwargs)

    def export_products(output=None, **kwargs):
        inner = kwargs.get("progress")
        def both(count):
            if inner is not None:
                inner(count)
            pace()
        return real_export(output, **{**kwargs, "progress": both, "page_size": 50})

    pfdb.maintenance.backup, pfdb.feeds.export_products = backup, export_products
    from pfdb.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def start_cli(tmp_path: Path, *argv: str, paced: bool = True) -> tuple[processes.Popen, Path]:
    started = tmp_path / "started"
    started.unlink(missing_ok=True)
    cmd = [sys.executable, "-c", PACED_CLI, str(started), *argv] if paced else [sys.executable, "-m", "pfdb", *argv]
    child = processes.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return child, started


def wait_for(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def kill9(child: processes.Popen) -> None:
    child.send_signal(signal.SIGKILL)
    child.communicate(timeout=30)
    assert child.returncode == -signal.SIGKILL


def run_cli(tmp_path: Path, *argv: str) -> subprocess.CompletedProcess:
    return processes.run(
        [sys.executable, "-m", "pfdb", *argv], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120
    )


def children_of(pid: int) -> list[int]:
    """Pids whose parent is ``pid`` (from /proc: a Linux test, like the parent-death signal)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


def hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def fill(megabytes: int) -> None:
    """Enough rows that a SQLite backup takes several steps (4 MiB each)."""
    chunk = os.urandom(20_000).hex()  # 40 KB of text per row
    rows = [{"key": f"fill.{i}", "value": chunk} for i in range(megabytes * 25)]
    with pfdb.db_session_scope():
        for start in range(0, len(rows), 100):
            Configuration.insert_many(rows[start : start + 100]).execute()


# -- backup ------------------------------------------------------------------------------------
def test_kill_9_during_a_sqlite_backup_leaves_no_final_file_and_the_next_backup_cleans_up(sqlite_url, tmp_path):
    pfdb.init_database(sqlite_url)
    fill(14)
    pfdb.close_database()
    folder = tmp_path / "backups"
    child, started = start_cli(tmp_path, "--database-url", sqlite_url, "backup", "--backup-path", f"{folder}/")
    wait_for(lambda: started.exists() or child.poll() is not None, "the backup to start copying")
    kill9(child)
    assert visible(folder) == []  # nothing under a final name, not even an empty one
    debris = hidden(folder)
    assert debris and all(_files._TEMP.match(name) for name in debris)  # what it left is recognisably pfdb's

    result = run_cli(tmp_path, "--database-url", sqlite_url, "backup", "--backup-path", f"{folder}/")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("removed: ") == len(debris)
    assert hidden(folder) == [] and len(visible(folder)) == 1
    pfdb.init_database(sqlite_url)
    from pfdb.maintenance import check_backup

    assert check_backup(folder / visible(folder)[0]) == "004_tenant_registry"


def test_two_backups_in_one_second_get_two_whole_files(db, tmp_path):
    from pfdb.maintenance import backup

    first, second = backup(tmp_path), backup(tmp_path)
    assert first.path != second.path and first.path.stat().st_size == second.path.stat().st_size > 0
    assert hidden(tmp_path) == []


def test_a_running_writers_temporary_file_is_left_alone(tmp_path):
    mine = _files.temp_for(tmp_path / "x.db")  # this process: alive
    orphan = tmp_path / ".x.db.pfdb-999999999-0123abcd.tmp"  # no such process
    orphan.write_bytes(b"half")
    Path(f"{orphan}-journal").write_bytes(b"j")
    other = tmp_path / ".notes.123.tmp"  # another program's: not pfdb's to judge
    other.write_text("x")
    later = time.time() + 5
    assert sorted(p.name for p in _files.sweep(tmp_path, started=later)) == [orphan.name, f"{orphan.name}-journal"]
    assert mine.exists() and other.exists()
    orphan.write_bytes(b"half")
    assert _files.sweep(tmp_path, started=time.time() - 60) == []  # newer than the run: not yet judged


@pytest.mark.postgres
def test_kill_9_during_a_postgres_backup_takes_pg_dump_along(postgres_url, tmp_path):
    import psycopg2

    folder = tmp_path / "backups"
    holder = psycopg2.connect(postgres_url)
    try:
        holder.cursor().execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")  # pg_dump will wait for it
        child, _ = start_cli(
            tmp_path, "--database-url", postgres_url, "backup", "--backup-path", f"{folder}/", paced=False
        )
        wait_for(lambda: children_of(child.pid) or child.poll() is not None, "pg_dump to start")
        dumps = children_of(child.pid)
        kill9(child)
        wait_for(lambda: not any(alive(pid) for pid in dumps), "pg_dump to end with pfdb", timeout=10)
    finally:
        holder.rollback()
        holder.close()
    assert visible(folder) == [] and hidden(folder)
    result = run_cli(tmp_path, "--database-url", postgres_url, "backup", "--backup-path", f"{folder}/")
    assert result.returncode == 0, result.stderr
    assert "removed: " in result.stdout and hidden(folder) == [] and len(visible(folder)) == 1


def test_the_guard_that_takes_children_along_starts_no_process_of_its_own():
    """prctl comes from the libc already loaded: ctypes' find_library("c") ran ``ldconfig -p``."""
    code = textwrap.dedent("""
        import subprocess
        started = []
        real = subprocess.Popen
        subprocess.Popen = lambda args, *a, **k: started.append(args) or real(args, *a, **k)
        from pfdb import _files
        guard = _files.child_guard()
        print(sorted(guard), started)
    """)
    result = processes.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env())
    assert result.stdout.strip() == "['preexec_fn', 'start_new_session'] []", result.stderr


# -- restore -----------------------------------------------------------------------------------
@pytest.mark.postgres
def test_kill_9_during_a_postgres_restore_leaves_the_database_as_it_was(postgres_url, tmp_path):
    import psycopg2

    from pfdb.maintenance import backup

    pfdb.init_database(postgres_url)
    Configuration.set("state", "in the backup")
    old = backup(tmp_path / "old.dump")
    Configuration.set("state", "current")
    Product.create(sku="AFTER-BACKUP", name="made after the backup")
    # a table a later migration made: the restore drops it, inside its own transaction
    pfdb.db.execute_sql("CREATE TABLE later_notes (id INTEGER PRIMARY KEY, user_id INTEGER REFERENCES users (id))")
    pfdb.close_database()

    def state() -> tuple:
        pfdb.init_database(postgres_url)
        try:
            return (
                Configuration.get_value("state"),
                Product.select().where(Product.sku == "AFTER-BACKUP").exists(),
                "later_notes" in pfdb.db.get_tables(),
            )
        finally:
            pfdb.close_database()

    holder = psycopg2.connect(postgres_url)
    watcher = psycopg2.connect(postgres_url)
    watcher.autocommit = True

    def restore_sessions(waiting: bool = False) -> int:
        with watcher.cursor() as cur:
            cur.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name IN ('pg_restore', 'psql') "
                "AND datname = current_database()" + (" AND wait_event_type = 'Lock'" if waiting else "")
            )
            return cur.fetchone()[0]

    try:
        holder.cursor().execute("LOCK TABLE products IN ACCESS SHARE MODE")  # pg_restore's DROP waits for it
        child, _ = start_cli(tmp_path, "--database-url", postgres_url, "restore", str(old.path), "--yes", paced=False)
        wait_for(lambda: restore_sessions(waiting=True) or child.poll() is not None, "pg_restore to wait")
        restorers = children_of(child.pid)
        assert restorers, "pg_restore is pfdb's child"
        kill9(child)
        wait_for(lambda: not any(alive(pid) for pid in restorers), "pg_restore to end with pfdb", timeout=10)
    finally:
        holder.rollback()  # the orphaned session may now take its locks, then finds its client gone
        holder.close()
    wait_for(lambda: restore_sessions() == 0, "the killed restore's session to end", timeout=30)
    watcher.close()
    assert state() == ("current", True, True)  # as it was: not half restored, and not restored behind our back
    # the safety backup the killed run finished is whole; a new restore works from here
    result = run_cli(tmp_path, "--database-url", postgres_url, "restore", str(old.path), "--yes")
    assert result.returncode == 0, result.stderr
    assert state() == ("in the backup", False, False)


# -- export ------------------------------------------------------------------------------------
def test_kill_9_during_an_export_leaves_no_file_and_the_next_export_cleans_up(database_url, tmp_path):
    pfdb.init_database(database_url)
    with pfdb.db_session_scope():
        Product.insert_many(
            [{"sku": f"E-{i:04d}", "name": f"Product {i}", "price": "1.00"} for i in range(300)]
        ).execute()
    pfdb.close_database()
    out = tmp_path / "out"
    out.mkdir()
    target = out / "catalogue.csv"
    child, started = start_cli(tmp_path, "--database-url", database_url, "export", str(target))
    wait_for(lambda: started.exists() or child.poll() is not None, "the export to write its first page")
    kill9(child)
    assert visible(out) == [] and len(hidden(out)) == 1

    result = run_cli(tmp_path, "--database-url", database_url, "export", str(target))
    assert result.returncode == 0, result.stderr
    assert visible(out) == ["catalogue.csv"] and hidden(out) == []
    assert len(target.read_text().splitlines()) == 301
