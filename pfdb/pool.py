"""pfdb's own PostgreSQL connection pool: check-out, return and discard, each one step.

peewee's ``PooledPostgresqlDatabase`` keeps every connection it ever opened (30 stayed open
with ``DATABASE_POOL_SIZE=10``), treats a timeout of 0 as "wait forever", round-trips a
``SELECT 1`` on every check-out (which hangs on a server that stopped answering), and holds
the database-wide lock while it connects. This pool owns those rules instead:

* at most ``max_connections`` open at once (``pool_size`` + overflow); at most ``max_idle``
  (``pool_size``) kept idle, the rest closed when they come back;
* ``timeout`` is how long a check-out waits for a free slot; 0 means do not wait;
* a connection the server dropped (terminated backend, restart) is discarded: on check-out,
  on return, when a scope starts on a connection the thread holds, and after a statement
  reported the loss; the next scope gets a fresh one. A statement that fails because the
  connection died raises ``ConnectionLostError`` (once), not ``connection already closed``;
* ``prepare_connection`` (once, when a connection is made) and ``reset_connection`` (each
  time one comes back) are the hooks for per-connection state, such as a tenant's
  ``search_path``. Several instances (one per server) share nothing;
* ``check_out()``/``give_back()`` lend a connection outside any thread's state, and
  ``using_connection(conn)`` runs a block with this database's thread state on a connection
  of another pool (a read replica's, for ``db_read_scope()``: see ``replicas.py``).

Connections live in each thread's peewee state while checked out, exactly as with peewee's
pool, so models and ``atomic()`` work unchanged.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ._peewee import peewee as pw
from .errors import ConnectionLostError, PoolExhaustedError
from .text import first_line

log = logging.getLogger("pfdb.pool")


def _cursor_class():
    """A psycopg2 cursor that turns an error caused by a dead connection into ``ConnectionLostError``.

    Built on first use so psycopg2 loads only with PostgreSQL. Every statement pfdb sends
    (peewee queries, BEGIN/COMMIT, the importer's raw cursors and COPY) goes through it.
    peewee's exception wrapper passes an unknown exception class through untouched.
    """
    import psycopg2
    from psycopg2 import extensions

    driver_errors = (psycopg2.OperationalError, psycopg2.InterfaceError)

    def lost(cursor: Any, exc: BaseException) -> BaseException:
        if cursor.connection.closed:
            return ConnectionLostError(
                f"lost the connection to the server ({first_line(exc)})",
                hint="the connection was replaced; run the operation again",
            )
        return exc

    class Cursor(extensions.cursor):
        def execute(self, query, vars=None):
            try:
                return super().execute(query, vars)
            except driver_errors as exc:
                error = lost(self, exc)
                if error is exc:
                    raise
                raise error from exc

        def executemany(self, query, vars_list):
            try:
                return super().executemany(query, vars_list)
            except driver_errors as exc:
                error = lost(self, exc)
                if error is exc:
                    raise
                raise error from exc

        def copy_expert(self, sql, file, size=8192):
            try:
                return super().copy_expert(sql, file, size)
            except driver_errors as exc:
                error = lost(self, exc)
                if error is exc:
                    raise
                raise error from exc

    return Cursor


_CURSOR = None


def is_alive(conn: Any) -> bool:
    """Whether an idle connection is still usable, without a round trip to the server.

    A terminated backend or a server shutting down sends a FATAL message and closes the
    socket; psycopg2 notices only at the next statement. An idle connection has nothing to
    read unless the server spoke first, so: readable, let psycopg2 consume it (a NOTIFY for
    a listener is consumed and fine); still readable after that means end of stream: dead.
    """
    if conn.closed:
        return False
    try:
        if not _readable(conn):
            return True
        conn.poll()
        return not conn.closed and not _readable(conn)
    except Exception:
        return False


def _readable(conn: Any) -> bool:
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(conn.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    return bool(select.select([conn], [], [], 0)[0])


class PooledPostgresqlDatabase(pw.PostgresqlDatabase):
    """A peewee PostgreSQL database whose thread connections come from a bounded pool.

    Args:
        max_connections: connections open at once, in use and idle together.
        max_idle: idle connections kept for reuse; one returned beyond that is closed.
        timeout: seconds a check-out waits for a slot; 0 fails at once.
        stale_timeout: seconds after which a connection is closed instead of reused (0/None: never).
    """

    def __init__(
        self,
        database: Any,
        *,
        max_connections: int = 20,
        max_idle: int | None = None,
        timeout: float = 30.0,
        stale_timeout: float | None = None,
        **kwargs: Any,
    ):
        self._max_connections = int(max_connections)
        self._max_idle = self._max_connections if max_idle is None else int(max_idle)
        self._wait_timeout = float(timeout)
        self._stale_timeout = stale_timeout or None
        # One condition guards the pool's bookkeeping; never held across network I/O, so a
        # silent server stalls only the thread that talks to it.
        self._pool_available = threading.Condition(threading.Lock())
        self._connections: list[tuple[float, Any]] = []  # idle: (created, conn), newest last
        self._in_use: dict[int, tuple[float, Any]] = {}  # id(conn) -> (created, conn)
        self._size = 0  # open or being opened: idle + in use + reserved slots
        super().__init__(database, **kwargs)

    # -- hooks ----------------------------------------------------------------------------------
    def prepare_connection(self, conn: Any) -> None:
        """Run once on every new connection (session settings). An exception discards it."""

    def reset_connection(self, conn: Any) -> None:
        """Run on every connection coming back, after any open transaction was rolled back.

        Undo per-checkout session state here (``RESET search_path``). An exception discards it.
        """

    # -- peewee's connection lifecycle ---------------------------------------------------------
    def connect(self, reuse_if_open: bool = False) -> bool:
        """Check a connection out for this thread, waiting up to the pool timeout for a slot.

        Unlike ``Database.connect`` no database-wide lock is held while connecting.
        """
        if self.deferred:
            raise pw.InterfaceError("Error, database must be initialized before opening a connection.")
        if not self._state.closed:
            if self.in_transaction() or is_alive(self._state.conn):
                if reuse_if_open:
                    return False
                raise pw.OperationalError("Connection already opened.")
            self._discard_current()  # dead and outside a transaction: replace it
        conn = self._check_out(time.monotonic() + self._wait_timeout)
        try:
            self._state.reset()
            self._state.set_connection(conn)
            if self.server_version is None:
                self._set_server_version(conn)
            self._initialize_connection(conn)
        except BaseException:
            self._state.reset()
            self._discard(conn)
            raise
        return True

    def close(self) -> bool:
        """Give this thread's connection back to the pool (which may close it)."""
        if self.deferred:
            raise pw.InterfaceError("Error, database must be initialized before opening a connection.")
        if self.in_transaction():
            raise pw.OperationalError("Attempting to close database while transaction is open.")
        if self._state.closed:
            return False
        conn = self._state.conn
        self._state.reset()
        self._return(conn)
        return True

    def cursor(self, named_cursor: Any = None) -> Any:
        # A thread that keeps its connection between statements (scripts, the CLI) gets a
        # fresh one once a statement has reported the loss (ConnectionLostError), and only
        # outside a transaction. Not before: a silent swap would lose session state (the
        # importer's temporary tables) without a word.
        if not self._state.closed and self._state.conn.closed and not self.in_transaction():
            self._discard_current()
        return super().cursor(named_cursor)

    def rollback(self) -> None:
        # A dead connection took its transaction with it: the server rolled it back. Raising
        # here would hide the error that ended the transaction behind "connection already closed".
        if not self._state.closed and self._state.conn.closed:
            return
        super().rollback()

    # -- lending -------------------------------------------------------------------------------
    def check_out(self) -> Any:
        """A connection of this pool that no thread state holds; hand it back with ``give_back``."""
        conn = self._check_out(time.monotonic() + self._wait_timeout)
        if self.server_version is None:
            try:
                self._set_server_version(conn)
            except BaseException:
                self._discard(conn)
                raise
        return conn

    def give_back(self, conn: Any) -> None:
        self._return(conn)

    @contextmanager
    def using_connection(self, conn: Any) -> Iterator[None]:
        """Run the block with this thread's peewee state on ``conn``; the thread's own comes back after.

        Models, ``atomic()`` and ``in_transaction()`` then work on ``conn`` unchanged. The caller
        owns ``conn`` (it may belong to another pool) and gives it back itself.
        """
        state = self._state
        saved = (state.closed, state.conn, state.ctx, state.transactions, state.commit_callbacks)
        state.set_connection(conn)
        try:
            yield
        finally:
            opened = state.conn if not state.closed and state.conn is not conn else None
            state.closed, state.conn, state.ctx, state.transactions, state.commit_callbacks = saved
            if opened is not None:  # the lent one died and the block connected here: give that back
                self._return(opened)

    # -- the three steps -------------------------------------------------------------------------
    def _check_out(self, deadline: float) -> Any:
        """An idle connection that is alive and fresh, or a new one once a slot is free.

        Waits for a slot until ``deadline`` (under the pool's lock, which ``wait`` releases, so
        no return is missed); then ``PoolExhaustedError``.
        """
        discard = []
        try:
            with self._pool_available:
                while True:
                    while self._connections:
                        created, conn = self._connections.pop()  # newest first: the rest may age out
                        if self._is_stale(created) or not is_alive(conn):
                            self._size -= 1
                            discard.append(conn)
                            continue
                        self._in_use[id(conn)] = (created, conn)
                        return conn
                    if self._size < self._max_connections:
                        self._size += 1  # reserve the slot, then connect without the lock
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise PoolExhaustedError(self._exhausted_message(), hint=self._exhausted_hint())
                    self._pool_available.wait(remaining)
        finally:
            for conn in discard:
                self._close_raw(conn)
            if discard:  # their slots are free for threads waiting for one
                with self._pool_available:
                    self._pool_available.notify_all()
        try:
            conn = self._new_connection()
        except BaseException:
            with self._pool_available:
                self._size -= 1
                self._pool_available.notify()
            raise
        with self._pool_available:
            self._in_use[id(conn)] = (time.monotonic(), conn)
        return conn

    def _return(self, conn: Any) -> None:
        """Roll back, reset and keep the connection idle, or close it (dead, stale, or beyond ``max_idle``)."""
        with self._pool_available:
            entry = self._in_use.pop(id(conn), None)
        if entry is None:  # not ours any more (close_all ran): just close it
            self._close_raw(conn)
            return
        created = entry[0]
        keep = not self._is_stale(created) and self._reset(conn)
        with self._pool_available:
            if keep and len(self._connections) < self._max_idle:
                self._connections.append((created, conn))
                conn = None
            else:
                self._size -= 1
            self._pool_available.notify()
        if conn is not None:
            self._close_raw(conn)

    def _discard(self, conn: Any) -> None:
        """Close a checked-out connection for good and free its slot."""
        with self._pool_available:
            if self._in_use.pop(id(conn), None) is not None:
                self._size -= 1
            self._pool_available.notify()
        self._close_raw(conn)

    def _discard_current(self) -> None:
        conn = self._state.conn
        log.info("discarding a connection the server closed")
        self._state.reset()
        self._discard(conn)

    # -- helpers ---------------------------------------------------------------------------------
    def _new_connection(self) -> Any:
        global _CURSOR
        if _CURSOR is None:
            _CURSOR = _cursor_class()
        with pw.__exception_wrapper__:
            conn = super()._connect()
        try:
            conn.cursor_factory = _CURSOR
            self.prepare_connection(conn)
        except BaseException:
            self._close_raw(conn)
            raise
        return conn

    def _reset(self, conn: Any) -> bool:
        if conn.closed:
            return False
        try:
            from psycopg2 import extensions

            status = conn.get_transaction_status()
            if status == extensions.TRANSACTION_STATUS_UNKNOWN:
                return False
            if status != extensions.TRANSACTION_STATUS_IDLE:
                conn.cursor().execute("ROLLBACK")
            self.reset_connection(conn)
        except Exception:
            return False
        return not conn.closed

    def _is_stale(self, created: float) -> bool:
        return bool(self._stale_timeout) and time.monotonic() - created > self._stale_timeout

    @staticmethod
    def _close_raw(conn: Any) -> None:
        try:
            conn.close()
        except Exception:  # already gone
            pass

    def _exhausted_message(self) -> str:
        if self._wait_timeout <= 0:
            return f"all {self._max_connections} pooled connections are in use (the pool timeout is 0: no waiting)"
        return f"all {self._max_connections} pooled connections stayed in use for {self._wait_timeout:g} s"

    def _exhausted_hint(self) -> str:
        return "raise DATABASE_POOL_SIZE/DATABASE_MAX_OVERFLOW or close connections sooner"

    # -- whole-pool operations -------------------------------------------------------------------
    def close_idle(self) -> None:
        with self._pool_available:
            idle, self._connections = self._connections, []
            self._size -= len(idle)
            self._pool_available.notify_all()
        for _, conn in idle:
            self._close_raw(conn)

    def close_all(self) -> None:
        """Close every connection, idle and in use (other threads' too: they get fresh ones next time)."""
        if not self._state.closed:
            conn = self._state.conn
            self._state.reset()
            self._discard(conn)
        with self._pool_available:
            idle, self._connections = self._connections, []
            in_use, self._in_use = self._in_use, {}
            self._size -= len(idle) + len(in_use)
            self._pool_available.notify_all()
        for _, conn in idle + list(in_use.values()):
            self._close_raw(conn)

    def pool_usage(self) -> dict[str, int]:
        with self._pool_available:
            return {
                "in_use": len(self._in_use),
                "idle": len(self._connections),
                "max_connections": self._max_connections,
            }
