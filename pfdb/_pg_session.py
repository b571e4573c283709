"""What every connection pfdb opens to PostgreSQL agrees on: UTC, and jsonb handed back as text.

* Timestamps are ``timestamptz`` (migration 003) and pfdb sends naive UTC (the form SQLite
  stores and compares): the server reads a naive value in the session's TimeZone, so the
  session's TimeZone must be UTC, whatever the server's or the database's default is.
* psycopg2 decodes ``jsonb`` itself, and a stored JSON string ``"abc"`` then comes back as
  ``abc``, which cannot be told from JSON text. pfdb's ``JSONField`` decodes, as on SQLite;
  so pfdb's own connections get the text (a dict read by raw SQL elsewhere is unaffected).
"""

from __future__ import annotations

from typing import Any


def prepare_session(conn: Any) -> None:
    """Set UTC and jsonb-as-text on a new psycopg2 connection (autocommit or not)."""
    from psycopg2.extras import register_default_jsonb

    register_default_jsonb(conn, loads=_text)
    with conn.cursor() as cursor:
        cursor.execute("SET TIME ZONE 'UTC'")
    if not conn.autocommit:
        conn.commit()  # a session setting, kept; and no transaction left open before set_session()


def _text(value: str) -> str:
    return value
