"""The category tree as an API: resolving paths to ids, importing taxonomies, moving and deleting subtrees.

The tree lives in ``Category`` as materialized paths (``/1/5/23/``; ``pfdb.category_paths``
owns every rule about them and about ``A > B`` name paths), so every operation here that
touches a subtree does it with one prefix UPDATE, never node by node. Slugs follow one rule everywhere (``slug_candidates``) and never change once given.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from . import cache
from ._peewee import peewee as pw
from .category_paths import (
    ROOT,
    SEPARATOR,
    child_path,
    child_path_sql,
    find_by_names,
    is_name_path,
    join_names,
    parent_path,
    path_prefix,
    path_prefix_sql,
    rehome_subtree,
    split_names,
)
from .database import borrow_connection, db_session_scope, get_database, writes_to_primary
from .errors import FeedError, NotFoundError, ValidationError
from .models import Category, Icon, Product
from .models.fields import utcnow
from .taxonomy import TaxonomyNode, read_taxonomy, source_name
from .text import first_line, slugify

PATH_SEPARATOR = SEPARATOR  # the names this module has offered; pfdb.category_paths owns them
split_path = split_names
SLUG_MAX = 255
# Candidates asked about in one query when the resolver needs a new slug.
_SLUG_BATCH = 12
# Fresh slug choices a new category gets when racing writers keep taking the chosen one.
_CREATE_ATTEMPTS = 5


# -- slugs -------------------------------------------------------------------------------
def _join_slug(*parts: str) -> str:
    """Hyphen-joined slug parts, cut to the column's length from the front part's end."""
    parts = tuple(p for p in parts if p)
    slug = "-".join(parts)
    if len(slug) <= SLUG_MAX:
        return slug
    tail = "-".join(parts[1:])
    head = parts[0][: max(1, SLUG_MAX - len(tail) - 1)].rstrip("-")
    return f"{head}-{tail}"[:SLUG_MAX].rstrip("-")


def slug_candidates(name: str, parent_slug: str | None = None, external_id: str | None = None) -> Iterator[str]:
    """The slugs a new category may take, best first; the first one not taken wins.

    ``slugify(name)``; then the parent's slug in front ("accessories" under "Clothing" ->
    "clothing-accessories"); then that with the external id, then with -2, -3, … appended.
    """
    base = slugify(name) or "category"
    yield base
    prefixed = _join_slug(parent_slug, base) if parent_slug else base
    if prefixed != base:
        yield prefixed
    ext = slugify(str(external_id)) if external_id is not None else ""
    if ext:
        yield _join_slug(prefixed, ext)
    n = 2
    while True:
        yield _join_slug(prefixed, str(n))
        n += 1


def choose_slug(name: str, parent_slug: str | None, external_id: str | None, is_taken: Callable[[str], bool]) -> str:
    """The first of ``slug_candidates`` for which ``is_taken`` is false."""
    return next(s for s in slug_candidates(name, parent_slug, external_id) if not is_taken(s))


def _free_slug_from_db(name: str, parent_slug: str | None, external_id: str | None = None) -> str:
    """One query per batch of candidates: the first candidate no category has."""
    candidates = slug_candidates(name, parent_slug, external_id)
    while True:
        batch = [next(candidates) for _ in range(_SLUG_BATCH)]
        taken = {s for (s,) in Category.select(Category.slug).where(Category.slug.in_(batch)).tuples()}
        for slug in batch:
            if slug not in taken:
                return slug


# What a new category row is written with, by _insert_node and _insert_rows alike.
_INSERT_COLUMNS = (
    "name",
    "slug",
    "parent_id",
    "level",
    "path",
    "external_id",
    "sort_order",
    "is_active",
    "created_at",
    "updated_at",
)


def _insert_node(
    name: str, slug: str, parent_id: int | None, parent_path: str, level: int, external_id: str | None = None
) -> tuple[int, str] | None:
    """INSERT one category unless it (or its slug) exists, and set its path; ``None`` if nothing was inserted.

    ``ON CONFLICT DO NOTHING`` (both backends) instead of catching IntegrityError: on
    PostgreSQL a racing process's uncommitted row with the same (parent, name) makes this
    wait for that transaction, and then do nothing rather than fail, so the caller can read
    the winner's row (``_existing_node``). Bypasses ``Category.save()`` because the caller
    already knows the parent's path and level. Returns ``(id, path)``.
    """
    database = get_database()
    now = utcnow()
    columns = _INSERT_COLUMNS
    values = (
        name,
        slug,
        parent_id,
        level,
        parent_path,
        external_id,
        0,
        Category.is_active.db_value(True),
        Category.created_at.db_value(now),
        Category.updated_at.db_value(now),
    )
    quoted = ", ".join(f'"{c}"' for c in columns)
    marks = ", ".join([database.param] * len(columns))
    sql = f'INSERT INTO "{Category._meta.table_name}" ({quoted}) VALUES ({marks}) ON CONFLICT DO NOTHING'
    with database.atomic():
        if isinstance(database, pw.PostgresqlDatabase):
            row = database.execute_sql(sql + ' RETURNING "id"', values).fetchone()
            new_id = row[0] if row else None
        else:  # sqlite3: rowcount is 0 when the row was skipped (lastrowid would be stale then)
            cursor = database.execute_sql(sql, values)
            new_id = cursor.lastrowid if cursor.rowcount == 1 else None
        if new_id is None:
            return None
        path = child_path(parent_path, new_id)
        Category.update(path=path).where(Category.id == new_id).execute()
    return new_id, path


def _existing_node(name: str, parent_id: int | None) -> tuple[int, str, int, str] | None:
    """``(id, path, level, slug)`` of the category named ``name`` under ``parent_id``, if any."""
    parent = Category.parent.is_null() if parent_id is None else (Category.parent == parent_id)
    return (
        Category.select(Category.id, Category.path, Category.level, Category.slug)
        .where(parent & (Category.name == name))
        .tuples()
        .first()
    )


# -- the resolver used by product imports ------------------------------------------------
class CategoryResolver:
    """Turns category paths (or slugs) into category ids, creating missing levels.

    Make one per import: it caches every path it has seen, so a feed naming the same
    category 10,000 times costs one lookup. A cached path costs no query; an uncached
    one costs one SELECT (every category carrying one of its names), plus, per level that
    does not exist yet, a slug check, an INSERT and the path UPDATE. It uses the caller's
    connection and transaction (creations run in a savepoint); if the caller rolls back,
    throw the resolver away (or ``clear()`` it), as its cache then names ids that are gone.

    Example::

        resolver = CategoryResolver()
        with db_session_scope():
            shirt_id = resolver.resolve("Apparel > Clothing > Shirts")
    """

    def __init__(self) -> None:
        # names from the root -> (id, path, level, slug)
        self._nodes: dict[tuple[str, ...], tuple[int, str, int, str]] = {}
        self._slugs: dict[str, int] = {}
        self._texts: dict[str, int] = {}  # the path exactly as given -> id
        #: categories this resolver created, in creation order
        self.created: list[int] = []

    def clear(self) -> None:
        self._nodes.clear()
        self._slugs.clear()
        self._texts.clear()
        self.created.clear()

    def resolve(self, path: str | Sequence[str]) -> int:
        """The id of the leaf of ``path`` (``"A > B > C"`` or ``["A", "B", "C"]``), creating missing levels.

        Each level is found by (parent, name); a missing one gets a new category with a
        unique slug. Raises ``ValidationError`` for an empty path or level.
        """
        if isinstance(path, str) and path in self._texts:  # the common case: a feed repeats its values
            return self._texts[path]
        names = split_names(path)
        hit = self._nodes.get(names)
        if hit is not None:
            return self._remember(path, hit[0])
        depth = len(names) - 1
        while depth > 0 and names[:depth] not in self._nodes:
            depth -= 1
        self._lookup(names, depth)
        for i in range(depth, len(names)):
            key = names[: i + 1]
            if key not in self._nodes:
                self._create(key)
        return self._remember(path, self._nodes[names][0])

    def _remember(self, path: str | Sequence[str], category_id: int) -> int:
        if isinstance(path, str):
            self._texts[path] = category_id
        return category_id

    def resolve_slug_or_path(self, value: str) -> int:
        """A path if ``value`` contains ``>``; else the category with that slug; else a one-level path.

        The order of ``find_category``, which only looks; this creates what is missing.
        """
        text = str(value).strip()
        if is_name_path(text):
            return self.resolve(text)
        if text in self._slugs:
            return self._slugs[text]
        row = Category.by_slug(text)
        if row is not None:
            self._slugs[text] = row.id
            return row.id
        return self.resolve([text])

    def _lookup(self, names: tuple[str, ...], start: int) -> None:
        """Cache the existing levels of ``names`` below the cached prefix ``names[:start]``: one SELECT."""
        wanted = set(names[start:])
        rows = (
            Category.select(Category.id, Category.name, Category.parent, Category.path, Category.level, Category.slug)
            .where(Category.name.in_(sorted(wanted)))
            .order_by(Category.id)
            .tuples()
        )
        by_parent: dict[tuple[int | None, str], tuple[int, str, int, str]] = {}
        for cid, name, parent_id, cpath, level, slug in rows:
            by_parent.setdefault((parent_id, name), (cid, cpath, level, slug))  # the oldest wins
        parent_id = self._nodes[names[:start]][0] if start else None
        for i in range(start, len(names)):
            node = by_parent.get((parent_id, names[i]))
            if node is None:
                return
            self._nodes[names[: i + 1]] = node
            parent_id = node[0]

    def _create(self, key: tuple[str, ...]) -> None:
        """Insert-or-get one level: racing processes (or threads) end with one category, each
        counting in ``created`` only the rows it inserted itself."""
        parent = self._nodes.get(key[:-1]) if len(key) > 1 else None
        parent_id, parent_path, parent_level, parent_slug = (
            (parent[0], parent[1], parent[2], parent[3]) if parent else (None, ROOT, -1, None)
        )
        for _ in range(_CREATE_ATTEMPTS):
            slug = _free_slug_from_db(key[-1], parent_slug)
            inserted = _insert_node(key[-1], slug, parent_id, parent_path, parent_level + 1)
            if inserted is not None:
                self._nodes[key] = (inserted[0], inserted[1], parent_level + 1, slug)
                self.created.append(inserted[0])
                return
            found = _existing_node(key[-1], parent_id)
            if found is not None:  # another writer created this very category first
                self._nodes[key] = found
                return
            # else another writer took the slug between our check and the insert: choose again
        raise FeedError(
            f"could not create the category {join_names(key)!r}: its slug kept being taken by other writers",
            hint="re-run the import",
        )


# -- looking categories up (through the Redis cache when there is one) ------------------------
def category_by_path(path: str | Sequence[str]) -> Category | None:
    """The category of ``"Apparel > Shirts"`` (or ``["Apparel", "Shirts"]``), or None; never creates one.

    Example: ``category_by_path("Apparel > Shirts").slug``
    """
    names = split_names(path)
    return cache.lookup_row(Category, "path", SEPARATOR.join(names), lambda: find_by_names(Category, names))


def find_category(value: str) -> Category:
    """A category by slug, else by its ``A > B`` path (a root by its name); never creates one.

    Raises ``NotFoundError``. Example: ``find_category("shirts").id``
    """
    text = str(value).strip()
    row = Category.by_slug(text) if text else None
    if row is None and text:
        row = category_by_path(text)
    if row is None:
        raise NotFoundError(f"category {text!r} does not exist", hint="give a category slug or its full 'A > B' path")
    return row


# -- importing a taxonomy ----------------------------------------------------------------
# Rows inserted by the current level carry this path until one UPDATE gives them their real
# one; real paths always start with "/", so no finished row can match it.
_PENDING_PATH = "~"
# pg_advisory_xact_lock key of taxonomy imports ("pfdbtaxo" as a 64-bit integer)
_TAXONOMY_LOCK_KEY = int.from_bytes(b"pfdbtaxo", "big") - 2**63
_INSERT_BATCH = 500


@dataclass(frozen=True)
class CategoryImportResult:
    """What ``import_categories`` did (or, with ``dry_run``, would do)."""

    created: int
    updated: int
    unchanged: int
    total: int
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "created": self.created,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "total": self.total,
            "dry_run": self.dry_run,
        }


@dataclass
class _New:
    key: int  # negative until inserted
    node: TaxonomyNode
    slug: str
    parent_key: int | None


@dataclass
class _Change:
    category_id: int
    node: TaxonomyNode
    fields: dict[str, Any]  # name, parent (a plan key) and/or external_id


@dataclass
class _Plan:
    creates: list[_New] = field(default_factory=list)
    changes: list[_Change] = field(default_factory=list)
    unchanged: int = 0


def _plan(nodes: list[TaxonomyNode], source: str) -> _Plan:
    """Match every file node to a category (by external id, else by parent and name) in memory.

    One SELECT loads the tree. Keys of categories still to be created are negative.
    """
    rows = {
        cid: (name, parent_id, slug, ext)
        for cid, name, parent_id, slug, ext in Category.select(
            Category.id, Category.name, Category.parent, Category.slug, Category.external_id
        )
        .order_by(Category.id)
        .tuples()
    }
    by_ext = {ext: cid for cid, (_, _, _, ext) in rows.items() if ext is not None}
    by_parent_name: dict[tuple[int | None, str], list[int]] = {}
    for cid, (name, parent_id, _, _) in rows.items():
        by_parent_name.setdefault((parent_id, name), []).append(cid)
    taken = {slug for (_, _, slug, _) in rows.values()}
    # Categories the file names by id are theirs alone: never matched by name to another line.
    claimed = {by_ext[n.external_id] for n in nodes if n.external_id in by_ext}
    key_of: dict[tuple[str, ...], int] = {}
    slug_of: dict[int, str] = {}
    plan = _Plan()
    for node in nodes:
        parent_key = key_of[node.names[:-1]] if node.depth else None
        name = node.names[-1]
        match = by_ext.get(node.external_id) if node.external_id is not None else None
        if match is None and (parent_key is None or parent_key > 0):
            free = [cid for cid in by_parent_name.get((parent_key, name), ()) if cid not in claimed]
            # A line with an id takes a same-named category only if that has no id yet.
            usable = [cid for cid in free if node.external_id is None or rows[cid][3] is None]
            if usable:
                match = usable[0]
            elif free:
                raise FeedError(
                    f"{source} line {node.line}: {node.path!r} already exists with id {rows[free[0]][3]}, "
                    f"the file gives it id {node.external_id}",
                    hint="rename, move or delete the existing category first",
                )
        if match is not None:
            claimed.add(match)
            old_name, old_parent, slug, old_ext = rows[match]
            fields: dict[str, Any] = {}
            if old_name != name:
                fields["name"] = name
            if old_parent != parent_key:
                fields["parent"] = parent_key
            if node.external_id is not None and old_ext != node.external_id:
                fields["external_id"] = node.external_id
            if fields:
                plan.changes.append(_Change(match, node, fields))
            else:
                plan.unchanged += 1
            key_of[node.names], slug_of[match] = match, slug
        else:
            key = -(len(plan.creates) + 1)
            plan.creates.append(_New(key, node, "", parent_key))
            key_of[node.names] = key
    _assign_slugs(plan.creates, slug_of, taken)
    return plan


def _assign_slugs(creates: list[_New], slug_of: dict[int, str], taken: set[str]) -> None:
    """Slugs for new categories in file order (parents first), so the first "Accessories"
    of the file gets ``accessories`` whatever its depth, and a re-run gives the same slugs."""
    by_key = {n.key: n for n in creates}

    def assign(new: _New) -> None:
        if new.slug:
            return
        if new.parent_key is not None and new.parent_key < 0:
            assign(by_key[new.parent_key])
        new.slug = choose_slug(
            new.node.names[-1], slug_of.get(new.parent_key), new.node.external_id, taken.__contains__
        )
        taken.add(new.slug)
        slug_of[new.key] = new.slug

    for new in sorted(creates, key=lambda n: (n.node.line, n.node.depth)):
        assign(new)


def _insert_rows(rows: list[tuple]) -> None:
    """Multi-row INSERTs of (name, slug, parent_id, level, path, external_id), _INSERT_BATCH at a time.

    Plain SQL with placeholders: peewee's insert_many spends most of a taxonomy import
    turning 60,000 values into SQL nodes; this keeps the database the slow part.
    """
    database = get_database()
    # The model's Python-side defaults, as the database stores them.
    defaults = (0, Category.is_active.db_value(True), *[Category.created_at.db_value(utcnow())] * 2)
    columns = _INSERT_COLUMNS
    quoted = ", ".join(f'"{c}"' for c in columns)  # both backends quote identifiers with ""
    head = f'INSERT INTO "{Category._meta.table_name}" ({quoted}) VALUES '

    one = "(" + ", ".join([database.param] * len(columns)) + ")"
    for start in range(0, len(rows), _INSERT_BATCH):
        batch = rows[start : start + _INSERT_BATCH]
        params = [value for row in batch for value in (*row, *defaults)]
        database.execute_sql(head + ", ".join([one] * len(batch)), params)


def _apply(plan: _Plan) -> None:
    """Write the plan a level at a time: bulk INSERTs, one path UPDATE, then that level's moves;
    then every rename or new external id in bulk."""
    ids: dict[int, int] = {}

    def real(key: int | None) -> int | None:
        return None if key is None else ids.get(key, key)

    depths = sorted({n.node.depth for n in plan.creates} | {c.node.depth for c in plan.changes})
    parent = Category.alias("parent")
    parents_path = parent.select(parent.path).where(parent.id == Category.parent)
    for depth in depths:
        level = [n for n in plan.creates if n.node.depth == depth]
        if level:
            _insert_rows(
                [
                    (n.node.names[-1], n.slug, real(n.parent_key), depth, _PENDING_PATH, n.node.external_id)
                    for n in level
                ]
            )
            new_ids = dict(Category.select(Category.slug, Category.id).where(Category.path == _PENDING_PATH).tuples())
            for n in level:
                ids[n.key] = new_ids[n.slug]
            Category.update(path=child_path_sql(parents_path, Category.id)).where(
                Category.path == _PENDING_PATH
            ).execute()
        for change in (c for c in plan.changes if c.node.depth == depth and "parent" in c.fields):
            category = Category.get_by_id(change.category_id)
            for name, value in change.fields.items():
                setattr(category, name, real(value) if name == "parent" else value)
            category.save()  # moves the subtree in one UPDATE (Category._move)
    _update_in_place([c for c in plan.changes if "parent" not in c.fields])


def _update_in_place(changes: list[_Change]) -> None:
    """Renames and newly given external ids, _INSERT_BATCH rows per UPDATE (CASE id WHEN …).

    A first import of ids over a tree built from plain paths changes every row; one
    statement per row (let alone a save() each) would make that minutes on PostgreSQL.
    """
    database = get_database()
    now = Category.updated_at.db_value(utcnow())
    table, param = Category._meta.table_name, database.param
    for start in range(0, len(changes), _INSERT_BATCH):
        batch = changes[start : start + _INSERT_BATCH]
        sets, params = [], []
        for column in ("name", "external_id"):
            pairs = [(c.category_id, c.fields[column]) for c in batch if column in c.fields]
            if pairs:
                whens = " ".join([f"WHEN {param} THEN {param}"] * len(pairs))
                sets.append(f'"{column}" = CASE "id" {whens} ELSE "{column}" END')
                params.extend(value for pair in pairs for value in pair)
        ids = [c.category_id for c in batch]
        sql = (
            f'UPDATE "{table}" SET {", ".join(sets)}, "updated_at" = {param} '
            f'WHERE "id" IN ({", ".join([param] * len(ids))})'
        )
        database.execute_sql(sql, [*params, now, *ids])


@writes_to_primary("pfdb import-categories")
def import_categories(path_or_file: Any, *, dry_run: bool = False) -> CategoryImportResult:
    """Import a category tree from a Google product taxonomy file or ``A > B > C`` lines.

    Lines look like ``1604 - Apparel & Accessories > Clothing`` (the id goes to
    ``external_id``) or ``Apparel & Accessories > Clothing``; ``#`` lines are comments.
    A category is found by its external id, else by its parent and name; one whose name
    or parent changed is updated in place, its subtree following; new ones get unique
    slugs; existing slugs never change; categories the file does not name are kept.
    The file is read completely before anything is written, and everything is written
    in one transaction. Importing the same file again writes nothing.

    Args:
        path_or_file: a path (plain or gzip), or an open binary or text stream.
        dry_run: count what would change, write nothing.

    Raises:
        FeedError: the file cannot be read, or a line (named by number) is neither format.

    Example: ``import_categories("taxonomy-with-ids.en-US.txt")``
    """
    nodes = read_taxonomy(path_or_file)
    with borrow_connection() as database:
        # SQLite: take the write lock up front; a read-then-write transaction can fail to
        # upgrade when another writer committed in between (WAL's SQLITE_BUSY_SNAPSHOT).
        immediate = isinstance(database, pw.SqliteDatabase) and not dry_run and not database.in_transaction()
        with database.atomic("IMMEDIATE") if immediate else database.atomic():
            if isinstance(database, pw.PostgresqlDatabase) and not dry_run:
                # One taxonomy import at a time: a second one plans against the tree the first
                # committed, instead of inserting the same categories and failing on the
                # unique (parent, name) rule. Released with the transaction.
                database.execute_sql("SELECT pg_advisory_xact_lock(%s)", (_TAXONOMY_LOCK_KEY,))
            plan = _plan(nodes, source_name(path_or_file))
            if not dry_run:
                try:
                    _apply(plan)
                except pw.IntegrityError as exc:  # a product import's resolver created one meanwhile
                    raise FeedError(
                        f"{source_name(path_or_file)}: another process created some of these "
                        f"categories while this import ran ({first_line(exc)})",
                        hint="run the import again: it finds them and writes nothing twice",
                    ) from exc
    return CategoryImportResult(
        created=len(plan.creates),
        updated=len(plan.changes),
        unchanged=plan.unchanged,
        total=len(nodes),
        dry_run=dry_run,
    )


# -- tree operations -----------------------------------------------------------------------
def _category(value: Category | int) -> Category:
    if isinstance(value, Category):
        return value
    row = Category.get_or_none(Category.id == int(value))
    if row is None:
        raise NotFoundError(f"category {value} does not exist", hint="see pfdb.categories.category_tree()")
    return row


def _parent_id(value: Category | int | None) -> int | None:
    if value is None:
        return None
    return value.id if isinstance(value, Category) else int(value)


def move_category(category: Category | int, new_parent: Category | int | None) -> Category:
    """Move ``category`` and its whole subtree under ``new_parent`` (``None``: make it a root).

    The descendants' paths and levels are rewritten by one UPDATE (``Category._move``),
    whatever the subtree's size. Returns the category as saved (the instance passed, if one
    was). Raises ``ValidationError`` for a move under itself or one of its descendants,
    or to a parent that does not exist; ``NotFoundError`` for an unknown category id.

    Example: ``move_category(shirts, clothing)``
    """
    category = _category(category)
    parent_id = _parent_id(new_parent)
    if category.parent_id == parent_id and category.path:
        return category
    old_parent = category.parent_id
    try:
        with db_session_scope():
            category.parent = parent_id
            # Only the tree columns: a caller's older copy must not overwrite other edits.
            category.save(only=[Category.parent, Category.path, Category.level])
    except Exception:
        category.parent = old_parent  # a refused move leaves the caller's instance as it was
        category._dirty.discard("parent")
        raise
    return category


DELETE_POLICIES = ("refuse", "reassign")


@dataclass(frozen=True)
class CategoryDeleteResult:
    """What ``delete_category`` removed and where its children and products went."""

    category_id: int
    name: str
    policy: str
    new_parent_id: int | None
    children_reassigned: int
    products_reassigned: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "category_id": self.category_id,
            "name": self.name,
            "policy": self.policy,
            "new_parent_id": self.new_parent_id,
            "children_reassigned": self.children_reassigned,
            "products_reassigned": self.products_reassigned,
        }


def delete_category(category: Category | int, policy: str = "refuse") -> CategoryDeleteResult:
    """Delete one category, saying what happens to its children and products.

    ``policy="refuse"`` (default) deletes only a category with no subcategories and no
    products, else raises ``ValidationError`` and changes nothing. ``policy="reassign"``
    gives its children and products to its parent (for a root: children become roots,
    products lose their category); the subtree's paths and levels follow in one UPDATE.
    Its icons are deleted with it. Everything happens in one transaction.

    Example: ``delete_category(old, policy="reassign")``
    """
    if policy not in DELETE_POLICIES:
        raise ValidationError("policy", f"must be one of {', '.join(DELETE_POLICIES)}, got {policy!r}")
    with db_session_scope():
        category = _category(_parent_id(category))  # fresh: its path must be the stored one
        children = Category.select().where(Category.parent == category.id).count()
        products = Product.select().where(Product.category == category.id).count()
        if policy == "refuse" and (children or products):
            raise ValidationError(
                "category",
                f"{category.name!r} (id {category.id}) has {children} subcategories and {products} products; "
                "nothing was deleted",
                hint="move them first, or delete with policy='reassign' to give them to its parent",
            )
        now = utcnow()
        if children:
            rehome_subtree(Category, category.path, parent_path(category.path), -1, include_root=False)
            Category.update(parent=category.parent_id, updated_at=now).where(Category.parent == category.id).execute()
        if products:
            Product.update(category=category.parent_id, updated_at=now).where(Product.category == category.id).execute()
        Category.delete().where(Category.id == category.id).execute()
    return CategoryDeleteResult(
        category_id=category.id,
        name=category.name,
        policy=policy,
        new_parent_id=category.parent_id,
        children_reassigned=children,
        products_reassigned=products,
    )


@dataclass(frozen=True)
class MergeResult:
    """What ``merge_duplicate_categories`` folded together."""

    merged: int  # categories removed, their content given to a same-named sibling
    products_moved: int

    def as_dict(self) -> dict[str, Any]:
        return {"merged": self.merged, "products_moved": self.products_moved}


def merge_duplicate_categories() -> MergeResult:
    """Fold same-named siblings into the oldest of them, so migration 002's unique rule can apply.

    Racing imports before that rule could build a tree twice (``cat0`` and ``cat0-2``). The
    oldest category (lowest id) of each (parent, name) group keeps its id and slug; the
    others' children, products and icons move to it, an external id it lacks is carried
    over, and they are deleted. Merging two parents can make their children siblings, so
    it repeats until none are left. One transaction; two different external ids in one
    group are a ``ValidationError`` and nothing changes.

    Example: ``merge_duplicate_categories().merged``
    """
    merged = moved = 0
    with db_session_scope():
        while True:
            groups: dict[tuple[int | None, str], list[tuple[int, str | None]]] = {}
            for cid, parent_id, name, ext in (
                Category.select(Category.id, Category.parent, Category.name, Category.external_id)
                .order_by(Category.id)
                .tuples()
            ):
                groups.setdefault((parent_id, name), []).append((cid, ext))
            duplicates = [group for group in groups.values() if len(group) > 1]
            if not duplicates:
                break
            for (keeper, keeper_ext), *others in duplicates:
                for cid, ext in others:
                    if ext is not None and keeper_ext is not None and ext != keeper_ext:
                        raise ValidationError(
                            "external_id",
                            f"categories {keeper} and {cid} share a parent and a "
                            f"name but have the external ids {keeper_ext!r} and {ext!r}",
                            hint="rename one of them instead",
                        )
                    moved += Product.update(category=keeper).where(Product.category == cid).execute()
                    Icon.update(category=keeper).where(Icon.category == cid).execute()
                    for child in Category.select().where(Category.parent == cid):
                        child.parent = keeper  # its subtree's paths follow in one UPDATE
                        child.save(only=[Category.parent, Category.path, Category.level])
                    Category.delete().where(Category.id == cid).execute()
                    if ext is not None and keeper_ext is None:
                        Category.update(external_id=ext).where(Category.id == keeper).execute()
                        keeper_ext = ext
                    merged += 1
    return MergeResult(merged=merged, products_moved=moved)


def category_tree(root: Category | int | None = None) -> list[dict[str, Any]]:
    """The tree (or the subtree of ``root``, itself included) as nested dicts, from one query.

    Each node is ``{"id", "name", "slug", "level", "children": [...]}``; siblings are in
    ``sort_order``, then name order. Raises ``NotFoundError`` for an unknown ``root`` id.
    The whole tree and subtrees by id are served by the Redis cache when there is one.

    Example: ``for top in category_tree(): print(top["name"], len(top["children"]))``
    """
    if isinstance(root, Category):  # the caller's copy of its path may be stale: no cache
        return _category_tree(root)
    key = "all" if root is None else str(int(root))
    return cache.lookup(Category._meta.table_name, "tree", key, lambda: _category_tree(root))


def _category_tree(root: Category | int | None) -> list[dict[str, Any]]:
    query = Category.select(
        Category.id, Category.name, Category.slug, Category.level, Category.parent, Category.sort_order
    ).order_by(Category.path)
    if isinstance(root, Category):
        query = query.where(path_prefix(Category.path, root.path))
    elif root is not None:
        # The root's path comes from a subquery, so this stays one statement; "#" matches no path.
        other = Category.alias("root")
        root_path = pw.fn.COALESCE(other.select(other.path).where(other.id == int(root)), "#")
        query = query.where(path_prefix_sql(Category.path, root_path))
    nodes: dict[int, dict[str, Any]] = {}
    order: dict[int, tuple[int, str]] = {}
    top: list[dict[str, Any]] = []
    for cid, name, slug, level, parent_id, sort_order in query.tuples():
        item = {"id": cid, "name": name, "slug": slug, "level": level, "children": []}
        nodes[cid], order[cid] = item, (sort_order, name)
        (nodes[parent_id]["children"] if parent_id in nodes else top).append(item)
    if root is not None and not top:
        raise NotFoundError(f"category {_parent_id(root)} does not exist")

    def key(item: dict[str, Any]) -> tuple[int, str]:
        return order[item["id"]]

    top.sort(key=key)
    for item in nodes.values():
        item["children"].sort(key=key)
    return top
