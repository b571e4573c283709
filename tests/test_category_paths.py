"""pfdb.category_paths: the one home of id paths (/1/5/23/) and name paths (A > B > C)."""

from __future__ import annotations

import pytest

from pfdb import category_paths as cp
from pfdb.categories import delete_category, move_category
from pfdb.errors import ValidationError
from pfdb.models import Category


def test_id_paths_build_split_and_climb():
    assert cp.child_path(cp.ROOT, 7) == "/7/" and cp.child_path("/1/5/", 23) == "/1/5/23/"
    assert cp.parent_path("/1/5/23/") == "/1/5/" and cp.parent_path("/7/") == cp.ROOT
    assert cp.path_ids("/1/5/23/") == [1, 5, 23] and cp.path_ids("") == []


def test_name_paths_split_and_join():
    assert cp.split_names(" Apparel >Clothing>  T  shirts ") == ("Apparel", "Clothing", "T shirts")
    assert cp.join_names(("Apparel", "Clothing")) == "Apparel > Clothing"
    assert cp.is_name_path("a > b") and not cp.is_name_path("a-b")
    for bad in ("", "A >  > B", "A > \x01"):
        with pytest.raises(ValidationError):
            cp.split_names(bad)


def test_every_writer_of_paths_agrees_with_the_rule(db):
    apparel = Category.create(name="Apparel")
    shirts = Category.create(name="Shirts", parent=apparel)
    polo = Category.create(name="Polo", parent=shirts)
    sale = Category.create(name="Sale")

    def stored() -> dict[str, tuple[str, int]]:
        return {c.name: (c.path, c.level) for c in Category.select()}

    def expected() -> dict[str, tuple[str, int]]:
        rows = {c.id: c for c in Category.select()}
        out = {}
        for c in rows.values():
            chain, node = [], c
            while node is not None:
                chain.append(node.id)
                node = rows.get(node.parent_id)
            path = cp.ROOT
            for cid in reversed(chain):
                path = cp.child_path(path, cid)
            out[c.name] = (path, len(chain) - 1)
        return out

    assert stored() == expected()
    move_category(shirts, sale)  # Category._move: one UPDATE for the subtree
    assert stored() == expected() and stored()["Polo"] == (f"/{sale.id}/{shirts.id}/{polo.id}/", 2)
    delete_category(shirts, policy="reassign")  # the subtree climbs one level
    assert stored() == expected() and stored()["Polo"] == (f"/{sale.id}/{polo.id}/", 1)
    assert cp.name_paths(Category)[polo.id] == "Sale > Polo"


def test_find_category_by_slug_or_name_path(db):
    from pfdb.categories import category_by_path, find_category
    from pfdb.errors import NotFoundError

    apparel = Category.create(name="Apparel")
    shirts = Category.create(name="Shirts", parent=apparel, slug="tops")
    assert find_category("tops").id == shirts.id  # a slug
    assert find_category(" Apparel >  Shirts ").id == shirts.id == category_by_path(["Apparel", "Shirts"]).id
    assert find_category("Apparel").id == apparel.id  # a root by its name
    assert cp.find_by_names(Category, ("Apparel", "Shirts")).id == shirts.id
    for missing in ("Shirts", "Apparel > Socks", ""):  # Shirts is no root
        with pytest.raises(NotFoundError):
            find_category(missing)
    assert cp.find_by_names(Category, ("Shirts",)) is None
