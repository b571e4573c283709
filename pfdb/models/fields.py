"""Field types that behave the same on SQLite and PostgreSQL.

Each subclasses a plain peewee field, so peewee-migrate writes migrations with the plain
field (``pw.DateTimeField``, ``pw.TextField``) and drift detection compares like with like.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

from .._peewee import peewee as pw

UTC = dt.timezone.utc


def utcnow() -> dt.datetime:
    """The current time, timezone-aware UTC: the only clock pfdb stores."""
    return dt.datetime.now(UTC)


class UTCDateTimeField(pw.DateTimeField):
    """Stores naive UTC, returns aware UTC.

    PostgreSQL ``timestamp`` silently drops an offset instead of converting, and SQLite
    stores text: normalising to naive UTC on the way in is the only form both compare and
    sort correctly. Since migration 003 the PostgreSQL column is ``timestamptz``, which reads
    a naive value in the session's TimeZone: pfdb's sessions are UTC (``pfdb._pg_session``).
    """

    def db_value(self, value: Any) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value: Any) -> Any:
        value = super().python_value(value)
        if isinstance(value, dt.datetime):
            if value.tzinfo is None:
                value = value.replace(tzinfo=UTC)
            elif value.tzinfo is not UTC:  # timestamptz (migration 003): psycopg2's own UTC tzinfo
                value = value.astimezone(UTC)
        return value


class PlacesDecimalField(pw.DecimalField):
    """A decimal read back with exactly its ``decimal_places`` (money: two, weight: three).

    PostgreSQL ``numeric(12,2)`` returns ``Decimal('50.00')``; SQLite's NUMERIC affinity
    stores that as the integer 50 (or the REAL 19.9) and returns ``Decimal('50')``.
    Padding the places on the way out makes both backends return the same value and text.
    A value with more places (only SQLite keeps one, written by raw SQL) is returned as
    stored: rounding it would hide it from the importer's comparison and from the reader.
    """

    def python_value(self, value: Any) -> Any:
        if value is None:
            return None
        if value.__class__ is not Decimal:
            value = Decimal(str(value))  # str: a REAL 19.9 is Decimal('19.9'), not its binary expansion
        exponent = value.as_tuple().exponent
        if not isinstance(exponent, int) or exponent <= -self.decimal_places:
            return value  # PostgreSQL numeric(…, places): already in form (or more places, or not finite)
        return value.quantize(self._exp)  # exact: only adds zeros


class JSONField(pw.TextField):
    """JSON: ``text`` on SQLite, ``jsonb`` on PostgreSQL (migration 003); decoded on read.

    pfdb's PostgreSQL connections hand jsonb back as text (``pfdb._pg_session``), so a
    stored JSON string ``"abc"`` is told apart from its decoded form and round-trips. A
    value another driver already decoded (a dict, a list, a number) is returned as it is.
    """

    def db_value(self, value: Any) -> Any:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)

    def python_value(self, value: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        return json.loads(value)


def json_problem(value: Any) -> str | None:
    """Why ``value`` cannot be stored as JSON (a NaN, an infinity, a NUL in it), or ``None`` when it can.

    ``json.dumps`` writes ``float("nan")`` as a bare ``NaN`` that strict JSON readers (and
    PostgreSQL's ``json`` type) refuse, so such a value is refused before it is stored. A NUL
    character is JSON (``\\u0000``) but PostgreSQL's ``jsonb`` cannot hold it: refused on both
    backends alike, as in text fields.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float):
            if item != item or item in (_INF, -_INF):
                return f"holds {json.dumps(item)}{_at(path)}, which is not JSON; use null or a string instead"
        elif isinstance(item, str):
            if "\x00" in item:
                return f"holds a NUL character (\\x00){_at(path)}, which PostgreSQL cannot store; remove it"
        elif isinstance(item, dict):
            if any(isinstance(key, str) and "\x00" in key for key in item):
                return f"holds a NUL character (\\x00) in a key{_at(path)}, which PostgreSQL cannot store; remove it"
            stack.extend((f"{path}.{key}" if path else str(key), v) for key, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
    return None


_INF = float("inf")


def _at(path: str) -> str:
    return f" at {path}" if path else ""
