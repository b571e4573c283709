"""PostgreSQL servers of a test's own: a primary in a temporary folder, and streaming replicas of it.

The shared server on 127.0.0.1:5432 allows no replication connections and must never be
restarted, so tests that need a replica, a second server for placement, or a server they can
stop start one here: ``initdb`` into a temporary folder, on a free loopback port, run as the
``postgres`` user (PostgreSQL refuses to run as root), and removed afterwards. ``fsync=off``,
``initdb``/``pg_basebackup`` without their final sync, and a folder on the tests' tmpfs (the
``PYTEST_DEBUG_TEMPROOT`` that tests/conftest.py sets) make start-up and writes cheap (these
servers hold nothing worth keeping; initdb: 5.7 s on /tmp, 1.9 s so, on a loaded machine);
commits stay synchronous, as in production, so a committed write's WAL position is flushed and sent.

    with TempPostgres() as primary:
        replica = primary.replica()
        primary.url("postgres"), replica.url("postgres")

A test module that needs one and cannot have one (no binaries, no ``postgres`` user) is
skipped with the reason by :func:`require_server_binaries`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

_SEARCH = sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
BIN = _SEARCH[0] if _SEARCH else None


def require_server_binaries() -> None:
    """Skip the calling test when this machine cannot start a PostgreSQL server of its own."""
    if BIN is None or not (BIN / "initdb").exists():
        pytest.skip("PostgreSQL server binaries (initdb) not found under /usr/lib/postgresql/*/bin")
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("no 'postgres' system user to run a PostgreSQL server of the test's own")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_postgres(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    prefix = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
    return subprocess.run(prefix + args, check=True, capture_output=True, text=True, **kwargs)


class TempPostgres:
    """One PostgreSQL server in a temporary folder; ``stop()`` (or the ``with`` block) removes it."""

    def __init__(self, *, data_dir: Path | None = None, port: int | None = None, primary: TempPostgres | None = None):
        require_server_binaries()
        self.root = Path(tempfile.mkdtemp(prefix="pfdb-pg-", dir=os.environ.get("PYTEST_DEBUG_TEMPROOT")))
        self.data_dir = data_dir or self.root / "data"
        self.port = port or free_port()
        self.primary = primary
        self.replicas: list[TempPostgres] = []
        self.log = self.root / "server.log"
        shutil.chown(self.root, "postgres", "postgres")
        if primary is None:
            self._initdb()
        else:
            self._basebackup(primary)
        self.start()

    # -- building ------------------------------------------------------------------------------

    def _settings(self) -> str:
        return (
            f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
            f"unix_socket_directories = '{self.root}'\n"
            "fsync = off\nfull_page_writes = off\n"
            "wal_level = replica\nmax_wal_senders = 10\nhot_standby = on\n"
            "shared_buffers = 16MB\nmax_connections = 60\nlogging_collector = off\n"
        )

    def _initdb(self) -> None:
        _as_postgres(
            [str(BIN / "initdb"), "-D", str(self.data_dir), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"]
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(self._settings())
        with open(self.data_dir / "pg_hba.conf", "a") as hba:
            hba.write("\nhost replication all 127.0.0.1/32 trust\n")

    def _basebackup(self, primary: TempPostgres) -> None:
        _as_postgres(
            [
                str(BIN / "pg_basebackup"),
                "-h",
                "127.0.0.1",
                "-p",
                str(primary.port),
                "-U",
                "postgres",
                "-D",
                str(self.data_dir),
                "-R",
                "-X",
                "stream",
                "-c",
                "fast",
                "--no-sync",
            ]  # fmt: skip
        )
        with open(self.data_dir / "postgresql.conf", "a") as conf:
            conf.write(self._settings())

    # -- running -------------------------------------------------------------------------------

    def start(self) -> None:
        _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log), "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (it can be started again with ``start()``)."""
        with contextlib.suppress(subprocess.CalledProcessError):
            _as_postgres([str(BIN / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"])

    def remove(self) -> None:
        for replica in self.replicas:
            replica.remove()
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def replica(self) -> TempPostgres:
        """A streaming replica of this server (``pg_basebackup -R``), started and replaying."""
        made = TempPostgres(primary=self)
        self.replicas.append(made)
        return made

    def url(self, dbname: str = "postgres", user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def sql(self, statement: str, dbname: str = "postgres"):
        """Run one statement in autocommit and return its rows (or None)."""
        import psycopg2

        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname)
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(statement)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def wait_for_replay(self, timeout: float = 30.0) -> None:
        """Block until every replica has replayed what this primary has written so far."""
        target = self.sql("SELECT pg_current_wal_insert_lsn()")[0][0]
        deadline = time.monotonic() + timeout
        for replica in self.replicas:
            while True:
                done = replica.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'::pg_lsn")[0][0]
                if done:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"replica on port {replica.port} did not replay up to {target}")
                time.sleep(0.05)

    def __enter__(self) -> TempPostgres:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
