"""002_unique_category_names: one category per (parent, name), so racing importers build one tree.

Written by hand: peewee-migrate cannot express an index on an expression. A root's parent
is NULL, and NULLs never collide in a unique index, so the index is on
``COALESCE(parent_id, 0)`` (ids start at 1): roots share the key 0 and two roots with one
name collide like any other siblings. The same SQL works on SQLite (3.9+) and PostgreSQL.

Existing duplicates (left by concurrent imports before this rule) are not merged behind
the operator's back: the migration fails, names them, and changes nothing.
"""

import peewee as pw
from peewee_migrate import Migrator

INDEX = "categories_parent_id_name"
# pfdb lint: built in the step's transaction on purpose (duplicates must fail the step, and the
# category tree is small: hundreds to a few thousand rows, built in milliseconds).
LINT_ACKNOWLEDGED = {
    "add_index categories": "categories is a small tree; the index must be built in the step's transaction",
}
_SHOWN = 5


def duplicate_siblings(database: pw.Database) -> list[tuple]:
    """``(parent_id, name, ids)`` of every group of same-named siblings, biggest first."""
    rows = database.execute_sql(
        "SELECT parent_id, name, id FROM categories WHERE (COALESCE(parent_id, 0), name) IN "
        "(SELECT COALESCE(parent_id, 0), name FROM categories GROUP BY COALESCE(parent_id, 0), name "
        "HAVING COUNT(*) > 1) ORDER BY parent_id, name, id"
    ).fetchall()
    groups: dict[tuple, list[int]] = {}
    for parent_id, name, cid in rows:
        groups.setdefault((parent_id, name), []).append(cid)
    return sorted(((p, n, ids) for (p, n), ids in groups.items()), key=lambda g: (-len(g[2]), g[2][0]))


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Add the unique (parent, name) rule to categories, refusing if duplicates exist."""
    if not fake:
        groups = duplicate_siblings(database)
        if groups:
            shown = "; ".join(
                f"{name!r} under {'the root' if parent is None else f'category {parent}'} (ids {', '.join(map(str, ids))})"
                for parent, name, ids in groups[:_SHOWN]
            )
            more = f" and {len(groups) - _SHOWN} more" if len(groups) > _SHOWN else ""
            raise ValueError(
                f"categories share a parent and a name ({len(groups)} {'group' if len(groups) == 1 else 'groups'}): "
                f"{shown}{more}; "
                "merge them (pfdb.categories.merge_duplicate_categories()) or rename them, then migrate again"
            )
    migrator.sql(f'CREATE UNIQUE INDEX "{INDEX}" ON "categories" (COALESCE("parent_id", 0), "name")')


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop the unique (parent, name) rule."""
    migrator.sql(f'DROP INDEX IF EXISTS "{INDEX}"')
