"""Slugs in every script: names are transliterated, not dropped; a slug once stored never changes."""

from __future__ import annotations

import pytest
from feeds_samples import write

from pfdb.categories import CategoryResolver, import_categories
from pfdb.feeds import import_products
from pfdb.feeds.formats import generated_sku
from pfdb.models import Category, Product
from pfdb.text import ascii_slug, slugify


@pytest.mark.parametrize(
    ("name", "slug"),
    [
        ("Одежда", "odezhda"),
        ("Футболки", "futbolki"),
        ("服装", "fu-zhuang"),
        ("Straße", "strasse"),
        ("Smørrebrød", "smorrebrod"),
        ("Łódź", "lodz"),
        ("Ελληνικά", "ellenika"),
        ("Boutonnière & Pins", "boutonniere-pins"),
        ("Men's Shoes", "men-s-shoes"),
        ("  --  ", ""),
    ],
)
def test_slugify_transliterates_every_script(name, slug):
    assert slugify(name) == slug


def test_ascii_text_gets_the_slug_it_always_had():
    for name in ("Apparel & Accessories", "T-Shirts (Men)", "Kitchen > Mugs", "Café Crème", "100% Cotton"):
        assert slugify(name) == ascii_slug(name)


def test_generated_skus_do_not_change_with_transliteration():
    # A SKU is an identity: the same Shopify export must find the SKUs it was first imported with.
    assert generated_sku("футболка", ["Größe M", "Красный"]) == generated_sku("футболка", ["Größe M", "Красный"])
    assert generated_sku("basic-tee", ["Größe M"]) == "basic-tee-groe-m"


def test_resolver_gives_transliterated_slugs_without_collisions(db):
    resolver = CategoryResolver()
    ids = [resolver.resolve(p) for p in ("Одежда > Футболки", "服装", "Straße", "Smørrebrød", "Łódź")]
    slugs = [Category.get_by_id(i).slug for i in ids]
    assert slugs == ["futbolki", "fu-zhuang", "strasse", "smorrebrod", "lodz"]
    assert Category.get(Category.name == "Одежда").slug == "odezhda"
    assert Category.get(Category.name == "Футболки").slug == "futbolki"


def test_taxonomy_import_transliterates(db, tmp_path):
    path = write(tmp_path, "taxonomy.txt", "1 - Одежда\n2 - Одежда > Футболки\n3 - 服装\n")
    import_categories(path)
    assert {c.name: c.slug for c in Category.select()} == {
        "Одежда": "odezhda",
        "Футболки": "futbolki",
        "服装": "fu-zhuang",
    }


def test_reimport_keeps_slugs_given_before_transliteration(db, tmp_path):
    # The slugs the old rule gave ("category", "category-category", "strae") stay: URLs must not move.
    root = Category.create(name="Одежда", slug="category")
    child = Category.create(name="Футболки", slug="category-category", parent=root)
    other = Category.create(name="Straße", slug="strae")
    feed = write(
        tmp_path, "feed.csv", "sku,name,price,category\nS-1,Tee,10,Одежда > Футболки\nS-2,Sign,5,Straße > Schilder\n"
    )
    result = import_products(feed)
    assert (result.created, result.rejected, result.categories_created) == (2, 0, 1)
    assert Product.get(Product.sku == "S-1").category_id == child.id
    assert {c.name: c.slug for c in Category.select()} == {
        "Одежда": "category",
        "Футболки": "category-category",
        "Straße": "strae",
        "Schilder": "schilder",
    }
    path = write(tmp_path, "taxonomy.txt", "Одежда > Футболки\nStraße\n")
    assert import_categories(path).created == 0
    assert [c.slug for c in Category.select().order_by(Category.id)][:3] == ["category", "category-category", "strae"]
    assert other.id == Category.get(Category.name == "Straße").id
