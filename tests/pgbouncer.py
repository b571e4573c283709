"""A PgBouncer of a test's own, in transaction pooling mode, in front of the shared PostgreSQL.

Debian's ``pgbouncer`` binary is started on a free loopback port with a configuration file in a
temporary folder: ``pool_mode = transaction`` and a server pool of 2, so that clients really
share server connections (a client's next transaction may run on another one). It runs as
the ``postgres`` user when the tests run as root (PgBouncer refuses root), and is stopped and
removed afterwards.

    with PgBouncer(server_port=5432) as bouncer:
        bouncer.url("pfdb_test_x")   # postgresql://postgres@127.0.0.1:<port>/pfdb_test_x

Without the binary the calling test is skipped with the reason, unless
``PFDB_REQUIRE_PGBOUNCER=1`` (``.ci/run`` sets it): then that is a failure.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest
from pg_servers import free_port

BINARY = shutil.which("pgbouncer") or ("/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None)
REQUIRE = os.environ.get("PFDB_REQUIRE_PGBOUNCER", "").strip().lower() in ("1", "true", "yes")


def require_pgbouncer() -> None:
    """Skip (or, with ``PFDB_REQUIRE_PGBOUNCER=1``, fail) when PgBouncer is not installed."""
    if BINARY is None:
        reason = "pgbouncer is not installed (apt-get install pgbouncer)"
        if REQUIRE:
            pytest.fail(f"{reason} (PFDB_REQUIRE_PGBOUNCER=1)")
        pytest.skip(reason)


class PgBouncer:
    """One PgBouncer process; ``stop()`` (or the ``with`` block) ends it and removes its folder."""

    def __init__(self, *, server_host: str = "127.0.0.1", server_port: int = 5432, pool_size: int = 2):
        require_pgbouncer()
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="pfdb-pgbouncer-", dir=os.environ.get("PYTEST_DEBUG_TEMPROOT")))
        (self.folder / "userlist.txt").write_text('"postgres" ""\n"root" ""\n')
        self.log = self.folder / "pgbouncer.log"
        (self.folder / "pgbouncer.ini").write_text(
            f"""[databases]
* = host={server_host} port={server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.folder}/userlist.txt
pool_mode = transaction
default_pool_size = {pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 200
server_reset_query =
server_lifetime = 3600
server_idle_timeout = 60
query_wait_timeout = 60
server_login_retry = 1
logfile = {self.log}
pidfile = {self.folder}/pgbouncer.pid
"""
        )
        self.as_root = os.geteuid() == 0
        if self.as_root:  # PgBouncer refuses to run as root: its folder must be the user's
            entry = pwd.getpwnam("postgres")
            for path in (self.folder, *self.folder.iterdir()):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        args = [BINARY, "-q", str(self.folder / "pgbouncer.ini")]
        if self.as_root:
            args[1:1] = ["-u", "postgres"]
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read() if self.process.stderr else ""
                log = self.log.read_text() if self.log.exists() else ""
                self.remove()
                raise RuntimeError(f"pgbouncer exited with {self.process.returncode}: {err.strip()} {log[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on port {self.port} within {timeout:g} s")

    def url(self, dbname: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)  # immediate shutdown: closes its server connections
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.remove()

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
