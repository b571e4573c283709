"""The category tree as an API: resolving paths to ids, importing taxonomies, moving and deleting subtrees.

The tree lives in ``Category`` as materialized paths (``/1/5/23/``, see pfdb/models/catalog.py),
so every operation here that touches a subtree does it with one prefix UPDATE, never node by
node. Slugs follow one rule everywhere (``slug_candidates``) and never change once given.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

from ._peewee import peewee as pw
from .database import get_database
from .errors import ValidationError
from .models import Category
from .models.fields import utcnow
from .text import slugify

PATH_SEPARATOR = ">"
SLUG_MAX = 255
# Candidates asked about in one query when the resolver needs a new slug.
_SLUG_BATCH = 12


# -- names and slugs ---------------------------------------------------------------------
def clean_name(name: str) -> str:
    """A category name as stored and matched: NFC, trimmed, inner whitespace collapsed."""
    return " ".join(unicodedata.normalize("NFC", str(name)).split())


def split_path(path: str | Sequence[str]) -> tuple[str, ...]:
    """``"Apparel > Clothing"`` or ``["Apparel", "Clothing"]`` -> ``("Apparel", "Clothing")``.

    Raises ``ValidationError`` for an empty path or an empty level (``"A >  > B"``).
    """
    parts = str(path).split(PATH_SEPARATOR) if isinstance(path, str) else list(path)
    names = tuple(clean_name(part) for part in parts)
    if not names or not all(names):
        raise ValidationError(
            "category", f"{path!r} is not a category path", hint="use names separated by ' > ', e.g. 'Apparel > Shirts'"
        )
    for name in names:
        if len(name) > 255:
            raise ValidationError("category", f"the name {name[:40]!r}… is longer than 255 characters")
    return names


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


def _insert_node(name: str, slug: str, parent_id: int | None, parent_path: str, level: int,
                 external_id: str | None = None) -> tuple[int, str]:
    """INSERT one category and set its path: two statements, in a savepoint.

    Bypasses ``Category.save()`` because the caller already knows the parent's path and
    level (save() would read them again). Returns ``(id, path)``.
    """
    now = utcnow()
    with get_database().atomic():
        new_id = Category.insert(
            name=name, slug=slug, parent=parent_id, level=level, path=parent_path,
            external_id=external_id, created_at=now, updated_at=now,
        ).execute()
        path = f"{parent_path}{new_id}/"
        Category.update(path=path).where(Category.id == new_id).execute()
    return new_id, path


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
        #: categories this resolver created, in creation order
        self.created: list[int] = []

    def clear(self) -> None:
        self._nodes.clear()
        self._slugs.clear()
        self.created.clear()

    def resolve(self, path: str | Sequence[str]) -> int:
        """The id of the leaf of ``path`` (``"A > B > C"`` or ``["A", "B", "C"]``), creating missing levels.

        Each level is found by (parent, name); a missing one gets a new category with a
        unique slug. Raises ``ValidationError`` for an empty path or level.
        """
        names = split_path(path)
        hit = self._nodes.get(names)
        if hit is not None:
            return hit[0]
        depth = len(names) - 1
        while depth > 0 and names[:depth] not in self._nodes:
            depth -= 1
        self._lookup(names, depth)
        for i in range(depth, len(names)):
            key = names[: i + 1]
            if key not in self._nodes:
                self._create(key)
        return self._nodes[names][0]

    def resolve_slug_or_path(self, value: str) -> int:
        """A path if ``value`` contains ``>``; else the category with that slug; else a one-level path."""
        text = str(value).strip()
        if PATH_SEPARATOR in text:
            return self.resolve(text)
        if text in self._slugs:
            return self._slugs[text]
        row = Category.select(Category.id).where(Category.slug == text).tuples().first()
        if row is not None:
            self._slugs[text] = row[0]
            return row[0]
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
        parent = self._nodes.get(key[:-1]) if len(key) > 1 else None
        parent_id, parent_path, parent_level, parent_slug = (
            (parent[0], parent[1], parent[2], parent[3]) if parent else (None, "/", -1, None)
        )
        for attempt in range(3):
            slug = _free_slug_from_db(key[-1], parent_slug)
            try:
                new_id, path = _insert_node(key[-1], slug, parent_id, parent_path, parent_level + 1)
                break
            except pw.IntegrityError:  # another writer took the slug between our check and insert
                if attempt == 2:
                    raise
        self._nodes[key] = (new_id, path, parent_level + 1, slug)
        self.created.append(new_id)


def _category(value: Category | int, what: str = "category") -> Category:
    if isinstance(value, Category):
        return value
    row = Category.get_or_none(Category.id == int(value))
    if row is None:
        from .errors import NotFoundError

        raise NotFoundError(f"{what} {value} does not exist", hint="list categories with pfdb.categories.category_tree()")
    return row


def _ids(values: Iterable[Any]) -> list[int]:
    return [int(v) for v in values]
