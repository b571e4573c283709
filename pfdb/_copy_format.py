"""A row as PostgreSQL's ``COPY … TO STDOUT (FORMAT text)`` writes it: the one form ``pfdb copy``
moves and verifies rows in, whichever backends it copies between.

PostgreSQL produces it itself (in a UTC session, ISO dates). Rows read from SQLite are
rendered into exactly that line by ``lines_function``: the shapes SQLite hands back for pfdb's
columns take inline fast paths, and ``copy_text`` does the rest (JSON in jsonb's spelling,
UUIDs, text needing escapes, anything stored in an unusual form). ``from_copy_text`` reads a
field of such a line back into the value pfdb's SQLite models store.

Kinds: ``text``, ``int``, ``bool``, ``datetime``, ``uuid``, ``json`` and ``decimal.N`` (N places).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import uuid
from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

NULL = "\\N"
_MASK64 = (1 << 64) - 1
# COPY's text escapes, as PostgreSQL writes them (CopyAttributeOutText): other control
# characters are written as they are.
_ESCAPES = str.maketrans({"\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"})
_UNESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)


def escape(text: str) -> str:
    return text.translate(_ESCAPES) if not text.isprintable() or "\\" in text else text


def unescape(field: str) -> str:
    return _UNESCAPE_RE.sub(lambda m: _UNESCAPES.get(m.group(1), m.group(1)), field) if "\\" in field else field


# -- SQLite values into the COPY text ----------------------------------------------------------
def copy_text(kind: str, value: Any) -> str:
    """A value as SQLite holds it, as PostgreSQL's COPY text of the column's type writes it.

    A value that cannot be read as its kind is passed on as its text: PostgreSQL then refuses
    it with its own message, or the verification finds the table that differs.
    """
    if value is None:
        return NULL
    if value.__class__ is bytes:
        value = value.decode("utf-8")
    try:
        if kind == "json":
            return escape(jsonb_text(value))
        if kind == "uuid":
            return str(uuid.UUID(str(value)))
        if kind == "datetime":
            return _timestamptz_text(value)
        if kind == "bool":
            if value in (1, "1", "t", "true"):
                return "t"
            if value in (0, "0", "f", "false"):
                return "f"
        elif kind == "int":
            if isinstance(value, float) and value.is_integer():
                return str(int(value))
        elif kind.startswith("decimal."):
            number = value if isinstance(value, (int, float)) else Decimal(str(value))
            return format(number, f".{kind[8:]}f")
    except (ValueError, TypeError, InvalidOperation, OverflowError):
        pass
    return escape(value if value.__class__ is str else str(value))


def _timestamptz_text(value: Any) -> str:
    moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.timezone.utc).replace(tzinfo=None)
    text = moment.isoformat(" ")  # microseconds only when not zero
    return (text.rstrip("0") if moment.microsecond else text) + "+00"


def jsonb_text(value: Any) -> str:
    """JSON text spelled as PostgreSQL's ``jsonb`` writes it: keys by length then bytes, the
    last of duplicate keys, ``", "`` and ``": "``, numbers as ``numeric`` prints them."""
    if isinstance(value, str):
        value = json.loads(value, parse_float=Decimal, parse_constant=_no_constant)
    return _jsonb(value)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _jsonb(value: Any) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)  # escapes exactly as escape_json() does
    if isinstance(value, Decimal):
        return format(abs(value) if value == 0 else value, "f")  # numeric has no -0
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _jsonb(Decimal(repr(value)))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_jsonb(v) for v in value) + "]"
    if isinstance(value, dict):
        keys = sorted(
            value, key=lambda k: (len(k.encode("utf-8", "surrogatepass")), k.encode("utf-8", "surrogatepass"))
        )
        return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)}: {_jsonb(value[k])}" for k in keys) + "}"
    raise ValueError(f"{type(value).__name__} is not JSON")


# Per kind, the COPY text of a non-NULL value ``{v}`` as one inline expression: the forms
# SQLite hands back for pfdb's columns take a path with no call, anything else goes to
# ``copy_text`` ({f}), so the line is the same as ``copy_text`` would give (a test holds
# both to PostgreSQL's own output).
_INLINE = {
    "text": '({v} if {v}.__class__ is str and {v}.isprintable() and "\\\\" not in {v} else {f}("text", {v}))',
    "int": '(str({v}) if {v}.__class__ is int else {f}("int", {v}))',
    "bool": '("t" if {v} == 1 else "f" if {v} == 0 else {f}("bool", {v}))',
    # peewee's text: '2026-12-03 14:00:00.123400' is written '2026-12-03 14:00:00.1234+00'
    "datetime": (
        '(({v}[:19] if {v}.endswith("000000") else {v}.rstrip("0")) + "+00" '
        'if {v}.__class__ is str and len({v}) == 26 and {v}[10] == " " and {v}[19] == "." '
        'else {v} + "+00" if {v}.__class__ is str and len({v}) == 19 and {v}[10] == " " '
        'else {f}("datetime", {v}))'
    ),
    "decimal": '(f"{{{v}:.{places}f}}" if {v}.__class__ is float or {v}.__class__ is int else {f}("{kind}", {v}))',
}


def lines_function(kinds: list[str]) -> Callable[[list[tuple]], list[str]]:
    """A function from a batch of rows (values as SQLite holds them) to their COPY text lines.

    Generated once per table so that the per-value work is inline expressions rather than a
    Python call per value, which dominated the copy's time.
    """
    names = [f"a{i}" for i in range(len(kinds))]
    fields = []
    for name, kind in zip(names, kinds, strict=True):
        if kind.startswith("decimal."):
            field = _INLINE["decimal"].format(v=name, f="_f", places=int(kind[8:]), kind=kind)
        elif kind in _INLINE:
            field = _INLINE[kind].format(v=name, f="_f")
        else:
            field = f'_f("{kind}", {name})'
        fields.append(f'("\\\\N" if {name} is None else {field})')  # NULLs are many: no call
    source = "\n".join(
        [
            "def lines(rows):",
            f'    return ["\\t".join(({", ".join(fields)},)) for {", ".join(names)}, in rows]',
        ]
    )
    env: dict[str, Any] = {"_f": copy_text}
    exec(source, env)  # noqa: S102 - code built above from fixed templates and kinds, no input text
    return env["lines"]


# -- COPY text into SQLite values --------------------------------------------------------------
def from_copy_text(kind: str) -> Callable[[str], Any]:
    """How a field of a COPY text line becomes the value pfdb's SQLite models store."""
    if kind == "int":
        return lambda f: None if f == NULL else int(f)
    if kind == "bool":
        return lambda f: None if f == NULL else (1 if f == "t" else 0)
    if kind.startswith("decimal."):
        return lambda f: None if f == NULL else f  # NUMERIC affinity stores '19.90' as 19.9, as peewee does
    if kind == "uuid":
        return lambda f: None if f == NULL else f.replace("-", "")  # peewee stores the hex
    if kind == "datetime":
        return _sqlite_datetime
    return lambda f: None if f == NULL else unescape(f)


def _sqlite_datetime(field: str) -> str | None:
    """'2026-12-03 14:00:00.1+00' as peewee stores it: '2026-12-03 14:00:00.100000'."""
    if field == NULL:
        return None
    if field.endswith("+00") and len(field) >= 22 and field[10] == " ":
        body = field[:-3]
        return body if len(body) == 19 else body[:20] + body[20:].ljust(6, "0")
    return str(dt.datetime.fromisoformat(field).astimezone(dt.timezone.utc).replace(tzinfo=None))


# -- the checksum ------------------------------------------------------------------------------
_H0 = hashlib.blake2b(digest_size=8)


def sum_lines(lines: Iterable[str]) -> int:
    """The sum (mod 2**64) of each line's 64-bit BLAKE2b: the same whatever the rows' order."""
    copy, from_bytes = _H0.copy, int.from_bytes
    total = 0
    for line in lines:
        h = copy()
        h.update(line.encode("utf-8", "surrogatepass"))
        total += from_bytes(h.digest(), "big")
    return total & _MASK64


def copy_line(kinds: list[str], row: tuple) -> str:
    """One row's line by ``copy_text`` alone: what ``lines_function``'s fast paths must equal."""
    return "\t".join(copy_text(kind, value) for kind, value in zip(kinds, row, strict=True))
