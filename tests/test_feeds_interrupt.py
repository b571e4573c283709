"""Interrupted imports on both backends: only whole batches stay, the Job says why, a re-run completes them.

The subprocess tests feed ``pfdb import`` through a FIFO: the test writes one and a half
batches and waits until the first batch is committed, so the signal arrives at a known
point (the child blocked reading, its second batch half full) without sleeping for luck.
"""

from __future__ import annotations

import copy
import os
import shutil
import signal
import subprocess
import sys
import time

import processes
import pytest
from feeds_samples import catalogue_state

import pfdb
from pfdb.feeds import import_products
from pfdb.models import Job, Product, SyncHistory

BATCH = 100
HEADER = "sku,name,description,price,category,images\n"


def feed_lines(n: int = 300) -> list[str]:
    return [
        f'K-{i:04d},Item {i} – ø,"<p>line\none, ""{i}""</p>",{i % 97}.{i % 100:02d},Dept {i % 3} > Sub {i % 5},'
        f"https://img.example.com/{i}/a.jpg|https://img.example.com/{i}/b.jpg\n"
        for i in range(n)
    ]


@pytest.fixture
def feed(tmp_path):
    path = tmp_path / "feed.csv"
    path.write_text(HEADER + "".join(feed_lines()), encoding="utf-8")
    return path


# backend -> that state. The feed is always the same 300 lines and the state has no ids or
# times, so it is computed once per backend (per worker), not once per test in a database of its own.
_REFERENCES: dict[str, dict] = {}


@pytest.fixture
def reference(backend, tmp_path, request, feed):
    """The state an uninterrupted import of ``feed`` gives, computed in a database of its own."""
    if backend in _REFERENCES:
        return copy.deepcopy(_REFERENCES[backend])
    if backend == "sqlite":
        path = tmp_path / "reference.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        from conftest import pg_url

        server = request.getfixturevalue("pg_server")
        name = server.create(template=request.getfixturevalue("pg_template"))
        request.addfinalizer(lambda: (pfdb.close_database(), server.release(name)))
        url = pg_url(name)
    pfdb.init_database(url)
    import_products(feed, batch_size=BATCH)
    state = catalogue_state()
    pfdb.close_database()
    _REFERENCES[backend] = state
    return copy.deepcopy(state)


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("the import did not commit its first batch in time")
        time.sleep(0.05)


def _interrupted_cli(database_url: str, tmp_path, sig: int) -> subprocess.CompletedProcess:
    """Run ``pfdb import FIFO``, let it commit one batch, then send ``sig``."""
    fifo = tmp_path / "feed.fifo"
    os.mkfifo(fifo)
    # A suite started in the background (nohup, cmd &) runs with SIGINT ignored; the forked child
    # starts with Python's own handler all the same (tests/processes.py).
    child = processes.Popen(
        [sys.executable, "-m", "pfdb", "--database-url", database_url, "import", str(fifo), "--batch-size", str(BATCH)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with open(fifo, "w", encoding="utf-8") as writer:
            writer.write(HEADER + "".join(feed_lines()[: BATCH + BATCH // 2]))
            writer.flush()
            _wait_for(lambda: Product.select().count() >= BATCH or child.poll() is not None)
            child.send_signal(sig)
            out, err = child.communicate(timeout=60)
    except BrokenPipeError:  # the child is gone before we closed our end
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_killed_cli_import_leaves_whole_batches_and_rerun_completes(db, database_url, tmp_path, feed, reference, sig):
    pfdb.init_database(database_url)
    done = _interrupted_cli(database_url, tmp_path, sig)
    assert Product.select().count() == BATCH  # the half-read second batch was never committed
    job = Job.get()
    sync = SyncHistory.get()
    if sig == signal.SIGKILL:
        # Nothing runs after SIGKILL: the Job and its SyncHistory stay 'running' (documented).
        assert done.returncode == -signal.SIGKILL
        assert (job.status, sync.status) == ("running", "running")
    else:
        assert done.returncode == 130, done.stderr
        assert "interrupted" in done.stderr
        assert (job.status, sync.status) == ("cancelled", "cancelled")
        reason = "terminated (SIGTERM)" if sig == signal.SIGTERM else "interrupted"
        assert reason in job.error_message and f"{BATCH} created" in job.error_message
        assert sync.created_count == BATCH
    result = import_products(feed, batch_size=BATCH)
    assert (result.created, result.unchanged, result.rejected) == (300 - BATCH, BATCH, 0)
    assert catalogue_state() == reference


def test_keyboard_interrupt_in_process_cancels_the_job(db, database_url, feed, reference):
    pfdb.init_database(database_url)  # the reference fixture used a database of its own

    def stop_after_two_batches(event):
        if event.rows >= 2 * BATCH:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_products(feed, batch_size=BATCH, progress=stop_after_two_batches)
    assert Product.select().count() == 2 * BATCH
    job = Job.get()
    assert job.status == "cancelled" and "KeyboardInterrupt" in job.error_message
    assert SyncHistory.get().status == "cancelled"
    import_products(feed, batch_size=BATCH)
    assert catalogue_state() == reference


def test_a_failure_mid_import_fails_the_job_and_keeps_committed_batches(db, feed, monkeypatch):
    from pfdb.feeds import upsert

    calls = []

    def flaky(original):
        # After the second batch's products are written: the batch must roll back whole.
        def write(self, rows):
            written = original(self, rows)
            calls.append(1)
            if len(calls) == 2:
                raise RuntimeError("disk on fire")
            return written

        return write

    for cls in (upsert.SqliteWriter, upsert.PostgresWriter):
        for name in ("upsert", "merge"):
            monkeypatch.setattr(cls, name, flaky(getattr(cls, name)))
    with pytest.raises(RuntimeError, match="disk on fire"):
        import_products(feed, batch_size=BATCH)
    assert Product.select().count() == BATCH
    job = Job.get()
    assert job.status == "failed" and "disk on fire" in job.error_message
    assert SyncHistory.get().status == "failed"


def test_strict_interrupted_keeps_nothing(db, feed):
    def stop(event):
        if event.rows >= 2 * BATCH:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        import_products(feed, batch_size=BATCH, strict=True, progress=stop)
    assert Product.select().count() == 0
    assert Job.get().status == "cancelled"
