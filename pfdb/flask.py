"""Embedding pfdb in a Flask application: one connection per request, always given back.

    from flask import Flask
    import pfdb, pfdb.flask

    app = Flask(__name__)
    pfdb.init_database()          # or init_database(app.config["DATABASE_URL"])
    pfdb.flask.init_app(app)

Flask is not imported here (nor is it a dependency of pfdb): ``init_app`` only uses the
``app`` it is given. PostgreSQL hands each request a pooled connection; SQLite opens the
file per request (cheap: no network, the pragmas are a few microseconds).
"""

from __future__ import annotations

import logging
from typing import Any

from .database import db

log = logging.getLogger("pfdb")


def connect_request() -> None:
    """Open (or reuse) this thread's connection at the start of a request."""
    if db.obj is not None:
        db.connect(reuse_if_open=True)


def close_request(exc: BaseException | None = None) -> None:
    """End of request: roll back a transaction left open, then return the connection (to the pool).

    A view that raised inside ``db.atomic()`` has already rolled back; this catches the
    rest: a manual ``db.begin()`` without commit, or an ``atomic()`` entered and never
    exited. Without it the pooled connection would carry the open transaction (and its
    locks) into another request.
    """
    database = db.obj
    if database is None or database.is_closed():
        return
    try:
        connection = database.connection()
        # a raw "BEGIN" peewee did not track: sqlite3 and psycopg2 both can tell
        raw = getattr(connection, "in_transaction", None)
        if raw is None and hasattr(connection, "get_transaction_status"):
            raw = connection.get_transaction_status() != 0  # 0: TRANSACTION_STATUS_IDLE
        if database.in_transaction() or raw:
            # a ROLLBACK statement, not connection.rollback(): psycopg2 ignores that in
            # autocommit mode, which is how peewee runs it
            database.rollback()
    except Exception as error:  # a broken connection: closing it below is all there is to do
        log.warning("pfdb: rolling back at the end of the request failed: %s", error)
    finally:
        while database.in_transaction():  # peewee's stack of atomic blocks
            database.pop_transaction()
        try:
            database.close()
        except Exception as error:
            log.warning("pfdb: closing the connection at the end of the request failed: %s", error)


def init_app(app: Any) -> Any:
    """Register ``connect_request``/``close_request`` on a Flask ``app``; returns the app.

    The database must be bound (``pfdb.init_database()``) before the first request.
    Example: ``pfdb.flask.init_app(app)``
    """
    app.before_request(connect_request)
    app.teardown_request(close_request)
    extensions = getattr(app, "extensions", None)
    if isinstance(extensions, dict):
        extensions["pfdb"] = db
    return app
