"""Category paths, in one place: the id path each row keeps and the name path people write.

The id path, ``Category.path``, holds the ids from the root, ``/1/5/23/``: a subtree is one
indexed prefix scan, and a move rewrites the whole subtree in one UPDATE instead of walking
it. The name path, ``Apparel > Clothing > Shirts``, is how feeds, exports, taxonomy files
and the API name a category. Everything that builds, splits, rewrites or looks up either
kind calls this module: the model (``Category.save``), the category API (the resolver,
taxonomy imports, deletes), the taxonomy reader and the exporter.

It knows peewee but not pfdb's models, so that all of those can build on it: functions that
run SQL take the model class.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from ._peewee import peewee as pw
from .errors import ValidationError

#: The id path of "no parent": a root's path is ``/<id>/``.
ROOT = "/"
#: What separates the names of a name path, as read; ``JOIN`` is how pfdb writes one.
SEPARATOR = ">"
JOIN = " > "
MAX_NAME = 255
# Unicode category Cc except tab: a sign of a binary or mangled file, never of a name.
_CONTROL = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


# -- names and name paths ----------------------------------------------------------------
def clean_name(name: str) -> str:
    """A category name as stored and matched: NFC, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", str(name)).split())


def name_problem(raw: str) -> str | None:
    """What is wrong with a category name as given, or ``None``: shared by files and the resolver."""
    if _CONTROL.search(raw):  # before cleaning: str.split() would turn some of them into spaces
        return "a name contains a control character"
    name = clean_name(raw)
    if not name:
        return "an empty name before or after '>'"
    if len(name) > MAX_NAME:
        return f"a name is longer than {MAX_NAME} characters"
    return None


def split_names(path: str | Sequence[str]) -> tuple[str, ...]:
    """``"Apparel > Clothing"`` or ``["Apparel", "Clothing"]`` -> ``("Apparel", "Clothing")``.

    Raises ``ValidationError`` for an empty path or an empty level (``"A >  > B"``).
    """
    parts = str(path).split(SEPARATOR) if isinstance(path, str) else [str(p) for p in path]
    problem = next(filter(None, map(name_problem, parts)), None) if parts else "no name at all"
    if problem:
        shown = str(path) if len(str(path)) <= 60 else str(path)[:57] + "..."
        raise ValidationError(
            "category",
            f"{shown!r} is not a category path ({problem})",
            hint="use names separated by ' > ', e.g. 'Apparel > Shirts'",
        )
    return tuple(clean_name(part) for part in parts)


def join_names(names: Sequence[str]) -> str:
    """``("Apparel", "Clothing")`` -> ``"Apparel > Clothing"``."""
    return JOIN.join(names)


def is_name_path(text: str) -> bool:
    """Whether ``text`` names a category by its path rather than by its slug (a slug has no ``>``)."""
    return SEPARATOR in text


# -- id paths ----------------------------------------------------------------------------
def child_path(parent_path: str, category_id: int) -> str:
    """The id path of category ``category_id`` under a parent whose path is ``parent_path`` (``ROOT``: none)."""
    return f"{parent_path}{category_id}/"


def parent_path(path: str) -> str:
    """``/1/5/23/`` -> ``/1/5/``; a root's parent path is ``ROOT``."""
    return path[: path.rindex("/", 0, len(path) - 1) + 1]


def path_ids(path: str) -> list[int]:
    """``/1/5/23/`` -> ``[1, 5, 23]``: the root first, the category itself last."""
    return [int(part) for part in path.strip("/").split("/") if part]


def path_prefix(column: pw.Field, prefix: str) -> pw.Expression:
    """``column`` starts with ``prefix``, in the form each backend serves from an index.

    SQLite's LIKE is case-insensitive and skips the index; GLOB uses it. PostgreSQL's LIKE
    uses the ``varchar_pattern_ops`` index created by the initial migration. Paths hold
    only digits and slashes, so neither pattern needs escaping.
    """
    database = column.model._meta.database
    if isinstance(getattr(database, "obj", database), pw.SqliteDatabase):  # the proxy's bound database
        return pw.Expression(column, "GLOB", prefix + "*")
    return pw.Expression(column, "LIKE", prefix + "%")


def path_prefix_sql(column: pw.Field, prefix: Any) -> pw.Expression:
    """``column`` starts with ``prefix`` where the prefix is itself SQL (a subquery), so no pattern is built."""
    return pw.fn.SUBSTR(column, 1, pw.fn.LENGTH(prefix)) == prefix


def child_path_sql(parent_path: Any, category_id: Any) -> pw.Node:
    """``child_path`` in SQL, for rows whose parent path is a subquery (``NULL``: a root)."""
    return pw.fn.COALESCE(parent_path, ROOT).concat(pw.Cast(category_id, "VARCHAR")).concat("/")


def rehome_subtree(model: Any, old_path: str, new_path: str, level_delta: int, *, include_root: bool = True) -> int:
    """Give every category under ``old_path`` the prefix ``new_path`` instead, and shift its level: one UPDATE.

    ``include_root=False`` leaves the category at ``old_path`` itself alone (it is about to
    be deleted). Returns the number of rows rewritten.
    """
    where = path_prefix(model.path, old_path)
    if not include_root:
        where &= model.path != old_path
    return (
        model.update(
            path=pw.Value(new_path).concat(pw.fn.SUBSTR(model.path, len(old_path) + 1)),
            level=model.level + level_delta,
        )
        .where(where)
        .execute()
    )


# -- looking categories up by name path ----------------------------------------------------
# (by slug, then by path: ``pfdb.categories.find_category``, which adds the cache; the
# resolver's ``resolve_slug_or_path`` follows the same order and creates what is missing)
def name_paths(model: Any) -> dict[int, str]:
    """Every category id -> its name path: one query (trees are thousands of rows, not millions)."""
    nodes = {cid: (name, parent) for cid, name, parent in model.select(model.id, model.name, model.parent).tuples()}
    paths: dict[int, str] = {}
    for cid in nodes:
        chain = []
        node = cid
        while node is not None and node not in paths and node in nodes and len(chain) <= len(nodes):
            chain.append(node)
            node = nodes[node][1]
        prefix = paths.get(node) if node is not None else None
        for link in reversed(chain):
            prefix = f"{prefix}{JOIN}{nodes[link][0]}" if prefix is not None else nodes[link][0]
            paths[link] = prefix
    return paths


def find_by_names(model: Any, names: Sequence[str]) -> Any:
    """The category at the end of ``names`` from a root, or ``None``: one SELECT, never creates.

    Same-named siblings (possible before migration 002) resolve to the oldest, as the
    resolver's do. ``pfdb.categories.category_by_path`` puts the Redis cache in front.
    """
    rows = model.select().where(model.name.in_(sorted(set(names)))).order_by(model.id)
    by_parent: dict[tuple[int | None, str], Any] = {}
    for row in rows:
        by_parent.setdefault((row.parent_id, row.name), row)  # the oldest wins
    found = None
    for name in names:
        found = by_parent.get((found.id if found is not None else None, name))
        if found is None:
            return None
    return found
