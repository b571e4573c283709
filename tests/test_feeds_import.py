"""Product feed import on both backends: formats, awkward files, upsert semantics, rejects, dry run and strict."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from feeds_samples import (
    GOOGLE_TSV,
    PFDB_CSV,
    RETAIL_JSONL,
    SHOPIFY_CSV,
    catalogue_state,
    category_path,
    image_urls,
    product,
    write,
)

from pfdb.errors import FeedError, UsageError
from pfdb.feeds import import_products
from pfdb.feeds.formats import generated_sku
from pfdb.models import Category, Job, Product, ProductImage, SyncHistory


# -- pfdb CSV and the awkward cases -------------------------------------------------------------
def test_pfdb_csv_creates_products_categories_and_images(db, tmp_path):
    result = import_products(write(tmp_path, "feed.csv", PFDB_CSV))
    assert (result.format, result.rows, result.created, result.updated, result.rejected) == ("pfdb", 3, 3, 0, 0)
    shirt = product("P-1")
    assert shirt.name == "Chemise à carreaux"
    assert shirt.description == '<p>Coton bio, coupe "droite".</p>\n<p>Lavable à 40°</p>'
    assert (shirt.price, shirt.compare_at_price, shirt.currency) == (Decimal("29.90"), Decimal("39.90"), "EUR")
    assert shirt.gtin == "7350177880121"  # the spreadsheet's leading apostrophe is gone
    assert (shirt.inventory_quantity, shirt.status, shirt.shopify_sync_status) == (5, "active", "pending")
    assert category_path(shirt) == "Vêtements > Chemises"
    assert image_urls("P-1") == ["https://img.example.com/p1-a.jpg", "https://img.example.com/p1-b.jpg"]
    primary = [
        i.is_primary for i in ProductImage.select().where(ProductImage.product == shirt).order_by(ProductImage.position)
    ]
    assert primary == [True, False]
    assert product("P-3").name == "Écharpe 日本"  # 'P-3 had an apostrophe too
    assert category_path(product("P-3")) == "Accessoires"
    assert result.categories_created == 4 and result.images_added == 3


@pytest.mark.parametrize("variant", ["bom", "crlf", "bom+crlf", "gzip", "gzip-without-suffix", "tsv"])
def test_awkward_files_read_the_same(db, tmp_path, variant):
    text = PFDB_CSV
    if variant == "tsv":
        import csv
        import io

        rows = list(csv.reader(io.StringIO(PFDB_CSV)))
        out = io.StringIO()
        csv.writer(out, delimiter="\t", lineterminator="\n").writerows(rows)
        text = out.getvalue()
    path = write(
        tmp_path,
        "feed.csv.gz" if variant == "gzip" else "feed.csv",
        text,
        bom="bom" in variant,
        crlf="crlf" in variant,
        gz=variant.startswith("gzip"),
    )
    result = import_products(path)
    assert (result.created, result.rejected) == (3, 0)
    description = product("P-1").description
    newline = "\r\n" if "crlf" in variant else "\n"
    assert description == f'<p>Coton bio, coupe "droite".</p>{newline}<p>Lavable à 40°</p>'
    assert product("P-1").gtin == "7350177880121"


def test_jsonl_with_lists_numbers_and_missing_keys(db, tmp_path):
    lines = [
        {
            "sku": "J-1",
            "name": "Lampe",
            "price": 12.5,
            "images": ["https://img.example.com/a.jpg"],
            "category": "Maison > Lampes",
            "attributes": {"watt": 40},
        },
        {"sku": "J-2", "name": "Table", "price": "80", "inventory_quantity": 3, "unknown": 1},
    ]
    path = write(tmp_path, "feed.jsonl", "".join(json.dumps(x) + "\n" for x in lines) + "\n")
    result = import_products(path)
    assert (result.created, result.rejected, result.ignored_columns) == (2, 0, ("unknown",))
    assert product("J-1").price == Decimal("12.50")
    assert product("J-1").attributes == {"watt": 40}
    assert image_urls("J-1") == ["https://img.example.com/a.jpg"]
    assert product("J-2").inventory_quantity == 3


def test_category_by_slug_or_path(db, tmp_path):
    Category(name="Garden Tools", slug="tools").save()
    path = write(tmp_path, "feed.csv", "sku,name,category\nS-1,Rake,tools\nS-2,Spade,Garden Tools > Spades\n")
    import_products(path)
    assert product("S-1").category.slug == "tools"
    assert category_path(product("S-2")) == "Garden Tools > Spades"


# -- Shopify ------------------------------------------------------------------------------------
def test_shopify_variants_continuation_rows_and_generated_skus(db, tmp_path):
    path = write(tmp_path, "shopify.csv", SHOPIFY_CSV, crlf=True)
    result = import_products(path)
    assert result.format == "shopify"
    assert (result.rows, result.created, result.rejected, result.generated_skus) == (4, 4, 0, 3)
    skus = sorted(p.sku for p in Product.select())
    assert skus == ["MUG-1", "basic-tee-large", "basic-tee-medium", "basic-tee-small"]
    assert all("generated" in n.message for n in result.notes) and len(result.notes) == 3
    medium = product("basic-tee-medium")
    assert medium.name == "Basic Tee - Medium"
    assert medium.description == "<p>Soft cotton.</p>\r\n<p>Unisex</p>"
    assert (medium.brand, medium.price, medium.compare_at_price, medium.weight) == (
        "Acme",
        Decimal("19.00"),
        Decimal("25.00"),
        Decimal("0.210"),
    )
    assert (medium.status, medium.shopify_handle, medium.inventory_quantity) == ("active", "basic-tee", 4)
    assert medium.attributes == {"options": {"Size": "Medium"}, "tags": ["summer", "cotton"]}
    assert category_path(medium) == "Shirts"
    # every variant has the product's images; a variant's own image comes first
    assert image_urls("basic-tee-small") == [f"https://cdn.example.com/tee-{n}.jpg" for n in (1, 2, 3)]
    assert image_urls("basic-tee-large") == [f"https://cdn.example.com/tee-{n}.jpg" for n in (2, 1, 3)]
    mug = product("MUG-1")
    assert (mug.name, mug.gtin, mug.status) == ("Coffee Mug", "4006381333931", "draft")
    assert category_path(mug) == "Kitchen > Mugs"
    again = import_products(path)
    assert (again.created, again.updated, again.unchanged, again.generated_skus) == (0, 0, 4, 3)


def test_generated_skus_are_stable_and_fit_the_column():
    assert generated_sku("basic-tee", ["Small"]) == "basic-tee-small"
    assert generated_sku("basic-tee", []) == "basic-tee"
    long = generated_sku("h" * 90, ["Extra Large", "Rouge Foncé"])
    assert len(long) <= 100 and long == generated_sku("h" * 90, ["Extra Large", "Rouge Foncé"])
    assert long != generated_sku("h" * 90, ["Extra Large", "Bleu"])
    assert generated_sku("mug", ["日本"]).startswith("mug-") and len(generated_sku("mug", ["日本"])) == 12


def test_shopify_bad_variant_is_rejected_with_its_row_completed(db, tmp_path):
    bad = SHOPIFY_CSV.replace("basic-tee,,,,,,,,Medium,,210,4,19.00", "basic-tee,,,,,,,,Medium,,210,4,-3")
    rejects = tmp_path / "rejects.csv"
    result = import_products(write(tmp_path, "shopify.csv", bad), rejects=rejects)
    assert result.rejected == 1
    assert (result.rejects[0].line, result.rejects[0].column) == (4, "Variant Price")  # line 1 header, 2-3 first row
    import csv

    rows = list(csv.DictReader(rejects.open(encoding="utf-8", newline="")))
    assert len(rows) == 1
    assert rows[0]["Title"] == "Basic Tee" and rows[0]["Option1 Name"] == "Size"  # filled from the product row
    assert rows[0]["Option1 Value"] == "Medium" and rows[0]["reject_line"] == "4"
    assert "must not be negative" in rows[0]["reject_reason"]


# -- Google -------------------------------------------------------------------------------------
def test_google_merchant_tsv_prices_images_and_categories(db, tmp_path):
    Category(name="Toasters", external_id="536").save()
    result = import_products(write(tmp_path, "google.tsv", GOOGLE_TSV))
    assert result.format == "google"
    assert (result.created, result.rejected) == (2, 1)
    assert (result.rejects[0].line, result.rejects[0].column) == (4, "price")
    kettle = product("G-1")
    assert (kettle.name, kettle.price, kettle.currency, kettle.brand) == ("Kettle", Decimal("15.00"), "USD", "Acme")
    assert (kettle.gtin, kettle.manufacturer_part_number, kettle.weight) == ("4006381333931", "K-100", Decimal("1.500"))
    assert category_path(kettle) == "Home & Garden > Kitchen & Dining"
    assert image_urls("G-1") == [f"https://img.example.com/k{n}.jpg" for n in (1, 2, 3)]
    assert kettle.attributes == {"availability": "in_stock", "link": "https://shop.example.com/k"}
    toaster = product("G-2")
    assert (toaster.price, toaster.compare_at_price) == (Decimal("19.99"), Decimal("25.00"))
    assert toaster.category.external_id == "536"  # a Google taxonomy id finds the imported node


def test_google_merchant_unknown_category_id_falls_back_to_product_type(db, tmp_path):
    text = GOOGLE_TSV.replace(",", ";").replace("\t", ",")  # comma-separated this time
    result = import_products(write(tmp_path, "google.csv", text))
    assert result.created == 2
    assert category_path(product("G-2")) == "Kitchen > Toasters"


def test_google_retail_jsonl(db, tmp_path):
    result = import_products(write(tmp_path, "retail.jsonl", RETAIL_JSONL))
    assert (result.format, result.created, result.rejected) == ("google-retail", 1, 1)
    assert result.rejects[0].column == "availability"
    pen = product("R-1")
    assert (pen.name, pen.price, pen.compare_at_price, pen.inventory_quantity) == (
        "Pen",
        Decimal("16.00"),
        Decimal("45.00"),
        50,
    )
    assert category_path(pen) == "Office > Pens" and image_urls("R-1") == ["https://img.example.com/pen.jpg"]
    assert pen.attributes["colors"] == ["Blue"]


# -- a column-mapping file ----------------------------------------------------------------------
WOO_LIKE = (
    "\ufeffID,Type,SKU,Name,Sale price,Regular price,Categories,Images,Weight (lbs),Stock\n"
    '1,simple,W-1,Beanie,18,20,Clothing > Accessories,"https://img.example.com/b1.jpg, https://img.example.com/b2.jpg",'
    ".2,5\n"
    "2,simple,W-2,Belt,,65,Clothing > Accessories,https://img.example.com/belt.jpg,1.2,\n"
)


@pytest.mark.parametrize("kind", ["json", "ini"])
def test_mapping_file(db, tmp_path, kind):
    if kind == "json":
        mapping = tmp_path / "woo.json"
        mapping.write_text(
            json.dumps(
                {
                    "columns": {
                        "SKU": "sku",
                        "Name": "name",
                        "Sale price": "price",
                        "Regular price": "price",
                        "Categories": "category",
                        "Images": "images",
                        "Weight (lbs)": "weight",
                        "Stock": "inventory_quantity",
                    },
                    "images_separator": ",",
                    "defaults": {"currency": "EUR"},
                }
            )
        )
    else:
        mapping = tmp_path / "woo.ini"
        mapping.write_text(
            "[columns]\nSKU = sku\nName = name\nSale price = price\nRegular price = price\nCategories = category\n"
            "Images = images\nWeight (lbs) = weight\nStock = inventory_quantity\n\n"
            "[options]\nimages_separator = ,\n\n[defaults]\ncurrency = EUR\n"
        )
    result = import_products(write(tmp_path, "woo.csv", WOO_LIKE), mapping=mapping)
    assert (result.format, result.created, result.rejected) == ("mapping", 2, 0)
    assert "ID" in result.ignored_columns
    beanie, belt = product("W-1"), product("W-2")
    assert (beanie.price, beanie.currency, beanie.weight, beanie.inventory_quantity) == (
        Decimal("18.00"),
        "EUR",
        Decimal("0.200"),
        5,
    )
    assert belt.price == Decimal("65.00")  # no sale price: the next column in the mapping's order
    assert image_urls("W-1") == ["https://img.example.com/b1.jpg", "https://img.example.com/b2.jpg"]
    assert category_path(belt) == "Clothing > Accessories"


def test_mapping_file_errors(db, tmp_path):
    feed = write(tmp_path, "woo.csv", WOO_LIKE)
    bad_field = tmp_path / "bad.json"
    bad_field.write_text(json.dumps({"columns": {"SKU": "sku", "Name": "title"}}))
    with pytest.raises(FeedError, match="'title', which is not a product field"):
        import_products(feed, mapping=bad_field)
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps({"columns": {"SKU": "sku", "Nom": "name"}}))
    with pytest.raises(FeedError, match="'Nom', which .* does not have"):
        import_products(feed, mapping=missing)
    no_sku = tmp_path / "nosku.json"
    no_sku.write_text(json.dumps({"columns": {"Name": "name"}}))
    with pytest.raises(FeedError, match="no column maps to sku"):
        import_products(feed, mapping=no_sku)


# -- upsert semantics ---------------------------------------------------------------------------
def test_reimport_is_idempotent_and_keeps_updated_at(db, tmp_path):
    path = write(tmp_path, "feed.csv", PFDB_CSV)
    import_products(path)
    Product.update(shopify_sync_status="synced").execute()
    before = {p.sku: p.updated_at for p in Product.select()}
    images = ProductImage.select().count()
    result = import_products(path)
    assert (result.created, result.updated, result.unchanged, result.images_added) == (0, 0, 3, 0)
    assert {p.sku: p.updated_at for p in Product.select()} == before
    assert ProductImage.select().count() == images
    assert {p.shopify_sync_status for p in Product.select()} == {"synced"}  # nothing to send to Shopify again


def test_partial_feed_updates_only_its_fields_and_marks_resync(db, tmp_path):
    import_products(write(tmp_path, "feed.csv", PFDB_CSV))
    Product.update(shopify_sync_status="synced").execute()
    before = product("P-1")
    result = import_products(write(tmp_path, "prices.csv", "sku,price\nP-1,31.00\nP-2,49.00\n"))
    assert (result.created, result.updated, result.unchanged) == (0, 1, 1)
    after = product("P-1")
    assert after.price == Decimal("31.00")
    assert (after.description, after.name, after.gtin, after.category_id) == (
        before.description,
        before.name,
        before.gtin,
        before.category_id,
    )
    assert image_urls("P-1") == ["https://img.example.com/p1-a.jpg", "https://img.example.com/p1-b.jpg"]
    assert after.updated_at > before.updated_at and after.shopify_sync_status == "pending"
    assert product("P-2").shopify_sync_status == "synced"


def test_empty_cells_keep_stored_values(db, tmp_path):
    import_products(write(tmp_path, "feed.csv", PFDB_CSV))
    result = import_products(write(tmp_path, "blank.csv", "sku,name,description,price\nP-1,,,\n"))
    assert (result.updated, result.unchanged) == (0, 1)
    assert product("P-1").description.startswith("<p>Coton")


def test_new_product_needs_a_name(db, tmp_path):
    result = import_products(write(tmp_path, "prices.csv", "sku,price\nNEW-1,5\n"))
    assert (result.created, result.rejected) == (0, 1)
    assert (result.rejects[0].line, result.rejects[0].column, result.rejects[0].message) == (
        2,
        "name",
        "is required for a new product",
    )


def test_image_order_changes_and_removals_without_duplicates(db, tmp_path):
    head = "sku,name,images\n"
    import_products(
        write(tmp_path, "a.csv", head + "I-1,Vase,https://x.test/1.jpg|https://x.test/2.jpg|https://x.test/1.jpg\n")
    )
    assert image_urls("I-1") == ["https://x.test/1.jpg", "https://x.test/2.jpg"]
    Product.update(shopify_sync_status="synced").execute()
    result = import_products(write(tmp_path, "b.csv", head + "I-1,Vase,https://x.test/3.jpg|https://x.test/2.jpg\n"))
    assert (result.updated, result.images_added, result.images_removed) == (1, 1, 1)
    assert image_urls("I-1") == ["https://x.test/3.jpg", "https://x.test/2.jpg"]
    assert product("I-1").shopify_sync_status == "pending"  # an image change is a change
    primary = [i.url for i in ProductImage.select().where(ProductImage.is_primary)]
    assert primary == ["https://x.test/3.jpg"]
    again = import_products(write(tmp_path, "b.csv", head + "I-1,Vase,https://x.test/3.jpg|https://x.test/2.jpg\n"))
    assert (again.unchanged, again.images_added) == (1, 0)
    assert ProductImage.select().count() == 2


def test_only_changed_rows_are_written(db, tmp_path):
    import_products(write(tmp_path, "feed.csv", PFDB_CSV))
    before = {p.sku: p.updated_at for p in Product.select()}
    changed = PFDB_CSV.replace("P-2,Pantalon,Toile,49", "P-2,Pantalon,Toile,59")
    result = import_products(write(tmp_path, "feed2.csv", changed))
    assert (result.updated, result.unchanged) == (1, 2)
    after = {p.sku: p.updated_at for p in Product.select()}
    assert after["P-1"] == before["P-1"] and after["P-3"] == before["P-3"] and after["P-2"] > before["P-2"]


# -- bad rows -----------------------------------------------------------------------------------
BAD = (
    "sku,name,description,price,gtin,currency\n"
    'B-1,Good,"two\nlines",10,,USD\n'
    ",No sku,,1,,USD\n"
    "B-2,Bad price,,12;50,,USD\n"
    "B-3,Negative,,-1,,USD\n"
    "B-4,Bad gtin,,1,1234567890123,USD\n"
    f"B-5,{'x' * 501},,1,,USD\n"
    "B-1,Repeat,,1,,USD\n"
    "B-6,Bad currency,,1,,EURO\n"
    "B-7,Good too,,3,'4006381333931,usd\n"
)


def test_rejects_name_line_column_and_reason_and_the_rest_imports(db, tmp_path):
    rejects = tmp_path / "rejects.csv"
    result = import_products(write(tmp_path, "bad.csv", BAD), rejects=rejects)
    assert (result.created, result.rejected) == (2, 7)
    got = [(r.line, r.column) for r in result.rejects]
    assert got == [(4, "sku"), (5, "price"), (6, "price"), (7, "gtin"), (8, "name"), (9, "sku"), (10, "currency")]
    messages = {r.line: r.message for r in result.rejects}
    assert messages[4] == "is required"
    assert "is not a number" in messages[5] and "must not be negative" in messages[6]
    assert "not a valid GTIN" in messages[7] and "longer than 500" in messages[8]
    assert "first occurrence wins" in messages[9] and "ISO 4217" in messages[10]
    assert product("B-1").name == "Good" and product("B-7").currency == "USD"
    import csv

    rows = list(csv.reader(rejects.open(encoding="utf-8", newline="")))
    assert rows[0] == ["sku", "name", "description", "price", "gtin", "currency", "reject_line", "reject_reason"]
    assert [r[-2] for r in rows[1:]] == ["4", "5", "6", "7", "8", "9", "10"]
    assert rows[2][:4] == ["B-2", "Bad price", "", "12;50"] and rows[2][-1].startswith("price: ")
    sync = SyncHistory.get(SyncHistory.id == result.sync_id)
    assert (sync.direction, sync.status, sync.created_count, sync.failed_count) == ("import", "completed", 2, 7)
    assert sync.error_details["rejected_by_column"]["price"] == 2


def test_fixed_rejects_file_feeds_back(db, tmp_path):
    rejects = tmp_path / "rejects.csv"
    import_products(write(tmp_path, "bad.csv", BAD), rejects=rejects)
    fixed = rejects.read_text(encoding="utf-8").replace("12;50", "12.50").replace(",-1,", ",1,")
    result = import_products(write(tmp_path, "fixed.csv", fixed))
    assert result.created == 2  # B-2 and B-3 now; the rest are still wrong
    assert product("B-2").price == Decimal("12.50")


def test_dry_run_counts_and_writes_nothing(db, tmp_path):
    path = write(tmp_path, "feed.csv", PFDB_CSV + "P-9,Bad,,x,,,,,,,,\n")
    result = import_products(path, dry_run=True)
    assert (result.created, result.rejected, result.written, result.job_id) == (3, 1, False, None)
    assert result.categories_created == 4
    assert (Product.select().count(), Category.select().count(), ProductImage.select().count()) == (0, 0, 0)
    assert (Job.select().count(), SyncHistory.select().count()) == (0, 0)
    import_products(path)
    changed = import_products(write(tmp_path, "f2.csv", PFDB_CSV.replace("29.90", "30.00")), dry_run=True)
    assert (changed.updated, changed.unchanged) == (1, 2)
    assert product("P-1").price == Decimal("29.90")


def test_strict_writes_nothing_when_a_row_is_bad(db, tmp_path):
    result = import_products(write(tmp_path, "bad.csv", BAD), strict=True, batch_size=2)
    assert (result.rejected, result.written) == (7, False)
    assert Product.select().count() == 0 and Category.select().count() == 0
    job = Job.get(Job.job_id == result.job_id)
    assert job.status == "failed" and "nothing was written" in job.error_message
    assert SyncHistory.get(SyncHistory.job == job).status == "failed"
    good = import_products(write(tmp_path, "good.csv", PFDB_CSV), strict=True)
    assert (good.created, good.written) == (3, True)
    assert Job.get(Job.job_id == good.job_id).status == "completed"


def test_job_and_sync_history_record_the_run(db, tmp_path):
    result = import_products(write(tmp_path, "feed.csv", PFDB_CSV))
    job = Job.get(Job.job_id == result.job_id)
    assert (job.job_type, job.status, job.progress, job.processed_items) == ("import_products", "completed", 100, 3)
    assert job.result["created"] == 3 and job.started_at <= job.completed_at
    sync = SyncHistory.get(SyncHistory.id == result.sync_id)
    assert (sync.sync_type, sync.direction, sync.status, sync.job_id) == ("product_feed", "import", "completed", job.id)
    assert (sync.processed_count, sync.created_count, sync.updated_count, sync.failed_count) == (3, 3, 0, 0)
    assert sync.source.endswith("feed.csv") and sync.completed_at is not None


def test_progress_callback_per_batch_and_job_updates_throttled(db, tmp_path, monkeypatch):
    rows = "".join(f"T-{i},Thing {i},{i}\n" for i in range(50))
    events = []
    saves = []
    original = Job.report_progress
    monkeypatch.setattr(Job, "report_progress", lambda self, *a, **k: saves.append(k) or original(self, *a, **k))
    result = import_products(
        write(tmp_path, "many.csv", "sku,name,price\n" + rows), batch_size=10, progress=events.append
    )
    assert result.created == 50
    assert [e.rows for e in events] == [10, 20, 30, 40, 50, 50]
    assert events[-1].bytes_total == (tmp_path / "many.csv").stat().st_size
    assert len(saves) <= 3  # the first batch, perhaps one more, and the final count: not one per batch


def test_feed_errors_name_the_file(db, tmp_path):
    with pytest.raises(FeedError, match="does not exist"):
        import_products(tmp_path / "missing.csv")
    with pytest.raises(FeedError, match="is empty"):
        import_products(write(tmp_path, "empty.csv", "\n\n"))
    with pytest.raises(FeedError, match="cannot tell the format"):
        import_products(write(tmp_path, "odd.csv", "a,b\n1,2\n"))
    with pytest.raises(FeedError, match="JSON array"):
        import_products(write(tmp_path, "array.json", '[{"sku": "x"}]'))
    with pytest.raises(FeedError, match="not valid utf-8 text"):
        import_products(write(tmp_path, "latin.csv", "sku,name\nX-1,Café\n", encoding="latin-1"))
    latin = import_products(
        write(tmp_path, "latin.csv", "sku,name\nX-1,Café\n", encoding="latin-1"), encoding="latin-1"
    )
    assert latin.created == 1 and product("X-1").name == "Café"
    with pytest.raises(UsageError, match="unknown feed format"):  # a bad argument: exit 2
        import_products(write(tmp_path, "f.csv", PFDB_CSV), format="xml")


def test_reading_a_file_object_and_a_stream(db, tmp_path):
    import io

    result = import_products(io.StringIO(PFDB_CSV))
    assert result.created == 3
    result = import_products(io.BytesIO(PFDB_CSV.replace("29.90", "28.00").encode()))
    assert result.updated == 1


def test_updated_at_moves_forward_only_for_changes(db, tmp_path):
    import_products(write(tmp_path, "feed.csv", PFDB_CSV))
    stamp = product("P-1").updated_at
    assert stamp.tzinfo is not None and abs(stamp - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=5)
    assert catalogue_state()["products"]["P-1"][1] == "Vêtements > Chemises"


def test_an_empty_stored_string_survives_a_rewrite(db, tmp_path):
    # PostgreSQL's fast COPY form cannot tell '' from NULL: a batch carrying one must not turn it into NULL.
    import_products(write(tmp_path, "feed.csv", PFDB_CSV))
    Product.update(description="").where(Product.sku == "P-2").execute()
    result = import_products(write(tmp_path, "p.csv", "sku,description,price\nP-2,,50\n"))
    assert result.updated == 1
    assert product("P-2").description == "" and product("P-2").price == Decimal("50.00")


@pytest.mark.parametrize("outer", [False, True], ids=["own-transactions", "callers-transaction"])
def test_postgresql_staging_tables_are_empty_after_every_batch(postgres_url, tmp_path, outer):
    # A batch's commit empties them; inside a longer transaction pfdb must do it itself, or
    # every later batch would write the earlier batches' rows again.
    from contextlib import nullcontext

    import pfdb

    db = pfdb.init_database(postgres_url)
    staged = []

    def look(_progress):
        staged.append(
            db.execute_sql(
                "SELECT (SELECT count(*) FROM pfdb_import_products) + (SELECT count(*) FROM pfdb_import_images)"
            ).fetchone()[0]
        )

    with db.atomic() if outer else nullcontext():
        result = import_products(write(tmp_path, "feed.csv", PFDB_CSV), batch_size=1, progress=look)
    assert result.created == 3 and len(staged) >= 3 and set(staged) == {0}
    assert ProductImage.select().count() == len(set(ProductImage.select(ProductImage.url).tuples()))


def test_reimport_compares_prices_by_value_not_by_spelling(db, tmp_path):
    feed = write(tmp_path, "feed.csv", PFDB_CSV)  # prices written 29.90, 49 and 15.5
    import_products(feed)
    again = import_products(feed)
    assert (again.unchanged, again.updated) == (3, 0)
    # A price with more places than the column keeps (set by hand) is a difference, not noise.
    # PostgreSQL's numeric(12,2) rounds it on the way in; SQLite keeps 29.901, which would round
    # to the feed's 29.90 and must not pass for it.
    db.execute_sql("UPDATE products SET price = 29.901 WHERE sku = 'P-1'")
    stored = Decimal(str(db.execute_sql("SELECT price FROM products WHERE sku = 'P-1'").fetchone()[0]))
    differs = stored != Decimal("29.90")
    result = import_products(feed)
    assert (result.updated, result.unchanged) == ((1, 2) if differs else (0, 3))
    assert product("P-1").price == Decimal("29.90")
