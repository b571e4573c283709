"""Read replicas: which PostgreSQL server a read goes to, how far each replica lags, read-your-writes.

``DATABASE_REPLICA_URLS`` gives the primary's pool (``database.py``) a :class:`ReplicaSet`.
The primary asks it, for each query outside a transaction, whether a replica should answer;
everything else (writes, ``atomic()``, raw SQL) stays on the primary. The rules:

* a read (a peewee ``SELECT`` without ``FOR UPDATE``, or a whole ``db_read_scope()``) goes to
  a usable replica: reachable, in recovery, at most ``DATABASE_REPLICA_MAX_LAG`` seconds behind;
* read-your-writes, per process: a commit that wrote bumps a counter; reads in the next
  ``REPLAY_RECHECK`` seconds go to the primary without asking anyone; the first read after that
  fetches the primary's WAL position once, and from then on a replica answers only once its
  replayed position (``pg_last_wal_replay_lsn()``, cached for ``REPLAY_RECHECK`` seconds) has
  reached it; until then the primary answers (no waiting);
* ``with primary():`` keeps a block on the primary; ``with replica():`` sends its reads to a
  replica even before it has replayed this process's writes (a write in it goes to the primary,
  and so do the block's later reads);
* a replica that fails is skipped and retried with back-off (1 s doubling to 30 s); with none
  usable, reads go to the primary.

What was written, and when, comes from ``pfdb._writes`` (which the cache uses too): every
statement pfdb runs passes it, and the importer's bulk writes report themselves. Nothing
here imports a driver: the databases are handed in, built by ``database.py``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import _writes
from ._peewee import peewee as pw
from .config import mask_secrets
from .errors import DatabaseUnavailableError, PfdbError, PoolExhaustedError
from .text import first_line

log = logging.getLogger("pfdb.replicas")


CHECK_INTERVAL = 1.0  # seconds a replica's state and lag are trusted before they are measured again
REPLAY_RECHECK = 0.1  # seconds a replayed position is trusted while this process waits for it
RETRY_FIRST, RETRY_MAX = 1.0, 30.0  # back-off for a replica that failed

_route = threading.local()  # .mode: None, "primary" or "replica"; .commits: the thread's, when replica() began


@contextmanager
def primary() -> Iterator[None]:
    """Run the block on the primary: every read, every ``db_read_scope()``. Nests; no-op without replicas.

    Example: ``with pfdb.primary(): stock = Product.get(Product.sku == "A1").stock``
    """
    saved = getattr(_route, "mode", None), getattr(_route, "commits", 0)
    _route.mode = "primary"
    try:
        yield
    finally:
        _route.mode, _route.commits = saved


@contextmanager
def replica() -> Iterator[None]:
    """Send the block's reads to a replica, even one that has not replayed this process's writes yet.

    Usable replicas only (reachable, within ``DATABASE_REPLICA_MAX_LAG``); with none, the primary.
    A write in the block goes to the primary, and so do the block's reads after it.
    Example: ``with pfdb.replica(): report = list(Product.select())``
    """
    saved = getattr(_route, "mode", None), getattr(_route, "commits", 0)
    _route.mode, _route.commits = "replica", _writes.thread_commits()
    try:
        yield
    finally:
        _route.mode, _route.commits = saved


def parse_lsn(text: Any) -> int | None:
    """``"16/B374D848"`` -> an integer WAL position (None stays None)."""
    if text is None:
        return None
    high, _, low = str(text).partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def is_read_query(query: Any) -> bool:
    """A peewee SELECT (or UNION of them) that locks nothing: what a replica may answer."""
    if isinstance(query, pw.Select):
        return query._for_update is None
    return isinstance(query, pw.CompoundSelectQuery)


@dataclass
class ReplicaState:
    """What this process last measured of one replica."""

    url: str  # masked
    state: str = "unknown"  # ok, lagging, down, not in recovery, unknown (not measured yet)
    lag: float | None = None  # seconds behind the primary (an upper bound), None: unknown
    replay_lsn: int | None = None
    paused: bool = False  # replay paused (pg_wal_replay_pause)
    error: str | None = None
    checked_at: float = 0.0  # monotonic; 0: never
    replay_checked_at: float = 0.0
    failures: int = 0
    retry_at: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def as_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "state": self.state,
            "lag_seconds": None if self.lag is None else round(self.lag, 3),
            "replay_paused": self.paused,
            "error": self.error,
        }


# A connection-level failure: the replica is skipped for a while. Other errors (a statement
# cancelled by a recovery conflict) send this one read to the primary and keep the replica.
_CONNECTION_ERRORS = (DatabaseUnavailableError, pw.InterfaceError)


class ReplicaSet:
    """The replicas of one primary, their measured state, and this process's write position.

    Args:
        primary: the primary's pooled database (what ``pfdb.db`` is bound to).
        replicas: one pooled database per replica, built like the primary.
        max_lag: seconds a replica may be behind and still answer.
    """

    def __init__(self, primary: Any, replicas: list[Any], max_lag: float):
        self.primary = primary
        self.replicas = list(replicas)
        self.max_lag = max_lag
        self.states = [ReplicaState(url=r.pfdb_url.masked) for r in self.replicas]
        self._lock = threading.Lock()  # the counters and samples below; never held across I/O
        self._next = 0  # round robin
        # How many of the process's commits that wrote (``_writes``) the barrier covers: those
        # made before this binding (another database, or before replicas) are not its concern.
        self._synced = _writes.commits()[0]
        self._barrier = 0  # WAL position a replica must have replayed to answer automatic reads
        self._samples: collections.deque[tuple[float, int]] = collections.deque(maxlen=512)  # (time, primary LSN)
        self._primary_refuses = False  # the "primary" is itself in recovery: route nothing

    # -- routing -------------------------------------------------------------------------------
    def execute_read(self, query: Any, context_options: dict[str, Any]) -> Any:
        """Run ``query`` on a replica and return its cursor, or None when the primary should."""
        if not is_read_query(query):
            return None
        target = self.choose()
        if target is None:
            return None
        index = self.replicas.index(target)
        try:
            opened = target.connect(reuse_if_open=True)
            try:
                return target.execute(query, **context_options)
            finally:
                if opened and not target.is_closed() and not target.in_transaction():
                    target.close()
        except PoolExhaustedError:  # busy, not broken: this read goes to the primary
            return None
        except _CONNECTION_ERRORS as exc:
            self._failed(index, exc)
        except (pw.PeeweeException, PfdbError) as exc:
            # Canceled by a conflict with recovery, or a table or column a migration has just
            # made and the replica not yet replayed: the primary's answer (or error) is the one.
            log.info("replica %s could not answer (%s); reading from the primary", self.states[index].url, exc)
        return None

    @contextmanager
    def read_scope(self) -> Iterator[bool]:
        """Lend the primary's thread state a replica connection for a read-only block; yields whether it did."""
        target = self.choose()
        if target is None:
            yield False
            return
        index = self.replicas.index(target)
        conn = None
        try:
            conn = target.check_out()
        except PoolExhaustedError:  # busy, not broken
            pass
        except _CONNECTION_ERRORS as exc:
            self._failed(index, exc)
        if conn is None:  # yielded outside the handler: the block's own errors carry no context
            yield False
            return
        try:
            # A tenant scope's search_path (and role) on the lent connection too: its pool's
            # reset hook (the primary's) takes them off when it is given back.
            target.apply_tenant(conn, fresh=True)
            with self.primary.using_connection(conn):
                yield True
        finally:
            target.give_back(conn)

    def choose(self) -> Any:
        """The replica that should answer this thread's next read, or None for the primary."""
        mode = getattr(_route, "mode", None)
        if mode == "primary" or self._primary_refuses:
            return None
        explicit = mode == "replica"
        if explicit and _writes.thread_commits() != getattr(_route, "commits", 0):
            return None  # the replica() block wrote: its later reads are the primary's
        if not explicit and not self._sync_barrier():
            return None
        with self._lock:
            start = self._next
            self._next = (self._next + 1) % len(self.replicas)
        for offset in range(len(self.replicas)):
            index = (start + offset) % len(self.replicas)
            if self._usable(index, explicit):
                return self.replicas[index]
        return None

    def _usable(self, index: int, explicit: bool) -> bool:
        state = self.states[index]
        now = time.monotonic()
        if state.state in ("down", "not in recovery") and now < state.retry_at:
            return False
        if now - state.checked_at > CHECK_INTERVAL:
            self.refresh(index)
        if state.state != "ok":
            return False
        if explicit:
            return True
        barrier = self._barrier
        if state.replay_lsn is not None and state.replay_lsn >= barrier:
            return True
        if now - max(state.replay_checked_at, state.checked_at) > REPLAY_RECHECK:
            self._refresh_replay(index)
        return state.state == "ok" and state.replay_lsn is not None and state.replay_lsn >= barrier

    def _sync_barrier(self) -> bool:
        """Bring the barrier up to this process's last write (one query on the primary); False: cannot."""
        wanted, last = _writes.commits()
        with self._lock:
            if wanted == self._synced:
                return True
        if time.monotonic() - last < REPLAY_RECHECK:
            return False  # just written: no replica has replayed it yet, so ask none
        sample = self._sample_primary()
        if sample is None:
            return False
        with self._lock:
            self._barrier = max(self._barrier, sample[1])
            self._synced = max(self._synced, wanted)
        return True

    # -- measuring -----------------------------------------------------------------------------
    def _sample_primary(self) -> tuple[int, int] | None:
        """(written WAL position, read-your-writes position) of the primary, remembered for lag.

        The write position (``pg_current_wal_lsn()``) holds every commit made with
        ``synchronous_commit`` on (COMMIT returned after flushing it); with it off a commit may
        still sit in the WAL buffers, so the barrier is then the insert position.
        """
        database = self.primary
        if database.in_transaction():  # never add a statement to the caller's transaction
            return None
        try:
            opened = database.connect(reuse_if_open=True)
            try:
                row = database.execute_sql(
                    "SELECT pg_current_wal_lsn(), CASE WHEN current_setting('synchronous_commit') = 'off'"
                    " THEN pg_current_wal_insert_lsn() ELSE pg_current_wal_lsn() END"
                ).fetchone()
            finally:
                if opened and not database.is_closed() and not database.in_transaction():
                    database.close()
        except Exception as exc:
            if "recovery is in progress" in str(exc):
                self._primary_refuses = True  # DATABASE_URL is itself a replica: nothing to route
            log.info("cannot read the primary's WAL position (%s); reading from the primary", first_line(exc))
            return None
        written, barrier = parse_lsn(row[0]), parse_lsn(row[1])
        with self._lock:
            self._samples.append((time.monotonic(), written))
        return written, barrier

    def refresh(self, index: int, *, force: bool = False) -> ReplicaState:
        """Measure one replica now: reachable, in recovery, replayed position, lag.

        Lag is an upper bound on how stale the replica's data is, the smaller of two:
        the time since this process last saw the primary at a WAL position the replica has
        replayed (exact to the sampling interval, immune to clock skew), and the time since
        the replica's last replayed commit (``pg_last_xact_replay_timestamp()``, which alone
        would call an idle primary's caught-up replica "an hour behind"). A replica that has
        replayed the primary's current position has lag 0.
        """
        state = self.states[index]
        # Another thread measuring it: use what is known; a forced measure waits, but not forever
        # (a measure stuck on a server that went silent keeps its lock until the socket gives up).
        if not (state.lock.acquire(True, 30.0) if force else state.lock.acquire(False)):
            return state
        try:
            sample = self._sample_primary()
            database = self.replicas[index]
            try:
                with _borrowed(database):
                    row = database.execute_sql(
                        "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn(),"
                        " EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()),"
                        " CASE WHEN pg_is_in_recovery() THEN pg_is_wal_replay_paused() ELSE false END"
                    ).fetchone()
            except Exception as exc:
                self._failed(index, exc, reported=force)
                return state
            now = time.monotonic()
            in_recovery, replay, since_commit, paused = row[0], parse_lsn(row[1]), row[2], bool(row[3])
            state.checked_at = state.replay_checked_at = now
            state.paused = paused
            if not in_recovery:
                state.state, state.lag, state.replay_lsn = "not in recovery", None, None
                state.error = "this server is not in recovery: it is a primary, not a replica (promoted?)"
                self._back_off(state, now)
                return state
            state.replay_lsn, state.error, state.failures = replay, None, 0
            state.lag = self._lag(replay, None if since_commit is None else float(since_commit), sample, now)
            state.state = "ok" if state.lag is not None and state.lag <= self.max_lag else "lagging"
            return state
        finally:
            state.lock.release()

    def _lag(self, replay: int | None, since_commit: float | None, sample: Any, now: float) -> float | None:
        if replay is None:
            return None
        if sample is not None and replay >= sample[0]:
            return 0.0
        with self._lock:
            caught_up = [t for t, lsn in self._samples if lsn <= replay]
        bounds = [now - max(caught_up)] if caught_up else []
        if since_commit is not None:
            bounds.append(max(0.0, since_commit))
        return min(bounds) if bounds else None

    def _refresh_replay(self, index: int) -> None:
        """Only the replayed position (one query), while this process waits for its own write."""
        state = self.states[index]
        if not state.lock.acquire(blocking=False):
            return
        try:
            database = self.replicas[index]
            try:
                with _borrowed(database):
                    row = database.execute_sql("SELECT pg_last_wal_replay_lsn()").fetchone()
            except Exception as exc:
                self._failed(index, exc)
                return
            state.replay_lsn, state.replay_checked_at = parse_lsn(row[0]), time.monotonic()
        finally:
            state.lock.release()

    def _failed(self, index: int, exc: BaseException, *, reported: bool = False) -> None:
        """Skip a replica until its retry time; ``reported``: the caller shows it (health, info)."""
        state = self.states[index]
        database = self.replicas[index]
        reason = getattr(exc, "message", None) or first_line(exc)
        reason = mask_secrets(reason, database.pfdb_url)
        now = time.monotonic()
        if state.state != "down":  # once per outage; a report says it itself
            log.log(logging.INFO if reported else logging.WARNING, "replica %s is skipped: %s", state.url, reason)
        state.state, state.error, state.lag = "down", reason, None
        state.checked_at = now
        self._back_off(state, now)

    @staticmethod
    def _back_off(state: ReplicaState, now: float) -> None:
        state.failures += 1
        state.retry_at = now + min(RETRY_MAX, RETRY_FIRST * 2 ** (state.failures - 1))

    def check_all(self, timeout: float) -> list[dict[str, Any]]:
        """Measure every replica now, at once, each within ``timeout`` seconds; for health and info.

        A replica that gives no answer in time is reported (and skipped) as down.
        """
        threads = []
        for index in range(len(self.replicas)):
            thread = threading.Thread(target=self.refresh, args=(index,), kwargs={"force": True}, daemon=True)
            thread.start()
            threads.append(thread)
        deadline = time.monotonic() + timeout
        for index, thread in enumerate(threads):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                self._failed(index, TimeoutError(f"no answer within {timeout:g} s"), reported=True)
        return [state.as_dict() for state in self.states]

    def close(self) -> None:
        for database in self.replicas:
            database.close_all()


@contextmanager
def _borrowed(database: Any) -> Iterator[None]:
    opened = database.connect(reuse_if_open=True)
    try:
        yield
    finally:
        if opened and not database.is_closed() and not database.in_transaction():
            database.close()
