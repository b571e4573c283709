"""Which tables this thread's transaction has written, and what runs once they are committed.

The Redis cache (``pfdb.cache``) must forget a table's values after every commit that changed
it, and never before. The one place every statement passes is the database's ``execute_sql``
(peewee's queries, ``save()``, ``delete_instance()``, bulk queries and pfdb's raw SQL alike):
it hands each statement to ``mark_sql``, which notes the table an INSERT, UPDATE, DELETE or
TRUNCATE names, and ``ALL`` for anything that may change more (DDL, ``WITH``, a statement it
cannot read). Code that writes through the driver's own cursor (the feed importer's bulk
upsert and ``COPY``) calls ``mark`` itself. ``committed()`` runs after a real commit (or a
statement outside any transaction) and hands the tables to ``after_commit``; ``rolled_back()``
forgets them. Savepoints change nothing here: a savepoint rolled back inside a transaction
that commits costs at most a needless invalidation.

Read replicas (``pfdb.replicas``) ask only whether and when a commit wrote: ``commits()``
counts them for the process and ``thread_commits()`` for the calling thread.

Nothing is recorded unless ``enabled`` (set by ``database.bind_database`` when ``CACHE_URL``
or ``DATABASE_REPLICA_URLS`` is set): without them this module costs one attribute read per
statement. It imports nothing of pfdb; ``pfdb.lifecycle`` sets ``after_commit`` to
``pfdb.cache.after_commit``.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable

ALL = "*"
"""A pending mark meaning 'any table may have changed' (DDL, a restore, a statement not understood)."""

enabled = False
after_commit: Callable[[frozenset[str]], None] | None = None

_local = threading.local()
_count_lock = threading.Lock()
_commits = 0  # commits that wrote, in this process
_last_commit = 0.0  # time.monotonic() of the last one

# Statements that change no table's rows. PRAGMA and SET change settings, not data; a
# data-changing function called from a SELECT (setval) touches no cached table.
_READS = frozenset(
    "SELECT SHOW SET RESET PRAGMA BEGIN START COMMIT END ROLLBACK SAVEPOINT RELEASE EXPLAIN "
    "VACUUM ANALYZE CHECKPOINT DISCARD LISTEN UNLISTEN NOTIFY LOCK DEALLOCATE VALUES".split()
)
_patterns: tuple[re.Pattern[str], re.Pattern[str]] | None = None


def _compiled() -> tuple[re.Pattern[str], re.Pattern[str]]:
    """The statement patterns, compiled on first use: a process without a cache never pays."""
    global _patterns
    if _patterns is None:
        name = r'(?:"(?P<q>[^"]+)"|`(?P<b>[^`]+)`|(?P<p>[A-Za-z_][\w$]*))'
        schema = r'(?:"[^"]+"|`[^`]+`|[A-Za-z_][\w$]*)\.'
        target = re.compile(
            r"\s*(?:INSERT(?:\s+OR\s+\w+)?\s+INTO|REPLACE\s+INTO|UPDATE(?:\s+OR\s+\w+)?|DELETE\s+FROM"
            r"|TRUNCATE(?:\s+TABLE)?)\s+(?:ONLY\s+)?(?:" + schema + ")?" + name,
            re.IGNORECASE,
        )
        temp = re.compile(r"\s*CREATE\s+(?:GLOBAL\s+|LOCAL\s+)?TEMP(?:ORARY)?\s+TABLE", re.IGNORECASE)
        _patterns = (target, temp)
    return _patterns


def _pending() -> set[str]:
    pending = getattr(_local, "pending", None)
    if pending is None:
        pending = _local.pending = set()
    return pending


def mark(*tables: str) -> None:
    """Note that the current transaction (or the statement about to run) writes ``tables``."""
    if enabled:
        _pending().update(tables)


def tables_written(sql: str) -> frozenset[str]:
    """The tables a statement may change: none for a read, ``{ALL}`` when it cannot tell."""
    head = sql.lstrip()[:12].split(None, 1)
    word = head[0].upper().rstrip(";") if head else ""
    if word in _READS:
        return frozenset()
    target, temp = _compiled()
    match = target.match(sql)
    if match is not None and not (word == "TRUNCATE" and "," in sql):
        return frozenset((match["q"] or match["b"] or match["p"],))
    if temp.match(sql):  # a session's scratch table (the importer's staging): nobody caches it
        return frozenset()
    return frozenset((ALL,))


def mark_sql(sql: str) -> None:
    """``mark`` the tables ``sql`` may change (called for every statement while ``enabled``)."""
    written = tables_written(sql)
    if not written and sql.lstrip()[:8].upper() == "ROLLBACK" and "TO" not in sql.upper().split()[1:2]:
        rolled_back()  # a bare ROLLBACK (pfdb.flask ends a forgotten transaction with one)
    elif written:
        _pending().update(written)


def committed() -> None:
    """Hand the tables written since the last commit to ``after_commit``; never raises for the cache."""
    pending = getattr(_local, "pending", None)
    if not pending:
        return
    tables = frozenset(pending)
    pending.clear()
    _count_commit()
    hook = after_commit
    if hook is not None and enabled:
        try:
            hook(tables)
        except Exception:  # the commit is done: a cache that fails must not make it look failed
            logging.getLogger("pfdb.cache").warning("pfdb: invalidating the cache failed", exc_info=True)


def _count_commit() -> None:
    global _commits, _last_commit
    with _count_lock:
        _commits += 1
        _last_commit = time.monotonic()
    _local.commits = getattr(_local, "commits", 0) + 1


def commits() -> tuple[int, float]:
    """(commits that wrote in this process, ``time.monotonic()`` of the last one)."""
    with _count_lock:
        return _commits, _last_commit


def thread_commits() -> int:
    """Commits that wrote, made by the calling thread."""
    return getattr(_local, "commits", 0)


def rolled_back() -> None:
    """Forget the marks: nothing they named was committed."""
    pending = getattr(_local, "pending", None)
    if pending:
        pending.clear()


def pending_tables() -> frozenset[str]:
    """What this thread has written and not yet committed (for tests and the cache's own checks)."""
    return frozenset(getattr(_local, "pending", None) or ())
