"""The nine models on both backends: validation before writes, keys, trees, jobs, config, FKs."""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal

import pytest

from pfdb import (
    Category,
    Configuration,
    DuplicateError,
    Icon,
    Job,
    Product,
    ProductImage,
    SyncHistory,
    SystemLog,
    User,
    ValidationError,
    db_session_scope,
)
from pfdb.models import gtin_is_valid


def make_user(email="Shop.Owner@Example.COM ", password="correct horse"):
    user = User(email=email, first_name="Ada")
    user.set_password(password)
    user.save()
    return user


# -- users ------------------------------------------------------------------------------
@pytest.mark.real_password_hashes
def test_user_email_is_normalised_and_password_hashed(db):
    user = make_user()
    stored = User.get_by_id(user.id)
    assert stored.email == "shop.owner@example.com"
    assert stored.password_hash.startswith("scrypt:")  # werkzeug's default, salted
    assert stored.password_hash != "correct horse" and "correct horse" not in stored.password_hash
    assert stored.check_password("correct horse") and not stored.check_password("wrong")
    assert User.get_by_email(" SHOP.owner@example.com") == stored
    assert stored.password_hash not in repr(stored) and "correct horse" not in repr(stored)


@pytest.mark.parametrize("email", ["not-an-email", "a@b", "two@@example.com", "sp ace@example.com", ""])
def test_invalid_email_is_refused_before_writing(db, email):
    user = User(email=email)
    user.set_password("long enough")
    with pytest.raises(ValidationError) as info:
        user.save()
    assert info.value.field == "email"
    assert User.select().count() == 0


def test_duplicate_email_is_a_clear_error(db):
    make_user("a@example.com")
    with pytest.raises(DuplicateError, match="a User with email 'a@example.com' already exists"):
        make_user("A@example.com")


def test_user_needs_a_password(db):
    with pytest.raises(ValidationError, match="password"):
        User(email="a@example.com").save()


# -- timestamps ---------------------------------------------------------------------------
def test_timestamps_are_utc_and_updated_on_save(db):
    product = Product.create(sku="T-1", name="Clock")
    stored = Product.get_by_id(product.id)
    assert stored.created_at.tzinfo == dt.timezone.utc
    assert abs(stored.created_at - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=1)
    before = stored.updated_at
    time.sleep(0.01)
    stored.name = "Wall clock"
    stored.save()
    assert Product.get_by_id(product.id).updated_at > before
    assert Product.get_by_id(product.id).created_at == stored.created_at


def test_aware_non_utc_times_are_stored_as_utc(db):
    cest = dt.timezone(dt.timedelta(hours=2))
    product = Product.create(sku="T-2", name="x", shopify_synced_at=dt.datetime(2026, 6, 1, 12, 0, tzinfo=cest))
    assert Product.get_by_id(product.id).shopify_synced_at == dt.datetime(2026, 6, 1, 10, 0, tzinfo=dt.timezone.utc)


# -- products -----------------------------------------------------------------------------
def test_price_is_exact_decimal(db):
    product = Product.create(sku=" SKU-1 ", name="Mug", price="19.99", compare_at_price=24.9)
    stored = Product.get_by_id(product.id)
    assert stored.sku == "SKU-1"
    assert stored.price == Decimal("19.99") and isinstance(stored.price, Decimal)
    assert stored.compare_at_price == Decimal("24.90")
    total = sum((Product.get_by_id(product.id).price for _ in range(3)), Decimal(0))
    assert total == Decimal("59.97")


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"sku": "   "}, "sku"),
        ({"sku": None}, "sku"),
        ({"price": "-1"}, "price"),
        ({"price": "abc"}, "price"),
        ({"price": "1.005"}, "price"),
        ({"gtin": "1234567890123"}, "gtin"),
        ({"currency": "EURO"}, "currency"),
        ({"status": "deleted"}, "status"),
        ({"name": "x" * 501}, "name"),
        ({"weight": "-2"}, "weight"),
    ],
)
def test_invalid_product_is_refused_naming_the_field(db, fields, field):
    values = {"sku": "OK-1", "name": "Valid", **fields}
    with pytest.raises(ValidationError) as info:
        Product.create(**values)
    assert info.value.field == field
    assert Product.select().count() == 0


def test_gtin_check_digits():
    assert gtin_is_valid("7350177880121") and gtin_is_valid("036000291452") and gtin_is_valid("96385074")
    assert not gtin_is_valid("7350177880122") and not gtin_is_valid("12345") and not gtin_is_valid("abc")


def test_spreadsheet_apostrophe_is_stripped_from_gtin(db):
    assert Product.create(sku="G", name="g", gtin="'7350177880121").gtin == "7350177880121"


def test_duplicate_sku_names_the_key_and_leaves_the_transaction_usable(db):
    Product.create(sku="DUP", name="first")
    with db_session_scope():
        with pytest.raises(DuplicateError) as info:
            Product.create(sku="DUP", name="second")
        assert info.value.key == "sku" and "DUP" in str(info.value)
        Product.create(sku="AFTER", name="still fine")  # the failed insert poisoned nothing
    assert sorted(p.sku for p in Product.select()) == ["AFTER", "DUP"]


def test_json_attributes_round_trip(db):
    attrs = {"colour": "röd", "sizes": [1, 2], "nested": {"ok": True}}
    product = Product.create(sku="J", name="j", attributes=attrs)
    assert Product.get_by_id(product.id).attributes == attrs


def test_products_needing_sync(db):
    Product.create(sku="NEW", name="n")
    Product.create(sku="DONE", name="d", shopify_sync_status="synced")
    assert [p.sku for p in Product.needing_sync()] == ["NEW"]


# -- categories -----------------------------------------------------------------------------
@pytest.fixture
def tree(db):
    apparel = Category.create(name="Apparel & Accessories")
    clothing = Category.create(name="Clothing", parent=apparel)
    shirts = Category.create(name="Shirts", parent=clothing)
    tees = Category.create(name="Tees", parent=shirts)
    home = Category.create(name="Home")
    return apparel, clothing, shirts, tees, home


def test_level_and_path_are_maintained(tree):
    apparel, clothing, shirts, tees, home = tree
    assert apparel.slug == "apparel-accessories"
    assert (apparel.level, tees.level) == (0, 3)
    assert tees.path == f"/{apparel.id}/{clothing.id}/{shirts.id}/{tees.id}/"
    assert tees.breadcrumb() == "Apparel & Accessories > Clothing > Shirts > Tees"
    assert [c.name for c in tees.ancestors()] == ["Apparel & Accessories", "Clothing", "Shirts"]
    assert [c.name for c in apparel.descendants()] == ["Clothing", "Shirts", "Tees"]
    assert [c.name for c in clothing.children] == ["Shirts"]


def test_moving_a_category_moves_its_subtree(tree):
    apparel, clothing, shirts, tees, home = tree
    clothing.parent = home
    clothing.save()
    tees = Category.get_by_id(tees.id)
    assert tees.path == f"/{home.id}/{clothing.id}/{shirts.id}/{tees.id}/" and tees.level == 3
    assert [c.name for c in apparel.descendants()] == []
    clothing.parent = None
    clothing.save()
    assert Category.get_by_id(tees.id).level == 2
    assert Category.get_by_id(tees.id).path == f"/{clothing.id}/{shirts.id}/{tees.id}/"


def test_a_category_cannot_become_its_own_ancestor(tree):
    apparel, clothing, shirts, tees, home = tree
    for parent in (tees, apparel):
        apparel.parent = parent
        with pytest.raises(ValidationError, match="own ancestor"):
            apparel.save()
    assert Category.get_by_id(apparel.id).parent_id is None


@pytest.mark.parametrize("slug", ["Has Space", "UPPER", "trailing-", "dou--ble", "ümlaut"])
def test_bad_slug_is_refused(db, slug):
    with pytest.raises(ValidationError) as info:
        Category.create(name="Fine", slug=slug)
    assert info.value.field == "slug"


def test_unique_slug_and_external_id(tree):
    with pytest.raises(DuplicateError, match="slug 'clothing'"):
        Category.create(name="Clothing")
    Category.create(name="Taxonomy node", external_id="1604")
    with pytest.raises(DuplicateError, match="external_id"):
        Category.create(name="Other node", external_id="1604")
    Category.create(name="No id 1")
    Category.create(name="No id 2")  # many NULL external ids are fine


# -- foreign keys -----------------------------------------------------------------------------
def test_on_delete_behaviour(tree):
    apparel, clothing, shirts, tees, home = tree
    product = Product.create(sku="FK", name="fk", category=tees)
    ProductImage.create(product=product, url="https://img.example/1.jpg")
    Icon.create(category=tees, url="https://img.example/icon.png")
    user = make_user()
    job = Job.create(job_type="import", user=user)
    sync = SyncHistory.create(sync_type="feed", direction="import", job=job, user=user)
    SystemLog.create(level="error", message="x", user=user)

    with pytest.raises(ValidationError, match="cannot be deleted: other rows still refer to it"):
        clothing.delete_instance()  # RESTRICT: a parent with children stays
    assert Category.get_by_id(clothing.id).name == "Clothing"
    tees.delete_instance()  # icons cascade, products keep existing without a category
    assert Icon.select().count() == 0
    assert Product.get_by_id(product.id).category_id is None
    product.delete_instance()  # images cascade
    assert ProductImage.select().count() == 0
    user.delete_instance()  # jobs, syncs and logs keep their history
    assert Job.get_by_id(job.id).user_id is None and SyncHistory.get_by_id(sync.id).user_id is None
    assert SystemLog.get().user_id is None
    job.delete_instance()
    assert SyncHistory.get_by_id(sync.id).job_id is None


# -- images and icons ---------------------------------------------------------------------------
def test_the_same_image_is_stored_once_per_product(db):
    product = Product.create(sku="IMG", name="img")
    ProductImage.create(product=product, url="https://img.example/a.jpg", position=0, is_primary=True)
    with pytest.raises(DuplicateError):
        ProductImage.create(product=product, url=" https://img.example/a.jpg", position=1)
    other = Product.create(sku="IMG2", name="img2")
    ProductImage.create(product=other, url="https://img.example/a.jpg")  # another product may share it
    assert ProductImage.select().count() == 2


def test_icon_status_is_validated(tree):
    with pytest.raises(ValidationError, match="status"):
        Icon.create(category=tree[0], status="drawn")
    icon = Icon.create(category=tree[0], generation={"prompt": "a shirt", "style": "flat", "generator": "x"})
    assert Icon.get_by_id(icon.id).generation["style"] == "flat"


# -- jobs and sync history ------------------------------------------------------------------------
def test_job_lifecycle_keeps_fields_consistent(db):
    job = Job.create(job_type="feed_import", parameters={"file": "feed.csv"})
    assert job.status == "pending" and job.job_id is not None
    job.start(total_items=200, step="reading")
    job.report_progress(processed_items=50)
    stored = Job.get(Job.job_id == job.job_id)
    assert (stored.status, stored.progress, stored.processed_items) == ("running", 25, 50)
    assert stored.started_at is not None
    job.complete(result={"created": 200})
    stored = Job.get_by_id(job.id)
    assert (stored.status, stored.progress, stored.processed_items) == ("completed", 100, 200)
    assert stored.completed_at >= stored.started_at and stored.result == {"created": 200}
    with pytest.raises(ValidationError, match="cannot fail a completed job"):
        job.fail("late")


def test_job_failure_and_cancellation(db):
    failed = Job.create(job_type="x").start().fail("supplier feed unreachable")
    cancelled = Job.create(job_type="x").start().cancel("Ctrl-C")
    assert Job.get_by_id(failed.id).status == "failed"
    assert Job.get_by_id(failed.id).error_message == "supplier feed unreachable"
    assert Job.get_by_id(cancelled.id).status == "cancelled"


@pytest.mark.parametrize("progress", [-1, 101, 50.5])
def test_progress_outside_0_to_100_is_refused(db, progress):
    job = Job.create(job_type="x")
    job.progress = progress
    with pytest.raises(ValidationError) as info:
        job.save()
    assert info.value.field == "progress"
    assert Job.get_by_id(job.id).progress == 0


def test_sync_history_is_validated(db):
    with pytest.raises(ValidationError, match="direction"):
        SyncHistory.create(sync_type="shopify", direction="sideways")
    sync = SyncHistory.create(
        sync_type="shopify", direction="export", target="shop.myshopify.com", error_details={"failed": ["SKU-1"]}
    )
    assert SyncHistory.get_by_id(sync.id).error_details == {"failed": ["SKU-1"]}


# -- system log and configuration --------------------------------------------------------------------
def test_recent_errors_query(db):
    for level in ("info", "error", "critical", "warning", "error"):
        SystemLog.create(level=level, message=f"{level} happened", logger="pfdb.test")
    recent = list(SystemLog.recent(level="ERROR", limit=10))
    assert [r.level for r in recent] == ["ERROR", "CRITICAL", "ERROR"]
    assert len(list(SystemLog.recent(limit=2))) == 2
    with pytest.raises(ValidationError):
        SystemLog.create(level="LOUD", message="x")


def test_typed_configuration(db):
    Configuration.set("import.batch_size", 5000, description="rows per transaction", category="import")
    Configuration.set("shopify.enabled", True)
    Configuration.set("shopify.api_key", "shpat_123", is_sensitive=True)
    Configuration.set("feeds", {"supplier": ["a", "b"]})
    assert Configuration.get_value("import.batch_size") == 5000
    assert Configuration.get_value("shopify.enabled") is True
    assert Configuration.get_value("feeds") == {"supplier": ["a", "b"]}
    assert Configuration.get_value("missing", "fallback") == "fallback"
    secret = Configuration.get(Configuration.key == "shopify.api_key")  # peewee's get still works
    assert secret.display_value == "********" and "shpat_123" not in repr(secret)
    assert secret.typed_value == "shpat_123"
    with pytest.raises(ValidationError, match="value"):
        Configuration.create(key="bad", value="abc", value_type="int")


def test_configuration_get_is_peewees_and_the_old_shorthand_still_works(db):
    Configuration.set_value("shop.name", "Acme")
    row = Configuration.get(Configuration.key == "shop.name")  # peewee's: the row
    assert isinstance(row, Configuration) and row.typed_value == "Acme"
    assert Configuration.get(key="shop.name").id == row.id and Configuration.get_by_id(row.id).key == "shop.name"
    with pytest.raises(Configuration.DoesNotExist):
        Configuration.get(Configuration.key == "missing")
    assert Configuration.get_or_none(Configuration.key == "missing") is None
    with pytest.warns(DeprecationWarning, match="get_value"):
        assert Configuration.get("shop.name") == "Acme"  # the seed's shorthand: the typed value
    with pytest.warns(DeprecationWarning):
        assert Configuration.get("missing", "fallback") == "fallback"


def test_configuration_booleans_take_pfdbs_true_false_words(db):
    for word, value in (("yes", True), ("Y", True), ("on", True), ("0", False), ("off", False), ("n", False)):
        Configuration.create(key=f"flag.{word}", value=word, value_type="bool")
        assert Configuration.get_value(f"flag.{word}") is value, word
    # Before: any other word was stored and read back as False.
    with pytest.raises(ValidationError, match="not a valid bool"):
        Configuration.create(key="flag.bad", value="banana", value_type="bool")
