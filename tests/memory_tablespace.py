"""A tablespace in memory for the test databases, when asked for and the PostgreSQL server runs on this machine.

On the shared server's disk (ext4 here) a test database cost about 95 ms of CPU to create from
the template and drop again, most of it the kernel's: CREATE DATABASE makes a few hundred files
(ext4 looks for a free inode past the many just deleted) and DROP DATABASE unlinks them and waits
for a checkpoint's fsyncs. In a folder under /dev/shm the same pair cost 35 ms, and a drop 12 ms
of wall time instead of 90. A run makes about 160 such databases, and every table a test writes,
empties or creates lives there too.

It is opt-in (``PFDB_TEST_MEMORY_TABLESPACE=1``; ``.ci/run`` sets it) because PostgreSQL's manual
warns that a tablespace on a RAM disk "risks the reliability of the entire cluster": if the
machine goes down uncleanly while a run is writing there, crash recovery meets WAL that wrote
into a folder that no longer exists, and the server does not start until it is repaired by hand
(at the least, that folder made again, owned by the server's user; the log names it). A
disposable CI machine can take that risk; a developer's own server with data on it should not
take it without being asked. Each worker drops its tablespace at the end and then checkpoints, so
no WAL about it is ever replayed after a run that ended; the next run drops what a killed one
left (its process is gone).

The tablespace is made only when it can be done cleanly: the server's data directory is on this
machine, a folder can be given to the server's own user (we are that user, or root), and we are
a superuser. Otherwise the test databases go to the server's default tablespace.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid

from psycopg2 import sql

ENABLED = os.environ.get("PFDB_TEST_MEMORY_TABLESPACE", "").strip().lower() in ("1", "true", "yes")
PREFIX = "pfdb_test_ram_"
_NAME = re.compile(rf"^{PREFIX}(\d+)_[0-9a-f]+$")
ROOT = "/dev/shm"


def create(conn) -> str | None:
    """A new tablespace in memory for this process's test databases, or None where it cannot be made."""
    folder = _folder_for_the_server(conn)
    if folder is None:
        return None
    name = f"{PREFIX}{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE TABLESPACE {} LOCATION %s").format(sql.Identifier(name)), (folder,))
    except Exception:
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return name


def drop(conn, name: str) -> None:
    """Drop the tablespace (its databases must be gone) and the folder it lived in.

    The checkpoint comes before the folder goes: from then on crash recovery starts past every
    record that wrote into it.
    """
    folder = _location(conn, name)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("DROP TABLESPACE IF EXISTS {}").format(sql.Identifier(name)))
        cur.execute("CHECKPOINT")
    if folder and folder.startswith(os.path.join(ROOT, "pfdb-test-tablespace-")):  # only a folder we made
        shutil.rmtree(folder, ignore_errors=True)


def drop_stale(conn) -> list[str]:
    """Drop the tablespaces (and their databases) that runs killed on this machine left behind.

    Only for a server on this machine: its tablespaces were made by runs here, whose process
    ids mean something here. A run elsewhere against the same server leaves them alone.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT spcname FROM pg_tablespace WHERE spcname LIKE %s", (PREFIX + "%",))
        names = [name for (name,) in cur.fetchall()]
    if not names or _data_directory_here(conn) is None:
        return []
    dropped = []
    for name in names:
        match = _NAME.match(name)
        if not match or _alive(int(match.group(1))):
            continue
        try:
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT datname FROM pg_database d JOIN pg_tablespace t ON t.oid = d.dattablespace"
                    " WHERE t.spcname = %s",
                    (name,),
                )
                for (database,) in cur.fetchall():
                    cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))
            drop(conn, name)
        except Exception:  # another run cleaning up at the same moment: it is theirs to finish
            continue
        dropped.append(name)
    return dropped


def _folder_for_the_server(conn) -> str | None:
    """An empty folder in memory owned by the server's user, or None."""
    if not os.path.isdir(ROOT) or not os.access(ROOT, os.W_OK | os.X_OK):
        return None
    data_directory = _data_directory_here(conn)
    if data_directory is None:
        return None
    owner = os.stat(data_directory)
    folder = tempfile.mkdtemp(prefix="pfdb-test-tablespace-", dir=ROOT)
    try:
        os.chown(folder, owner.st_uid, owner.st_gid)
    except OSError:
        os.rmdir(folder)
        return None
    return folder


def _data_directory_here(conn) -> str | None:
    """The server's data directory when it is on this machine and we are a superuser, else None."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            if not cur.fetchone()[0]:
                return None
            cur.execute("SHOW data_directory")
            data_directory = cur.fetchone()[0]
        os.stat(data_directory)  # not on this machine (or not ours to see): FileNotFoundError
        return data_directory if _same_server(conn, data_directory) else None
    except Exception:
        return None


def _same_server(conn, data_directory: str) -> bool:
    """The data directory we see is the server's own, not a namesake: its postmaster.pid names the port."""
    try:
        with open(os.path.join(data_directory, "postmaster.pid")) as pid_file:
            lines = pid_file.read().splitlines()
    except OSError:
        return False
    with conn.cursor() as cur:
        cur.execute("SHOW port")
        port = cur.fetchone()[0]
    return len(lines) > 3 and lines[3].strip() == str(port)


def _location(conn, name: str) -> str | None:
    with conn.cursor() as cur:
        cur.execute("SELECT pg_tablespace_location(oid) FROM pg_tablespace WHERE spcname = %s", (name,))
        row = cur.fetchone()
    return row[0] if row else None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
