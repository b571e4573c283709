"""Currencies and units: --currency for feeds that name none, Shopify weights, Shopify's ignored columns."""

from __future__ import annotations

from decimal import Decimal

import pytest
from feeds_samples import PFDB_CSV, SHOPIFY_CSV, product, write

from pfdb.errors import UsageError
from pfdb.feeds import import_products
from pfdb.models import Product


def test_currency_for_a_shopify_export(db, database_url, tmp_path, run_cli):
    feed = write(tmp_path, "shopify.csv", SHOPIFY_CSV)
    code, out, err = run_cli("--database-url", database_url, "import", str(feed))
    assert code == 0 and "currency: the feed names none; new products get USD (--currency CODE" in out, err
    code, out, err = run_cli("--database-url", database_url, "import", str(feed), "--currency", "eur")
    assert code == 0 and "currency: EUR for rows that name none (--currency)" in out, err
    assert {p.currency for p in Product.select()} == {"EUR"}
    assert "4 updated" in out  # the currency changed: a real update


def test_currency_fills_only_rows_without_one(db, tmp_path):
    text = "sku,name,price,currency\nA,Apple,1,SEK\nB,Pear,2,\n"
    result = import_products(write(tmp_path, "feed.csv", text), currency="EUR")
    assert result.currency == "EUR"
    assert (product("A").currency, product("B").currency) == ("SEK", "EUR")
    # pfdb CSV without a currency column (cells by position) and JSON Lines alike
    import_products(write(tmp_path, "more.csv", "sku,name,price\nC,Plum,3\n"), currency="NOK")
    import_products(write(tmp_path, "more.jsonl", '{"sku": "D", "name": "Fig", "price": "4"}\n'), currency="DKK")
    assert (product("C").currency, product("D").currency) == ("NOK", "DKK")


def test_without_currency_nothing_is_assumed_for_feeds_that_name_one(db, tmp_path):
    result = import_products(write(tmp_path, "feed.csv", PFDB_CSV))
    assert result.currency is None and product("P-1").currency == "EUR"


@pytest.mark.parametrize("bad", ["euro", "E1R", "€"])
def test_a_bad_currency_is_a_usage_error(db, tmp_path, run_cli, database_url, bad):
    with pytest.raises(UsageError, match="three-letter ISO 4217 code"):
        import_products(write(tmp_path, "feed.csv", PFDB_CSV), currency=bad)
    code, _, err = run_cli("--database-url", database_url, "import", str(tmp_path / "feed.csv"), "--currency", bad)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "--currency EUR" in err
    assert Product.select().count() == 0


def test_shopify_weights(db, tmp_path):
    header = "Handle,Title,Variant SKU,Variant Price,Variant Grams,Variant Weight Unit\n"
    rows = "a,A,A-1,1,28,oz\nb,B,B-1,1,1500,kg\nc,C,C-1,1,454,lb\n"
    import_products(write(tmp_path, "grams.csv", header + rows))
    # Variant Grams is grams whatever the display unit says (Shopify exports a 1 oz item as 28 g, unit oz)
    assert [product(s).weight for s in ("A-1", "B-1", "C-1")] == [Decimal("0.028"), Decimal("1.500"), Decimal("0.454")]
    header = "Handle,Title,Variant SKU,Variant Price,Variant Weight,Variant Weight Unit\n"
    rows = "d,D,D-1,1,1.5,lb\ne,E,E-1,1,250,g\nf,F,F-1,1,2,kg\ng,G,G-1,1,3,oz\nh,H,H-1,1,3,stone\n"
    result = import_products(write(tmp_path, "weight.csv", header + rows))
    assert [product(s).weight for s in ("D-1", "E-1", "F-1", "G-1")] == [
        Decimal("0.680"),
        Decimal("0.250"),
        Decimal("2.000"),
        Decimal("0.085"),
    ]
    assert result.rejected == 1 and result.rejects[0].column == "Variant Weight"


def test_shopify_lists_its_ignored_columns_and_prefers_product_category(db, tmp_path):
    header = "Handle,Title,Type,Product Category,Variant SKU,Variant Price,Gift Card,SEO Title\n"
    rows = "a,A,Bracelet,Apparel & Accessories > Jewelry,A-1,1,false,x\nb,B,Indoor,,B-1,1,false,y\n"
    result = import_products(write(tmp_path, "cat.csv", header + rows))
    assert result.ignored_columns == ("Gift Card", "SEO Title")
    assert product("A-1").category.breadcrumb() == "Apparel & Accessories > Jewelry"
    assert product("B-1").category.breadcrumb() == "Indoor"  # Type is the fallback
