"""With PFDB_TEST_MEMORY_TABLESPACE=1 the test databases live in a tablespace in memory, and none outlives its run."""

from __future__ import annotations

import os
import sys

import memory_tablespace
import processes
import pytest
from conftest import PG_ADMIN_URL

import pfdb

pytestmark = pytest.mark.postgres


def _needs_a_local_server(pg_server):
    if not memory_tablespace.ENABLED:
        pytest.skip("PFDB_TEST_MEMORY_TABLESPACE=1 is not set (.ci/run sets it; see docs/testing.md)")
    if pg_server.tablespace is None:
        pytest.skip("the PostgreSQL server is not on this machine, or not ours to give a folder to")


def _database_folder(conn, database: str) -> str:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT pg_tablespace_location(dattablespace) FROM pg_database WHERE datname = %s",
            (database,),
        )
        return cur.fetchone()[0]


def _tablespaces(conn) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT spcname FROM pg_tablespace")
        return {name for (name,) in cur.fetchall()}


def test_the_test_databases_are_in_memory(pg_server, database_url, backend):
    _needs_a_local_server(pg_server)
    if backend == "sqlite":
        assert database_url.startswith("sqlite:///" + memory_tablespace.ROOT)  # tmp_path, on the tmpfs too
        return
    folder = _database_folder(pg_server.conn, database_url.rpartition("/")[2])
    assert folder.startswith(memory_tablespace.ROOT + "/pfdb-test-tablespace-")
    pfdb.init_database(database_url)
    relation = pfdb.db.execute_sql("SELECT pg_relation_filepath('products')").fetchone()[0]
    assert relation.startswith("pg_tblspc/")  # the table's file, not only the database's default, is there


def test_a_tablespace_is_dropped_with_its_folder(pg_server):
    _needs_a_local_server(pg_server)
    name = memory_tablespace.create(pg_server.conn)
    assert name in _tablespaces(pg_server.conn)
    folder = memory_tablespace._location(pg_server.conn, name)
    assert os.path.isdir(folder)
    memory_tablespace.drop(pg_server.conn, name)
    assert name not in _tablespaces(pg_server.conn)
    assert not os.path.exists(folder)


def test_a_killed_run_s_tablespace_and_databases_are_dropped_by_the_next_run(pg_server):
    """A process that made a tablespace and a database in it, then died without cleaning up."""
    _needs_a_local_server(pg_server)
    script = f"""
import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
import psycopg2, memory_tablespace
conn = psycopg2.connect({PG_ADMIN_URL!r}); conn.autocommit = True
name = memory_tablespace.create(conn)
conn.cursor().execute(f'CREATE DATABASE "pfdb_test_orphan_{{name[-8:]}}" TABLESPACE "{{name}}"')
print(name)
"""
    orphan = processes.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    database = f"pfdb_test_orphan_{orphan[-8:]}"
    folder = memory_tablespace._location(pg_server.conn, orphan)
    mine = memory_tablespace.create(pg_server.conn)  # a live process's: left alone
    try:
        dropped = memory_tablespace.drop_stale(pg_server.conn)
        assert orphan in dropped and mine not in dropped
        assert orphan not in _tablespaces(pg_server.conn) and mine in _tablespaces(pg_server.conn)
        with pg_server.conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM pg_database WHERE datname = %s", (database,))
            assert cur.fetchone()[0] == 0
        assert not os.path.exists(folder)
    finally:
        memory_tablespace.drop(pg_server.conn, mine)


def test_a_data_directory_of_another_server_is_not_taken_for_this_one(pg_server, tmp_path):
    (tmp_path / "postmaster.pid").write_text("4242\n/elsewhere\n1700000000\n1\n")  # a server on port 1
    assert not memory_tablespace._same_server(pg_server.conn, str(tmp_path))
    with pg_server.conn.cursor() as cur:
        cur.execute("SHOW data_directory")
        data_directory = cur.fetchone()[0]
    if not os.access(data_directory, os.R_OK):
        pytest.skip("the PostgreSQL server's data directory is not on this machine, or not ours to read")
    assert memory_tablespace._same_server(pg_server.conn, data_directory)


def test_without_memory_to_put_it_in_the_default_tablespace_is_used(pg_server, monkeypatch, tmp_path):
    monkeypatch.setattr(memory_tablespace, "ROOT", str(tmp_path / "no-such-tmpfs"))
    before = _tablespaces(pg_server.conn)
    assert memory_tablespace.create(pg_server.conn) is None
    assert _tablespaces(pg_server.conn) == before


def test_a_run_elsewhere_leaves_this_machine_s_tablespaces_alone(pg_server, monkeypatch):
    """Against a server on another machine, process ids from here mean nothing: nothing is dropped."""
    _needs_a_local_server(pg_server)
    script = f"""
import sys; sys.path.insert(0, {os.path.dirname(__file__)!r})
import psycopg2, memory_tablespace
conn = psycopg2.connect({PG_ADMIN_URL!r}); conn.autocommit = True
print(memory_tablespace.create(conn))
"""
    orphan = processes.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()
    try:
        monkeypatch.setattr(memory_tablespace, "_same_server", lambda conn, data_directory: False)
        assert memory_tablespace.drop_stale(pg_server.conn) == []
        assert orphan in _tablespaces(pg_server.conn)
    finally:
        monkeypatch.undo()
        memory_tablespace.drop(pg_server.conn, orphan)
