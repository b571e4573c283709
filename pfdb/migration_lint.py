"""Migration safety check (``pfdb lint``): operations that break the running version or block traffic.

A deploy applies migrations while the previous version of the application still serves
requests. Some operations break that version (a dropped or renamed column) or stop its
traffic (PostgreSQL rewriting a table under an ACCESS EXCLUSIVE lock, SQLite rebuilding a
large table under its write lock). This module finds them before they run: each migration
is replayed into peewee-migrate's ``Migrator`` with ``fake=True`` on an offline twin (as
``rollback_plan`` does), and the recorded operations and raw SQL are matched against rules.

A migration acknowledges a finding, with a reason, in its own file::

    LINT_ACKNOWLEDGED = {"drop_column products.notes": "unused since 1.4; the 1.4 release stopped reading it"}

A key is ``"RULE TARGET"``; TARGET is ``table`` or ``table.column`` and may use ``*``
wildcards (``"change_column_type *"``). See docs/migration-safety.md.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from ._peewee import peewee as pw
from .database import get_database
from .errors import MigrationError
from .migrations import (
    OnlineIndex,
    _connection,
    _history,
    _load,
    _migrator_for,
    _offline_twin,
    _run_target,
    is_contract_step,
    migration_names,
    migrations_dir,
    resolve_name,
)

ACKNOWLEDGED = "LINT_ACKNOWLEDGED"  # the module-level dict a migration acknowledges findings in
# A contract step (CONTRACT = True) runs once no instance of the previous release is left:
# dropping what only that release used is its job, so its drops pass with this reason.
CONTRACT_DROPS = frozenset({"drop_table", "drop_column"})
CONTRACT_REASON = "contract step (CONTRACT = True): applied by pfdb migrate --contract once the old release is gone"
LARGE_TABLE_ROWS = 10_000  # SQLite: a table rebuild from this many rows on holds writers for long

# rule -> (backends it applies to, why it is dangerous, the safe recipe)
RULES: dict[str, tuple[frozenset[str], str, str]] = {
    "drop_table": (
        frozenset({"sqlite", "postgres"}),
        "the running version still reads and writes the table: its queries fail from the moment it is gone",
        "release code that no longer uses the table first; drop it in a later release, after a backup",
    ),
    "drop_column": (
        frozenset({"sqlite", "postgres"}),
        "the running version still selects and inserts the column: its queries fail once it is gone",
        "release models without the field first (the column nullable or with a default); drop it in the next release",
    ),
    "rename_table": (
        frozenset({"sqlite", "postgres"}),
        "the running version uses the old name: every query on the table fails from the rename on",
        "create the new table, write to both and backfill, switch reads, drop the old one in a later release",
    ),
    "rename_column": (
        frozenset({"sqlite", "postgres"}),
        "the running version uses the old name: every query on the column fails from the rename on",
        "add the new column, write both and backfill, switch reads, drop the old column in a later release",
    ),
    "add_not_null_column": (
        frozenset({"sqlite", "postgres"}),
        "a NOT NULL column without a default: the running version's INSERTs do not set it and fail "
        "(and on a table with rows the migration itself fails)",
        "add it nullable or with a default, backfill in batches, and set NOT NULL in a later release",
    ),
    "change_column_type": (
        frozenset({"sqlite", "postgres"}),
        "PostgreSQL rewrites the table under an ACCESS EXCLUSIVE lock for most type changes (every read and "
        "write waits), SQLite rebuilds it; the running version may write values the new type refuses",
        "add a column of the new type, write both, backfill in batches, switch reads, drop the old column later",
    ),
    "set_not_null": (
        frozenset({"sqlite", "postgres"}),
        "the running version may still write NULL there and fail; PostgreSQL scans the whole table under an "
        "ACCESS EXCLUSIVE lock to check it",
        "backfill first; on PostgreSQL add CHECK (col IS NOT NULL) NOT VALID, VALIDATE CONSTRAINT it in a later "
        "migration, then SET NOT NULL (12+ skips the scan) and drop the check",
    ),
    "add_index": (
        frozenset({"postgres"}),
        "CREATE INDEX without CONCURRENTLY holds a SHARE lock: every INSERT, UPDATE and DELETE on the table "
        "waits until the index is built",
        "CREATE [UNIQUE] INDEX CONCURRENTLY outside the migration's transaction; drop the INVALID index it "
        "leaves if it fails",
    ),
    "add_unique_constraint": (
        frozenset({"postgres"}),
        "ADD CONSTRAINT … UNIQUE builds its index under an ACCESS EXCLUSIVE lock: reads and writes wait",
        "CREATE UNIQUE INDEX CONCURRENTLY, then ALTER TABLE … ADD CONSTRAINT … UNIQUE USING INDEX",
    ),
    "add_foreign_key": (
        frozenset({"postgres"}),
        "ADD FOREIGN KEY checks every row while it locks both tables against writes",
        "ADD CONSTRAINT … FOREIGN KEY … NOT VALID in one migration, VALIDATE CONSTRAINT in a later one",
    ),
    "sqlite_rebuild": (
        frozenset({"sqlite"}),
        "SQLite rebuilds the table (copies every row into a new one, drops and renames it) holding the "
        "database's write lock: every writer waits for the whole copy, then times out",
        "on a large table add a new column (ALTER TABLE ADD COLUMN is instant) and backfill in batches, or "
        "run it in a maintenance window and acknowledge it",
    ),
    "python_code": (
        frozenset({"sqlite", "postgres"}),
        "migrator.run() runs Python code, which cannot be checked",
        "review what it does by hand and acknowledge it with that",
    ),
}


@dataclass(frozen=True)
class Finding:
    migration: str
    rule: str
    target: str  # "products" or "products.notes"
    operation: str  # the operation or SQL, in short
    acknowledged: str | None = None  # the migration's reason, when it acknowledged this finding

    @property
    def key(self) -> str:
        """What ``LINT_ACKNOWLEDGED`` names this finding by: ``"drop_column products.notes"``."""
        return f"{self.rule} {self.target}"

    @property
    def why(self) -> str:
        return RULES[self.rule][1]

    @property
    def recipe(self) -> str:
        return RULES[self.rule][2]

    def as_dict(self) -> dict[str, Any]:
        return {
            "migration": self.migration,
            "rule": self.rule,
            "target": self.target,
            "key": self.key,
            "operation": self.operation,
            "why": self.why,
            "recipe": self.recipe,
            "acknowledged": self.acknowledged,
        }


@dataclass(frozen=True)
class LintResult:
    backend: str
    checked: tuple[str, ...]
    findings: tuple[Finding, ...]  # acknowledged ones too

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.acknowledged is None)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {
            "backend": self.backend,
            "checked": list(self.checked),
            "ok": self.ok,
            "findings": [f.as_dict() for f in self.findings],
        }


# -- the API -------------------------------------------------------------------------------------
def lint(versions: Sequence[str] | None = None, *, large_rows: int = LARGE_TABLE_ROWS) -> LintResult:
    """Check the pending migrations (or ``versions``: ``["002", "004_x"]``) for unsafe operations.

    Needs the database for the history and, on SQLite, the size of tables a step would
    rebuild (``large_rows`` rows and more count as large). Changes nothing.

    Example: ``assert lint().ok``; ``lint(["002"]).findings``
    """
    database = get_database()
    directory = migrations_dir()
    names = migration_names(directory)
    kind = "sqlite" if isinstance(database, pw.SqliteDatabase) else "postgres"
    with _connection(database):
        if versions:
            wanted = {resolve_name(v, names) for v in versions}
            targets = [n for n in names if n in wanted]
        else:
            done = {m.name for m in _history(database)}
            targets = [n for n in names if n not in done]
        findings: list[Finding] = []
        for name in targets:
            findings.extend(_check(database, kind, name, names, directory, large_rows))
    return LintResult(backend=kind, checked=tuple(targets), findings=tuple(findings))


def _check(
    database: pw.Database, kind: str, name: str, names: list[str], directory: Path, large_rows: int
) -> list[Finding]:
    scope = _load(name, directory)
    acks = _acknowledgements(name, scope)
    contract = is_contract_step(name, directory)
    fn = scope.get("migrate")
    if fn is None:
        return []
    migrator = _migrator_for(database, names[: names.index(name)], directory)
    try:
        fn(migrator, _offline_twin(database), fake=True)
    except Exception as exc:
        raise MigrationError(
            f"cannot tell what migration {name} does: {type(exc).__name__}: {exc}",
            hint="fix its migrate(); nothing was changed",
        ) from exc
    created = {op.__self__._meta.table_name for op in migrator.__ops__ if _is_create_table(op)}
    raw: list[tuple[str, str, str]] = []
    for op in migrator.__ops__:
        raw.extend(_classify(op, kind))
    findings = []
    seen = set()
    for rule, target, operation in raw:
        table = target.split(".", 1)[0]
        if kind not in RULES[rule][0] or (table in created and rule != "python_code"):
            continue  # a table made by this very migration is empty and unused by the running version
        if rule == "sqlite_rebuild" and _rows(database, table) < large_rows:
            continue
        if (rule, target, operation) in seen:
            continue
        seen.add((rule, target, operation))
        key = f"{rule} {target}"
        reason = next((why for pattern, why in acks.items() if fnmatchcase(key, pattern)), None)
        if reason is None and contract and rule in CONTRACT_DROPS:
            reason = CONTRACT_REASON
        findings.append(Finding(name, rule, target, operation, reason))
    return findings


def _acknowledgements(name: str, scope: dict[str, Any]) -> dict[str, str]:
    acks = scope.get(ACKNOWLEDGED, {})
    bad = not isinstance(acks, dict) or any(
        not isinstance(k, str) or len(k.split(" ", 1)) != 2 or not isinstance(v, str) or not v.strip()
        for k, v in acks.items()
    )
    if bad:
        raise MigrationError(
            f"{ACKNOWLEDGED} in migration {name} must map 'RULE TARGET' to a reason",
            hint='e.g. LINT_ACKNOWLEDGED = {"drop_column products.notes": "unused since release 1.4"}',
        )
    unknown = [k for k in acks if k.split(" ", 1)[0] not in RULES]
    if unknown:
        raise MigrationError(
            f"{ACKNOWLEDGED} in migration {name} names an unknown rule in {unknown[0]!r}",
            hint=f"rules: {', '.join(RULES)}",
        )
    return acks


def _rows(database: pw.Database, table: str) -> int:
    if not database.table_exists(table):
        return 0
    return database.execute_sql(f'SELECT COUNT(*) FROM "{table}"').fetchone()[0]


# -- operations -> (rule, target, operation) -------------------------------------------------------
def _is_create_table(op: Any) -> bool:
    return getattr(op, "__name__", "") == "create_table" and hasattr(getattr(op, "__self__", None), "_meta")


def _sqlite_rebuilds(fn: str) -> bool:
    """Whether playhouse's SqliteMigrator copies the table for ``fn`` on this SQLite."""
    version = sqlite3.sqlite_version_info
    if fn in ("change_column", "alter_column_type", "add_column_default", "drop_column_default"):
        return True
    return {
        "drop_column": version < (3, 35, 0),
        "rename_column": version < (3, 25, 0),
        "add_not_null": version < (3, 53, 0),
        "drop_not_null": version < (3, 53, 0),
    }.get(fn, False)


def _classify(op: Any, kind: str) -> list[tuple[str, str, str]]:
    from playhouse.migrate import Operation

    if isinstance(op, pw.SQL):  # what migrator.sql() records on some peewee-migrate versions
        return _classify_sql(op.sql)
    if isinstance(op, OnlineIndex):
        return []  # add_index_concurrently(): the safe recipe itself
    if not isinstance(op, Operation):
        if _is_create_table(op):
            return []
        return [("python_code", "*", f"migrator.run({_run_target(op)})")]
    fn = getattr(op.fn, "__name__", "")
    args = op.args
    if fn == "sql":
        return _classify_sql(str(args[0]))
    table = str(args[0]) if args else "?"
    shown = f"{fn}({', '.join(repr(a) for a in args if isinstance(a, (str, int)))})"
    found: list[tuple[str, str, str]] = []
    if fn == "drop_table":
        found.append(("drop_table", table, shown))
    elif fn == "drop_column":
        found.append(("drop_column", f"{table}.{args[1]}", shown))
    elif fn == "rename_table":
        found.append(("rename_table", table, shown))
    elif fn == "rename_column":
        found.append(("rename_column", f"{table}.{args[1]}", shown))
    elif fn == "add_column":
        field, column = args[2], f"{table}.{args[1]}"
        if not field.null:
            if field.default is None:
                found.append(("add_not_null_column", column, shown))
            elif not op.kwargs.get("allow_not_null") and not (len(args) > 3 and args[3]):
                found.append(("set_not_null", column, f"{shown}: backfills every row, then SET NOT NULL"))
                if _sqlite_rebuilds("add_not_null"):
                    found.append(("sqlite_rebuild", table, shown))
        if field.unique:
            found.append(("add_index", table, f"{shown}: a unique index"))
        elif field.index:
            found.append(("add_index", table, f"{shown}: an index"))
    elif fn in ("change_column", "alter_column_type"):
        found.append(("change_column_type", f"{table}.{args[1]}", shown))
        if fn == "change_column" and not args[2].null:
            found.append(("set_not_null", f"{table}.{args[1]}", shown))
    elif fn == "add_not_null":
        found.append(("set_not_null", f"{table}.{args[1]}", shown))
    elif fn == "add_index":
        unique = args[2] if len(args) > 2 else op.kwargs.get("unique", False)
        found.append(("add_index", table, f"{shown}{': a unique index' if unique else ''}"))
    elif fn == "add_unique":
        found.append(("add_unique_constraint", table, shown))
    elif fn == "add_foreign_key_constraint":
        found.append(("add_foreign_key", f"{table}.{args[1]}", shown))
    elif fn == "add_constraint":
        found.extend(_classify_sql(f'ALTER TABLE "{table}" ADD CONSTRAINT {args[1]} {_sql_text(args[2])}'))
    if kind == "sqlite" and _sqlite_rebuilds(fn) and fn != "add_column":
        found.append(("sqlite_rebuild", table, shown))
    return found


def _sql_text(node: Any) -> str:
    if isinstance(node, pw.SQL):
        return node.sql
    return str(node)


_NAME = r'(?:"([^"]+)"|(\w+))'  # a quoted or bare identifier: two groups
_ALTER_TABLE = re.compile(rf"^\s*ALTER\s+TABLE\s+(?:IF\s+EXISTS\s+)?(?:ONLY\s+)?{_NAME}\s+(.*)$", re.I | re.S)
_DROP_TABLE = re.compile(rf"^\s*DROP\s+TABLE\s+(?:IF\s+EXISTS\s+)?{_NAME}", re.I)
_CREATE_INDEX = re.compile(
    rf"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+(CONCURRENTLY\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?:{_NAME}\s+)?ON\s+(?:ONLY\s+)?{_NAME}",
    re.I,
)
_CLAUSES = (  # (rule, pattern on one clause of ALTER TABLE; group 1/2: the column, if any)
    ("rename_table", re.compile(r"^RENAME\s+TO\b", re.I)),
    ("rename_column", re.compile(rf"^RENAME\s+(?:COLUMN\s+)?{_NAME}\s+TO\b", re.I)),
    ("drop_column", re.compile(rf"^DROP\s+(?:COLUMN\s+)?(?:IF\s+EXISTS\s+)?(?!CONSTRAINT\b){_NAME}", re.I)),
    ("change_column_type", re.compile(rf"^ALTER\s+(?:COLUMN\s+)?{_NAME}\s+(?:SET\s+DATA\s+)?TYPE\b", re.I)),
    ("set_not_null", re.compile(rf"^ALTER\s+(?:COLUMN\s+)?{_NAME}\s+SET\s+NOT\s+NULL\b", re.I)),
)
_ADD_COLUMN = re.compile(rf"^ADD\s+(?:COLUMN\s+)?(?:IF\s+NOT\s+EXISTS\s+)?(?!CONSTRAINT\b){_NAME}(.*)$", re.I | re.S)


def _split(text: str, sep: str) -> list[str]:
    """Split at ``sep`` outside parentheses and quotes."""
    parts, depth, quote, current = [], 0, None, []
    for ch in text:
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _classify_sql(sql: str) -> list[tuple[str, str, str]]:
    """The rules one ``migrator.sql()`` string breaks, statement by statement."""
    found: list[tuple[str, str, str]] = []
    for statement in _split(sql, ";"):
        shown = " ".join(statement.split())
        shown = shown if len(shown) <= 100 else shown[:97] + "..."
        if m := _DROP_TABLE.match(statement):
            found.append(("drop_table", m[1] or m[2], shown))
        elif m := _CREATE_INDEX.match(statement):
            if not m[2]:
                found.append(("add_index", m[5] or m[6], shown))
        elif m := _ALTER_TABLE.match(statement):
            table = m[1] or m[2]
            for clause in _split(m[3], ","):
                found.extend((rule, target, shown) for rule, target in _classify_clause(table, clause))
    return found


def _classify_clause(table: str, clause: str) -> list[tuple[str, str]]:
    upper = " ".join(clause.upper().split())
    for rule, pattern in _CLAUSES:
        if m := pattern.match(clause):
            column = (m[1] or m[2]) if m.groups() else None
            return [(rule, f"{table}.{column}" if column else table)]
    if upper.startswith("ADD"):
        found = []
        constraint = bool(re.match(r"^ADD\s+(CONSTRAINT\b|UNIQUE\b|PRIMARY\s+KEY\b|FOREIGN\s+KEY\b|CHECK\b)", upper))
        if not constraint and (m := _ADD_COLUMN.match(clause)):
            column, rest = f"{table}.{m[1] or m[2]}", " ".join(m[3].upper().split())
            if "NOT NULL" in rest and "DEFAULT" not in rest:
                found.append(("add_not_null_column", column))
        if constraint and re.search(r"\b(UNIQUE|PRIMARY\s+KEY)\b", upper) and "USING INDEX" not in upper:
            found.append(("add_unique_constraint", table))
        if constraint and re.search(r"\b(FOREIGN\s+KEY|REFERENCES)\b", upper) and "NOT VALID" not in upper:
            found.append(("add_foreign_key", table))
        return found
    return []
