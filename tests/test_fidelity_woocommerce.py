"""WooCommerce as a built-in, detected format; detection that refuses what it would import half-empty."""

from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pytest
from feeds_samples import PFDB_CSV, WOO_CSV, category_path, image_urls, product, write

from pfdb.errors import FeedError
from pfdb.feeds import import_products
from pfdb.models import Product

REAL = Path("/work/shared/data/woocommerce-sample_products.csv")


def test_woocommerce_export_is_detected_and_imported_as_documented(db, tmp_path):
    feed = write(tmp_path, "woo.csv", WOO_CSV, bom=True, crlf=True)
    result = import_products(feed)
    assert (result.format, result.unit, result.lines, result.rows) == ("woocommerce", "products", 7, 5)
    assert dict(result.skipped) == {"variable": 1, "grouped": 1}
    assert (result.created, result.rejected, result.generated_skus) == (5, 0, 1)
    assert sorted(p.sku for p in Product.select()) == ["MUG", "PENNANT", "TEE-BLUE", "TEE-RED", "woo-13"]

    red = product("TEE-RED")  # sale price: the price; regular price: compare-at
    assert (red.price, red.compare_at_price, red.inventory_quantity) == (Decimal("15.00"), Decimal("20.00"), 5)
    # inherited from the variable parent: category (the first of its list), images, brand, description, weight
    assert category_path(red) == "Clothing > Tees"
    assert image_urls("TEE-RED") == ["https://img.example.com/tee-1.jpg", "https://img.example.com/tee-2.jpg"]
    assert (red.brand, red.description) == ("Acme", "<p>Soft, <b>cotton</b></p>")
    assert red.weight == Decimal("0.227")  # 0.5 lb = 0.226796185 kg
    assert red.attributes == {"options": {"Color": "Red"}} and red.status == "active"

    blue = product("TEE-BLUE")  # parent named as id:10; its own image and weight win
    assert (blue.price, blue.compare_at_price) == (Decimal("20.00"), None)
    assert image_urls("TEE-BLUE") == ["https://img.example.com/tee-blue.jpg"]
    assert blue.weight == Decimal("0.680") and category_path(blue) == "Clothing > Tees"

    album = product("woo-13")  # no SKU: named by its ID; Published 0 is a draft; an escaped comma in a category
    assert (album.name, album.status, album.price, category_path(album)) == (
        "Album",
        "draft",
        Decimal("9.99"),
        "Music, Film",
    )
    pennant = product("PENNANT")
    assert pennant.attributes == {"external_url": "https://shop.example.com/p", "button_text": "Buy there"}
    mug = product("MUG")
    assert (mug.status, mug.weight, mug.price) == ("draft", Decimal("5.443"), None)  # 12 lb

    again = import_products(feed)  # idempotent
    assert (again.created, again.updated, again.unchanged) == (0, 0, 5)


def test_weight_unit_comes_from_the_header(db, tmp_path):
    for unit, text, kg in (
        ("kg", "1.5", "1.500"),
        ("g", "250", "0.250"),
        ("oz", "16", "0.454"),
        ("lbs", "1.5", "0.680"),
    ):
        feed = write(
            tmp_path, f"w-{unit}.csv", f"Type,SKU,Name,Regular price,Weight ({unit})\nsimple,W-{unit},Weight,1,{text}\n"
        )
        assert import_products(feed).format == "woocommerce"
        assert product(f"W-{unit}").weight == Decimal(kg)


def test_variation_whose_parent_is_unknown_is_imported_with_a_note(db, tmp_path):
    feed = write(tmp_path, "woo.csv", "Type,SKU,Name,Regular price,Parent\nvariation,V-1,Lone,5,GONE\n")
    result = import_products(feed)
    assert result.created == 1 and "'GONE' is not a variable product" in result.notes[0].message


@pytest.mark.skipif(not REAL.exists(), reason="the shared real files are not on this machine")
def test_the_real_woocommerce_sample_imports_with_the_right_counts(db):
    result = import_products(REAL)
    assert (result.format, result.lines, result.rows, result.created, result.rejected) == ("woocommerce", 25, 22, 22, 0)
    assert dict(result.skipped) == {"grouped": 1, "variable": 2}
    hoodie = product("woo-hoodie-red")
    assert (hoodie.price, hoodie.compare_at_price, hoodie.weight) == (
        Decimal("42.00"),
        Decimal("45.00"),
        Decimal("0.680"),
    )
    assert category_path(hoodie) == "Clothing > Hoodies"
    assert len(image_urls("woo-belt")) == 1 and Product.select().where(Product.price.is_null()).count() == 0


# -- detection guards ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("SKU,Name,Regular price,Sale price,Images\nA,Apple,2,,\n", "no price column"),
        (
            'sku,name,price,images\nA,Apple,2,"https://x.example/a.jpg, https://x.example/b.jpg"\n',
            "comma-separated URLs",
        ),
        ("sku,name,Cost,Stock level,Colour,Vendor code,price\nA,Apple,1,2,red,V,3\n", "are not pfdb's"),
    ],
)
def test_a_foreign_file_taken_for_pfdb_is_refused_with_a_suggestion(db, tmp_path, run_cli, database_url, text, message):
    feed = write(tmp_path, "other.csv", text)
    with pytest.raises(FeedError, match=message) as caught:
        import_products(feed)
    assert "--format pfdb" in caught.value.hint and "--mapping" in caught.value.hint
    assert Product.select().count() == 0
    code, out, err = run_cli("--database-url", database_url, "import", str(feed))
    assert code == 1 and len(err.strip().splitlines()) == 1 and message in err and "--mapping" in err, err
    # Asked for by name, it is imported as a pfdb feed.
    assert import_products(feed, format="pfdb").created == 1


def test_pfdb_feeds_without_prices_still_import(db, tmp_path):
    # stock and category updates carry no price; that is not a foreign file
    import_products(write(tmp_path, "full.csv", PFDB_CSV))
    result = import_products(write(tmp_path, "stock.csv", "sku,inventory_quantity\nP-1,9\nP-2,0\n"))
    assert (result.format, result.updated) == ("pfdb", 2)


def test_the_example_mapping_still_imports_woocommerce(db, tmp_path):
    feed = write(tmp_path, "woo.csv", WOO_CSV, bom=True)
    mapping = Path(__file__).parent.parent / "examples" / "woocommerce_mapping.json"
    result = import_products(feed, mapping=mapping)
    assert result.format == "mapping" and [r.line for r in result.rejects] == [5]  # the Album has no SKU
    assert product("TEE-RED").price == Decimal("15.00")
    assert product("MUG").weight is None  # the mapping no longer stores pounds as kilograms


def test_rejects_keep_woocommerce_columns(db, tmp_path):
    feed = write(tmp_path, "woo.csv", WOO_CSV.replace("9.99", "nine"))
    rejects = tmp_path / "rejects.csv"
    result = import_products(feed, rejects=rejects)
    assert result.rejected == 1 and result.rejects[0].column == "Sale price/Regular price"
    rows = list(csv.DictReader(rejects.open(encoding="utf-8")))
    assert [r["Name"] for r in rows] == ["Album"]
