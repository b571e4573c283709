"""The test helper that starts PostgreSQL servers of a test's own (tests/pg_servers.py) really does."""

from __future__ import annotations

import pytest
from pg_servers import TempPostgres

pytestmark = pytest.mark.postgres


def test_a_replica_streams_from_its_primary_and_can_be_paused():
    with TempPostgres() as primary:
        replica = primary.replica()
        primary.sql("CREATE TABLE t (v int)")
        primary.sql("INSERT INTO t VALUES (1)")
        primary.wait_for_replay()
        assert replica.sql("SELECT v FROM t") == [(1,)]
        assert replica.sql("SELECT pg_is_in_recovery()") == [(True,)]

        replica.sql("SELECT pg_wal_replay_pause()")
        primary.sql("UPDATE t SET v = 2")
        assert primary.sql("SELECT v FROM t") == [(2,)]
        assert replica.sql("SELECT v FROM t") == [(1,)]
        replica.sql("SELECT pg_wal_replay_resume()")
        primary.wait_for_replay()
        assert replica.sql("SELECT v FROM t") == [(2,)]
    assert not primary.root.exists()
