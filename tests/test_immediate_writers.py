"""Second writers wait for the lock instead of failing: real processes on one database.

SQLite's deferred ``BEGIN`` used to fail at once ('database is locked') when a transaction
that had read tried to write after another writer committed; pfdb's write transactions
now begin IMMEDIATE and wait on the busy timeout. Readers use ``db_read_scope`` and never
wait. When the timeout really runs out the caller gets ``DatabaseBusyError``.
"""

from __future__ import annotations

import csv
import os
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import processes
import pytest

import pfdb
from pfdb import DatabaseBusyError, Product, db_read_scope, db_session_scope
from pfdb._peewee import peewee as pw
from pfdb.errors import ReadOnlyDatabaseError

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def start(script: Path, *args: str, env: dict | None = None) -> processes.Popen:
    return processes.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**ENV, **(env or {})},
    )


def finish(proc: processes.Popen, timeout: float = 120) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def write_feed(path: Path, prefix: str, rows: int) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sku", "name", "price", "inventory_quantity", "category"])
        for i in range(rows):
            writer.writerow(
                [
                    f"{prefix}-{i:05d}",
                    f"{prefix} product {i}",
                    f"{1 + i % 90}.{i % 100:02d}",
                    str(i % 7),
                    f"{prefix} dept > Sub {i % 5}",
                ]
            )
    return path


def sqlite_file(url: str) -> str:
    return url.removeprefix("sqlite:///")


def release_together(procs: list[processes.Popen], go: Path, timeout: float = 60) -> None:
    """Wait until every process is ready (or one died), then let them all go at once."""
    deadline = time.monotonic() + timeout
    while (
        len(list(go.parent.glob(go.name + ".ready*"))) < len(procs)
        and time.monotonic() < deadline
        and all(p.poll() is None for p in procs)
    ):
        time.sleep(0.02)
    go.touch()


# -- 8 processes x 200 read-modify-write increments ------------------------------------------------
COUNTER = """
    import os, sys, time
    from pathlib import Path
    import pfdb
    from pfdb import Product, db_session_scope, for_update
    pfdb.init_database(sys.argv[1])
    if sys.argv[4] == "keep":  # a long-lived worker holds its connection; the others open one per scope
        pfdb.db.connect()
    Path(sys.argv[2]).with_suffix(f".ready{os.getpid()}").touch()
    while not Path(sys.argv[2]).exists():  # all start together: the most contention
        time.sleep(0.005)
    for _ in range(int(sys.argv[3])):
        with db_session_scope():
            row = for_update(Product.select().where(Product.sku == "COUNTER")).get()  # read ...
            Product.update(inventory_quantity=row.inventory_quantity + 1).where(
                Product.id == row.id).execute()  # ... then write
    print(pfdb.__file__)
"""


def test_eight_processes_increment_one_row_exactly(database_url, tmp_path):
    pfdb.init_database(database_url)
    Product.create(sku="COUNTER", name="counter", inventory_quantity=0)
    pfdb.close_database()
    script = tmp_path / "counter.py"
    script.write_text(textwrap.dedent(COUNTER))
    go = tmp_path / "go"
    url = database_url
    if url.startswith("postgresql"):  # 1600 serialised commits: don't wait for this shared disk's flushes
        url += "?options=-c%20synchronous_commit%3Doff"
    procs = [start(script, url, str(go), "200", "keep" if n % 2 else "per-scope") for n in range(8)]
    release_together(procs, go)
    results = [finish(p) for p in procs]
    assert [code for code, _, _ in results] == [0] * 8, [err[-600:] for _, _, err in results]
    assert all(out.strip().startswith(str(ROOT)) for _, out, _ in results)  # this checkout's pfdb
    pfdb.init_database(database_url)
    assert Product.get(Product.sku == "COUNTER").inventory_quantity == 1600


# -- imports beside other writers (SQLite: one write lock for the whole file) ----------------------
IMPORT = """
    import os, sys, time
    from pathlib import Path
    import pfdb
    from pfdb.feeds import import_products
    pfdb.init_database(sys.argv[1])
    Path(sys.argv[2]).with_suffix(f".ready{os.getpid()}").touch()
    while not Path(sys.argv[2]).exists():
        time.sleep(0.005)
    go = Path(sys.argv[2])
    beside = go.with_suffix(".beside")  # a writer or optimize beside this import has worked
    mine = go.with_suffix(f".worked{os.getpid()}")

    def another_import_worked():
        return any(p != mine for p in go.parent.glob(go.name + ".worked*"))

    def wait_for_the_other_once(progress, deadline=[None]):
        # After its first batch the import lets the other process catch up, so the overlap does
        # not depend on how the scheduler of a loaded machine shares the cores. Two imports
        # wait for each other's first batch (a lone wait here used to run out its 30 s).
        if deadline[0] is None:
            mine.touch()
            deadline[0] = time.monotonic() + 30
            while not (beside.exists() or another_import_worked()) and time.monotonic() < deadline[0]:
                time.sleep(0.01)

    result = import_products(sys.argv[3], batch_size=int(sys.argv[4]), progress=wait_for_the_other_once)
    print(result.rows, result.created, result.rejected)
"""

WRITER = """
    import os, sys, time
    from pathlib import Path
    import pfdb
    from pfdb import Product
    pfdb.init_database(sys.argv[1])
    Path(sys.argv[2]).with_suffix(f".ready{os.getpid()}").touch()
    while not Path(sys.argv[2]).exists():
        time.sleep(0.005)
    n = 0
    while not Path(sys.argv[3]).exists():
        if n % 2:  # an autocommit statement, and a save() in its own transaction
            Product.insert(sku=f"W-{n}", name="beside the import").execute()
        else:
            Product.create(sku=f"W-{n}", name="beside the import")
        n += 1
        if n == 12:
            Path(sys.argv[2]).with_suffix(".beside").touch()
        time.sleep(0.01)
    print(n)
"""


def test_two_imports_of_different_feeds_at_once_both_finish(sqlite_url, tmp_path):
    script = tmp_path / "import.py"
    script.write_text(textwrap.dedent(IMPORT))
    go = tmp_path / "go"
    feeds = [write_feed(tmp_path / f"{p}.csv", p, 3000) for p in ("A", "B")]
    procs = [start(script, sqlite_url, str(go), str(feed), "40") for feed in feeds]
    release_together(procs, go)
    results = [finish(p) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], [err[-600:] for _, _, err in results]
    assert [out.split() for _, out, _ in results] == [["3000", "3000", "0"]] * 2
    pfdb.init_database(sqlite_url)
    for prefix in ("A", "B"):
        assert Product.select().where(Product.sku.startswith(f"{prefix}-")).count() == 3000


def test_two_imports_of_one_feed_at_once_create_each_product_once(sqlite_url, tmp_path):
    # Both find an empty table and merge their batches (Writer.merge): under the write lock a
    # batch tells the rows it created (ids above the highest before it) from those the other
    # import had created first, which it finds unchanged.
    script = tmp_path / "import.py"
    script.write_text(
        textwrap.dedent(
            IMPORT.replace(
                "result.rows, result.created, result.rejected",
                "result.rows, result.created, result.updated, result.unchanged",
            )
        )
    )
    go = tmp_path / "go"
    feed = write_feed(tmp_path / "A.csv", "A", 3000)
    procs = [start(script, sqlite_url, str(go), str(feed), "40") for _ in range(2)]
    release_together(procs, go)
    results = [finish(p) for p in procs]
    assert [code for code, _, _ in results] == [0, 0], [err[-600:] for _, _, err in results]
    counts = [[int(n) for n in out.split()] for _, out, _ in results]
    assert all(rows == created + unchanged == 3000 and updated == 0 for rows, created, updated, unchanged in counts)
    # Each waited after its first batch for the other's, so they ran side by side; which one
    # then creates the rest is the scheduler's choice, so only the sum is asserted.
    assert counts[0][1] + counts[1][1] == 3000
    pfdb.init_database(sqlite_url)
    assert Product.select().where(Product.sku.startswith("A-")).count() == 3000


def test_import_beside_a_writer_every_10_ms_succeeds(sqlite_url, tmp_path):
    (tmp_path / "import.py").write_text(textwrap.dedent(IMPORT))
    (tmp_path / "writer.py").write_text(textwrap.dedent(WRITER))
    go, stop = tmp_path / "go", tmp_path / "stop"
    feed = write_feed(tmp_path / "A.csv", "A", 3000)
    importer = start(tmp_path / "import.py", sqlite_url, str(go), str(feed), "40")
    writer = start(tmp_path / "writer.py", sqlite_url, str(go), str(stop))
    release_together([importer, writer], go)
    imported = finish(importer)
    stop.touch()
    written = finish(writer)
    assert imported[0] == 0, imported[2][-600:]
    assert written[0] == 0, written[2][-600:]
    assert imported[1].split() == ["3000", "3000", "0"]
    writes = int(written[1])
    assert writes > 10  # it really wrote while the import ran
    pfdb.init_database(sqlite_url)
    assert Product.select().where(Product.sku.startswith("A-")).count() == 3000
    assert Product.select().where(Product.sku.startswith("W-")).count() == writes


OPTIMIZE = """
    import os, sys, time
    from pathlib import Path
    import pfdb
    from pfdb.maintenance import optimize
    pfdb.init_database(sys.argv[1])
    Path(sys.argv[2]).with_suffix(f".ready{os.getpid()}").touch()
    while not Path(sys.argv[2]).exists():
        time.sleep(0.005)
    runs = 0
    while not Path(sys.argv[3]).exists() or not runs:  # again and again: each run commits three times
        assert "VACUUM" in optimize().steps  # what `pfdb optimize` runs
        runs += 1
        if runs == 2:
            Path(sys.argv[2]).with_suffix(".beside").touch()
        time.sleep(0.05)
    print(runs)
"""


def test_optimize_during_an_import_both_finish(sqlite_url, tmp_path):
    (tmp_path / "import.py").write_text(textwrap.dedent(IMPORT))
    (tmp_path / "optimize.py").write_text(textwrap.dedent(OPTIMIZE))
    go, stop = tmp_path / "go", tmp_path / "stop"
    feed = write_feed(tmp_path / "A.csv", "A", 4000)
    with sqlite3.connect(sqlite_file(sqlite_url)) as conn:  # 8 MB for VACUUM to copy: it holds the lock a while
        conn.execute("CREATE TABLE ballast (b BLOB)")
        conn.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 4000) "
            "INSERT INTO ballast SELECT randomblob(2000) FROM n"
        )
    conn.close()
    importer = start(tmp_path / "import.py", sqlite_url, str(go), str(feed), "40")
    optimizer = start(tmp_path / "optimize.py", sqlite_url, str(go), str(stop))
    release_together([importer, optimizer], go)
    imported = finish(importer)
    stop.touch()
    optimized = finish(optimizer)
    assert optimized[0] == 0, optimized[2][-600:]
    assert int(optimized[1]) >= 2  # it ran beside the import, not only after it
    assert imported[0] == 0, imported[2][-600:]
    assert imported[1].split() == ["4000", "4000", "0"]
    pfdb.init_database(sqlite_url)
    assert Product.select().where(Product.sku.startswith("A-")).count() == 4000


# -- waiting, and giving up ------------------------------------------------------------------------
class Holder(threading.Thread):
    """Holds the write lock for ``seconds``, or until ``release()``: a test done early need not wait it out."""

    def __init__(self, target) -> None:
        super().__init__(target=target)
        self.released = threading.Event()

    def release(self) -> None:
        self.released.set()


def hold_write_lock(path: str, seconds: float) -> Holder:
    """Another connection (its own sqlite3 handle, as another process would be) holds the write lock."""
    locked = threading.Event()

    def hold() -> None:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE products SET name = 'pending'")
        locked.set()
        thread.released.wait(seconds)
        conn.execute("COMMIT")
        conn.close()

    thread = Holder(hold)
    thread.start()
    assert locked.wait(10)
    return thread


def test_writers_wait_for_the_lock_autocommit_and_transactions_alike(sqlite_url):
    pfdb.init_database(sqlite_url, pool_timeout=10)
    Product.create(sku="SEED", name="seed")
    for write in (
        lambda: Product.insert(sku="AUTO", name="autocommit").execute(),
        lambda: Product.create(sku="SAVE", name="own transaction"),
        lambda: Product.update(name="in a scope").where(Product.sku == "SEED").execute(),
    ):
        holder = hold_write_lock(sqlite_file(sqlite_url), 0.4)
        started = time.monotonic()
        with db_session_scope():
            Product.select().count()  # a read first: the case a deferred BEGIN could not upgrade
            write()
        assert time.monotonic() - started > 0.2  # it waited for the holder ...
        holder.join()
    assert Product.select().where(Product.sku.in_(["AUTO", "SAVE"])).count() == 2  # ... and wrote
    assert Product.get(Product.sku == "SEED").name == "in a scope"


def test_busy_timeout_that_runs_out_is_a_database_busy_error(sqlite_url):
    pfdb.init_database(sqlite_url, pool_timeout=0.3)
    holder = hold_write_lock(sqlite_file(sqlite_url), 1.0)
    try:
        with pytest.raises(
            DatabaseBusyError,
            match=r"another writer held the database write lock for 0\.[3-9] s "
            r"\(busy timeout 0\.3 s\)",
        ) as caught:
            with db_session_scope():
                Product.create(sku="LATE", name="too late")
        assert "DATABASE_POOL_TIMEOUT" in caught.value.hint
        assert 0.25 < caught.value.waited < 1.5
        with pytest.raises(DatabaseBusyError):  # autocommit statements too
            Product.insert(sku="LATE", name="too late").execute()
    finally:
        holder.release()  # seen what it needed: no need to wait the second out
        holder.join()
    assert not Product.select().where(Product.sku == "LATE").exists()


def test_cli_reports_the_busy_writer_not_the_server(sqlite_url, tmp_path, run_cli):
    feed = write_feed(tmp_path / "A.csv", "A", 10)
    holder = hold_write_lock(sqlite_file(sqlite_url), 1.0)
    try:
        code, out, err = run_cli("import", str(feed), env={"DATABASE_URL": sqlite_url, "DATABASE_POOL_TIMEOUT": "0.3"})
    finally:
        holder.release()  # seen what it needed: no need to wait the second out
        holder.join()
    assert code == 1
    assert "another writer held the database write lock" in err
    assert "server" not in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_connecting_while_another_process_locks_the_file_is_a_busy_error(sqlite_url, run_cli):
    # An exclusive-locking connection keeps others from even reading the schema: the
    # connection pragmas meet it, as a CLI command meets a busy file at start.
    holder = sqlite3.connect(sqlite_file(sqlite_url), isolation_level=None)
    holder.execute("PRAGMA locking_mode = EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    holder.execute("COMMIT")  # the lock stays until the connection closes
    try:
        pfdb.init_database(sqlite_url, pool_timeout=0.001)
        with pytest.raises(
            DatabaseBusyError, match="another process held a lock on .* while opening the database"
        ) as caught:
            pfdb.db.connect()
        assert "server" not in str(caught.value)
        pfdb.close_database()
        code, _, err = run_cli("status", env={"DATABASE_URL": sqlite_url, "DATABASE_POOL_TIMEOUT": "0.001"})
        assert code == 1
        assert err.startswith("error: another process held a lock on") and "server" not in err
    finally:
        holder.close()
    pfdb.init_database(sqlite_url, pool_timeout=0.001)
    pfdb.db.connect()  # free again: it opens
    assert Product.select().count() == 0


# -- the read scope --------------------------------------------------------------------------------
def test_read_scope_does_not_wait_behind_a_writer(sqlite_url):
    pfdb.init_database(sqlite_url, pool_timeout=10)
    Product.create(sku="R-1", name="committed")
    holder = hold_write_lock(sqlite_file(sqlite_url), 1.0)
    try:
        started = time.monotonic()
        with db_read_scope():
            seen = [p.name for p in Product.select()]
        assert time.monotonic() - started < 0.5
        assert seen == ["committed"]  # the committed snapshot, not the holder's pending change
    finally:
        holder.release()  # seen what it needed: no need to wait the second out
        holder.join()


def test_read_scope_is_read_only_and_consistent(db, backend):
    Product.create(sku="R-1", name="one")
    with pytest.raises((pw.DatabaseError, ReadOnlyDatabaseError)) as refused:
        with db_read_scope():
            Product.insert(sku="R-2", name="refused").execute()
    if backend == "sqlite":  # said as what it is, not as a read-only file
        assert "a write inside db_read_scope()" in str(refused.value)
    db.close()
    Product.create(sku="R-3", name="a write after the read scope works")
    assert [p.sku for p in Product.select().order_by(Product.sku)] == ["R-1", "R-3"]
    with db_read_scope():  # inside a write scope it is a savepoint of it
        with db_session_scope():
            pass
    with db_session_scope():
        with db_read_scope():
            assert Product.select().count() == 2
        Product.create(sku="R-4", name="still writable")
    assert Product.select().count() == 3


def test_export_reads_beside_a_writer_without_waiting(sqlite_url, tmp_path):
    from pfdb.feeds import export_products

    pfdb.init_database(sqlite_url, pool_timeout=10)
    Product.create(sku="E-1", name="exported")
    holder = hold_write_lock(sqlite_file(sqlite_url), 1.0)
    try:
        started = time.monotonic()
        result = export_products(tmp_path / "out.csv")
        assert time.monotonic() - started < 0.5
    finally:
        holder.release()  # seen what it needed: no need to wait the second out
        holder.join()
    assert result.products == 1
    assert "exported" in (tmp_path / "out.csv").read_text(encoding="utf-8")  # the snapshot before 'pending'


def test_a_deferred_transaction_that_cannot_upgrade_says_so(sqlite_url):
    pfdb.init_database(sqlite_url, pool_timeout=10)
    Product.create(sku="D-1", name="one")
    with pfdb.db.atomic("DEFERRED"):  # what every transaction was before: read first ...
        Product.select().count()
        holder = hold_write_lock(sqlite_file(sqlite_url), 0.3)
        try:
            started = time.monotonic()
            with pytest.raises(DatabaseBusyError, match="begun DEFERRED and already reading, cannot wait") as caught:
                Product.insert(sku="D-2", name="two").execute()  # ... then write: SQLite refuses at once
            assert time.monotonic() - started < 1
            assert "db_session_scope()" in caught.value.hint
        finally:
            holder.join()
    assert repr(pfdb.db.obj).startswith("<pfdb SqliteDatabase sqlite:///")
