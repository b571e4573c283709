"""Field types that behave the same on SQLite and PostgreSQL.

Each subclasses a plain peewee field, so peewee-migrate writes migrations with the plain
field (``pw.DateTimeField``, ``pw.TextField``) and drift detection compares like with like.
"""

from __future__ import annotations

import datetime as dt
import json
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
    sort correctly.
    """

    def db_value(self, value: Any) -> Any:
        if isinstance(value, dt.datetime) and value.tzinfo is not None:
            value = value.astimezone(UTC).replace(tzinfo=None)
        return super().db_value(value)

    def python_value(self, value: Any) -> Any:
        value = super().python_value(value)
        if isinstance(value, dt.datetime) and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class JSONField(pw.TextField):
    """JSON stored as text: portable across both backends, decoded on read."""

    def db_value(self, value: Any) -> Any:
        if value is None:
            return None
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)

    def python_value(self, value: Any) -> Any:
        if value is None or not isinstance(value, str):
            return value
        return json.loads(value)


def json_problem(value: Any) -> str | None:
    """Why ``value`` is not standard JSON (a NaN or an infinity in it), or ``None`` when it is.

    ``json.dumps`` writes ``float("nan")`` as a bare ``NaN`` that strict JSON readers (and
    PostgreSQL's ``json`` type) refuse, so such a value is refused before it is stored.
    """
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, float):
            if item != item or item in (_INF, -_INF):
                where = f" at {path}" if path else ""
                return f"holds {json.dumps(item)}{where}, which is not JSON; use null or a string instead"
        elif isinstance(item, dict):
            stack.extend((f"{path}.{key}" if path else str(key), v) for key, v in item.items())
        elif isinstance(item, (list, tuple)):
            stack.extend((f"{path}[{i}]", v) for i, v in enumerate(item))
    return None


_INF = float("inf")
