"""Category trees: the resolver, taxonomy import, moves, deletes and the nested tree, on both backends."""

from __future__ import annotations

import pytest

import pfdb
from pfdb.categories import CategoryResolver, slug_candidates, split_path
from pfdb.errors import ValidationError
from pfdb.models import Category


class QueryLog:
    """Records every SQL statement the bound database executes (peewee's own hook point)."""

    def __init__(self, database):
        self.statements: list[str] = []
        self._database = database
        self._original = database.execute_sql

    def __enter__(self):
        def record(sql, params=None, *args, **kwargs):
            self.statements.append(sql)
            return self._original(sql, params, *args, **kwargs)

        self._database.execute_sql = record
        return self

    def __exit__(self, *exc):
        self._database.execute_sql = self._original

    def count(self, prefix: str = "") -> int:
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(prefix.upper()))


def node(slug: str) -> Category:
    return Category.get(Category.slug == slug)


# -- resolver ------------------------------------------------------------------------------
def test_split_path_accepts_strings_and_lists():
    assert split_path("Apparel > Clothing >  Shirts ") == ("Apparel", "Clothing", "Shirts")
    assert split_path(["Apparel", " Clothing"]) == ("Apparel", "Clothing")
    for bad in ("", "A >  > B", "> A", "A >", []):
        with pytest.raises(ValidationError):
            split_path(bad)


def test_slug_candidates_order():
    it = slug_candidates("Accessories", "clothing", "166")
    assert [next(it) for _ in range(5)] == [
        "accessories", "clothing-accessories", "clothing-accessories-166", "clothing-accessories-2",
        "clothing-accessories-3",
    ]
    assert next(slug_candidates("!!!")) == "category"


def test_resolver_creates_levels_with_paths_and_unique_slugs(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        leaf = resolver.resolve("Apparel > Clothing > Accessories")
        other = resolver.resolve(["Apparel", "Accessories"])
    shirt = Category.get_by_id(leaf)
    assert shirt.breadcrumb() == "Apparel > Clothing > Accessories"
    assert shirt.level == 2
    apparel, clothing = shirt.ancestors()
    assert shirt.path == f"/{apparel.id}/{clothing.id}/{shirt.id}/"
    assert shirt.slug == "accessories"
    assert Category.get_by_id(other).slug == "apparel-accessories"
    assert len(resolver.created) == 4


def test_resolver_finds_existing_and_caches(db):
    with pfdb.db_session_scope():
        first = CategoryResolver().resolve("Apparel > Clothing > Shirts")
    resolver = CategoryResolver()
    with QueryLog(pfdb.db.obj) as log:
        assert resolver.resolve("Apparel > Clothing > Shirts") == first
        assert log.count() == 1  # one SELECT for the whole uncached path
        for _ in range(50):
            assert resolver.resolve(["Apparel", "Clothing", "Shirts"]) == first
            resolver.resolve("Apparel > Clothing")
        assert log.count() == 1  # cached: no further query
    assert resolver.created == []
    assert Category.select().count() == 3


def test_resolver_one_select_for_an_existing_prefix_then_creates(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        resolver.resolve("A > B")
        with QueryLog(pfdb.db.obj) as log:
            resolver.resolve("A > B > C")
    # prefix cached: a lookup, a slug check, the INSERT and the path UPDATE (+ savepoint statements)
    assert log.count("SELECT") == 2
    assert log.count("INSERT") == 1
    assert log.count("UPDATE") == 1


def test_resolve_slug_or_path(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        shirts = resolver.resolve("Apparel > Shirts")
        assert resolver.resolve_slug_or_path("shirts") == shirts
        assert resolver.resolve_slug_or_path("Apparel > Shirts") == shirts
        assert resolver.resolve_slug_or_path("Apparel>Shirts") == shirts
        hats = resolver.resolve_slug_or_path("Hats")  # no such slug: a one-level path
    assert Category.get_by_id(hats).parent_id is None
    assert Category.get_by_id(hats).slug == "hats"


def test_resolver_inside_a_rolled_back_transaction_leaves_nothing(db):
    resolver = CategoryResolver()
    with pytest.raises(RuntimeError):
        with pfdb.db_session_scope():
            resolver.resolve("Apparel > Clothing")
            raise RuntimeError("the caller's batch failed")
    assert Category.select().count() == 0


def test_resolver_within_a_caller_transaction_with_other_writes(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        from pfdb.models import Product

        for i in range(5):
            Product.create(sku=f"S{i}", name="shirt", category=resolver.resolve("Apparel > Shirts"))
    assert Category.select().count() == 2
    assert {p.category.slug for p in Product.select()} == {"shirts"}


def test_resolver_normalises_names(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        a = resolver.resolve("Boutonnie\u0300re  Pins")  # decomposed accent, double space
        b = CategoryResolver().resolve("Boutonnière Pins")
    assert a == b
    assert Category.get_by_id(a).slug == "boutonniere-pins"


def test_resolver_rejects_empty_levels(db):
    with pytest.raises(ValidationError):
        CategoryResolver().resolve("Apparel >  > Shirts")
