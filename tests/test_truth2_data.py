"""Data as documented, on both backends: money with two places, JSON as jsonb and times as timestamptz.

Migration 003 turns PostgreSQL's JSON columns into jsonb and its timestamps into timestamptz;
SQLite needs nothing. Its test runs a database with rows in every table forward and back.
"""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal

import pytest
from feeds_samples import write
from peewee import PostgresqlDatabase

import pfdb
from pfdb import migrations
from pfdb.feeds import import_products
from pfdb.models import (
    MODELS,
    Category,
    Configuration,
    Icon,
    Job,
    JSONField,
    Product,
    ProductImage,
    SyncHistory,
    SystemLog,
    User,
)

UTC = dt.timezone.utc
NOT_UTC = "America/St_Johns"  # UTC-03:30 (or -02:30): an hour-and-a-half offset no mistake hides
EVERY_JSON = [
    (m._meta.table_name, f.column_name) for m in MODELS for f in m._meta.sorted_fields if isinstance(f, JSONField)
]
EVERY_TIME = [
    (m._meta.table_name, f.column_name)
    for m in MODELS
    for f in m._meta.sorted_fields
    if isinstance(f, pfdb.models.UTCDateTimeField)
]
NESTED = {
    "tags": ["été", "日本", "sale"],
    "zeta": {"b": [1, 2.5, None, True], "a": 'x\ny\t"q"'},
    "n": 0,
    "longer key first?": {"": []},
}
WHEN = dt.datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)  # a DST night in Europe and America


def column_types(table_columns) -> dict[tuple[str, str], str]:
    if not isinstance(pfdb.db.obj, PostgresqlDatabase):
        return {}
    rows = pfdb.db.execute_sql(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema()"
    ).fetchall()
    types = {(t, c): d for t, c, d in rows}
    return {tc: types[tc] for tc in table_columns}


# -- money and weight --------------------------------------------------------------------------------
def test_money_has_two_places_and_weight_three_on_both_backends(db, backend):
    Product.create(sku="M-1", name="whole", price=Decimal("50"), compare_at_price=Decimal("19.9"), weight=Decimal("2"))
    Product.create(sku="M-2", name="none", price=None, weight=None)
    p = Product.get(Product.sku == "M-1")
    assert (str(p.price), str(p.compare_at_price), str(p.weight)) == ("50.00", "19.90", "2.000")
    assert Product.get(Product.sku == "M-2").price is None
    # A value SQLite keeps as INTEGER or REAL (written by raw SQL) reads back the same way.
    with pfdb.db_session_scope():
        pfdb.db.execute_sql("UPDATE products SET price = 7, weight = 0.5 WHERE sku = 'M-2'")
    p = Product.get(Product.sku == "M-2")
    assert (str(p.price), str(p.weight)) == ("7.00", "0.500")
    assert [str(v) for (v,) in Product.select(Product.price).order_by(Product.sku).tuples()] == ["50.00", "7.00"]
    # More places than the column keeps: PostgreSQL rounds on the way in, SQLite keeps them and
    # they are shown, not rounded away (the importer must see that 29.901 is not the feed's 29.90).
    with pfdb.db_session_scope():
        pfdb.db.execute_sql("UPDATE products SET price = 29.901 WHERE sku = 'M-2'")
    assert str(Product.get(Product.sku == "M-2").price) == ("29.901" if backend == "sqlite" else "29.90")


# -- JSON and timestamps ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value", [NESTED, "a JSON string", '{"looks": "like json"}', "", 42, 2.5, True, [], ["x", {"é": None}]], ids=repr
)
def test_json_values_round_trip(db, value):
    Product.create(sku="J-1", name="json", attributes=value)
    stored = Product.get(Product.sku == "J-1").attributes
    assert stored == value and type(stored) is type(value)


POSTGRES_ONLY = [pytest.param("postgresql", marks=pytest.mark.postgres)]  # SQLite keeps both as text


@pytest.mark.parametrize("backend", POSTGRES_ONLY)
def test_postgres_columns_are_jsonb_and_timestamptz_and_json_operators_work(db, backend):
    types = column_types(EVERY_JSON + EVERY_TIME)
    assert {types[c] for c in EVERY_JSON} == {"jsonb"}
    assert {types[c] for c in EVERY_TIME} == {"timestamp with time zone"}
    Product.create(sku="J-2", name="json", attributes=NESTED)
    with pfdb.db_read_scope():
        (tags,) = pfdb.db.execute_sql("SELECT attributes->'tags' FROM products WHERE attributes ? 'zeta'").fetchone()
    assert json.loads(tags) == NESTED["tags"]  # pfdb's connections read jsonb as text


@pytest.mark.fresh_database  # sets the database's own TimeZone
def test_a_server_time_zone_that_is_not_utc_changes_no_timestamp(postgres_url, pg_server, tmp_path):
    import psycopg2

    dbname = postgres_url.rsplit("/", 1)[1]
    pg_server.execute(f"ALTER DATABASE \"{dbname}\" SET timezone = '{NOT_UTC}'")
    with psycopg2.connect(postgres_url) as other, other.cursor() as cur:  # the premise: sessions start there
        cur.execute("SHOW timezone")
        assert cur.fetchone()[0] == NOT_UTC
    pfdb.init_database(postgres_url)
    try:
        # An aware time in another zone and a naive UTC one are both stored as their UTC instant.
        Product.create(sku="T-1", name="t", shopify_synced_at=WHEN.astimezone(dt.timezone(dt.timedelta(hours=9))))
        Job.create(job_type="x", started_at=WHEN.replace(tzinfo=None))
        assert Product.get(Product.sku == "T-1").shopify_synced_at == WHEN
        assert Job.get().started_at == WHEN
        with pfdb.db_read_scope():
            epochs = pfdb.db.execute_sql(
                "SELECT extract(epoch FROM shopify_synced_at) FROM products UNION ALL "
                "SELECT extract(epoch FROM started_at) FROM jobs"
            ).fetchall()
        assert [float(e) for (e,) in epochs] == [WHEN.timestamp()] * 2
        # The importer sends its timestamps as COPY text: they are UTC too.
        before = dt.datetime.now(UTC)
        import_products(write(tmp_path, "feed.csv", "sku,name,price\nT-2,t,1.50\n"))
        stamped = Product.get(Product.sku == "T-2").updated_at
        assert before - dt.timedelta(seconds=1) <= stamped <= dt.datetime.now(UTC) + dt.timedelta(seconds=1)
    finally:
        pfdb.close_database()


def test_unchanged_reimport_of_json_attributes_changes_nothing(db, tmp_path):
    # Keys of several lengths: jsonb orders them by length, json.dumps(sort_keys) alphabetically.
    rows = [{"sku": f"A-{n}", "name": "attrs", "price": "5", "attributes": {**NESTED, "n": n}} for n in range(3)]
    path = write(tmp_path, "feed.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert import_products(path).created == 3
    stamps = dict(Product.select(Product.sku, Product.updated_at).tuples())
    again = import_products(path)
    assert (again.created, again.updated, again.unchanged) == (0, 0, 3)
    assert dict(Product.select(Product.sku, Product.updated_at).tuples()) == stamps
    assert Product.get(Product.sku == "A-2").attributes == {**NESTED, "n": 2}


def test_a_nul_in_json_is_refused_on_both_backends(db, tmp_path):
    with pytest.raises(pfdb.errors.ValidationError, match=r"attributes: holds a NUL character \(\\x00\) at a\[1\]"):
        Product.create(sku="N-1", name="nul", attributes={"a": ["ok", "x\x00"]})
    with pytest.raises(pfdb.errors.ValidationError, match="generation: holds a NUL character .* in a key"):
        Icon.create(category=Category.create(name="Nul"), generation={"k\x00": 1})
    # a CSV cell's JSON text spells it \u0000: the row is rejected, the others are imported
    feed = 'sku,name,attributes\nN-2,nul,"{""k"": ""v\\u0000""}"\nN-3,fine,"{""k"": ""v""}"\n'
    result = import_products(write(tmp_path, "nul.csv", feed))
    assert (result.created, result.rejected) == (1, 1)
    assert [p.sku for p in Product.select()] == ["N-3"]


def test_a_value_the_driver_already_decoded_is_kept():
    """Another connection (no pfdb session settings) hands jsonb back decoded: it is used as it is."""
    field = Product.attributes
    assert field.python_value({"a": 1}) == {"a": 1} and field.python_value([1]) == [1]
    assert field.python_value('"text"') == "text" and field.python_value(None) is None
    aware = dt.datetime(2026, 1, 1, 12, tzinfo=dt.timezone(dt.timedelta(hours=2)))
    assert Product.updated_at.python_value(aware) == dt.datetime(2026, 1, 1, 10, tzinfo=UTC)
    assert Product.updated_at.python_value(aware).tzinfo is UTC


# -- migration 003 forward and back with every table filled ------------------------------------------
def fill() -> None:
    with pfdb.db_session_scope():
        user = User(email="ops@example.com", first_name="Zoë", last_login_at=WHEN)
        user.set_password("correct horse battery")
        user.save()
        root = Category.create(name="Vêtements", shopify_synced_at=WHEN)
        child = Category.create(name="Рубашки", slug="rubashki", parent=root)
        Icon.create(category=child, generation={"prompt": "a shirt ✓", "nested": NESTED}, synced_at=WHEN)
        for n, attributes in enumerate([NESTED, "just a string", None, [1, "two", {"3": 3.0}], {"": ""}]):
            product = Product.create(
                sku=f"S-{n}",
                name=f"Produit {n} 日本",
                price=Decimal("19.9") + n,
                weight=Decimal("1.5"),
                attributes=attributes,
                category=child,
                shopify_synced_at=WHEN + dt.timedelta(days=n),
            )
            ProductImage.create(product=product, url=f"https://img.example.com/{n}.jpg", content_hash=f"{n:064x}")
        job = Job.create(job_type="import_products", user=user, parameters={"file": "feed.csv", "opts": [True]})
        job.start(total_items=10)
        job.complete({"created": 10, "names": ["é"]})
        SyncHistory.create(
            sync_type="product_feed",
            direction="import",
            status="completed",
            job=job,
            user=user,
            started_at=WHEN,
            completed_at=WHEN,
            error_details={"rejects": [{"line": 3}]},
        )
        SystemLog.create(level="ERROR", logger="shop", message="boom ✗", extra={"order": 42, "why": "∅"})
        Configuration.set_value("shop.name", "Café Ünïcode")


def snapshot() -> dict[str, list[dict]]:
    with pfdb.db_read_scope():
        return {m._meta.table_name: list(m.select().order_by(m._meta.primary_key).dicts()) for m in MODELS}


def test_migration_003_forward_and_back_keeps_every_value(empty_url, backend):
    pfdb.init_database(empty_url)
    migrations.migrate("002", backup=False)
    fill()
    before = snapshot()
    assert all(before.values()), [t for t, rows in before.items() if not rows]  # every table has rows
    old_types = column_types(EVERY_JSON + EVERY_TIME)

    assert migrations.migrate("003", backup=False).applied == ("003_postgres_jsonb_timestamptz",)
    assert snapshot() == before
    if backend == "postgresql":
        assert set(column_types(EVERY_JSON).values()) == {"jsonb"}
        assert set(column_types(EVERY_TIME).values()) == {"timestamp with time zone"}
    assert not migrations.check().has_drift

    result = migrations.rollback("002", backup=False)
    assert result.rolled_back == ("003_postgres_jsonb_timestamptz",) and result.drops == ()
    assert snapshot() == before
    assert column_types(EVERY_JSON + EVERY_TIME) == old_types
    if backend == "postgresql":
        assert set(old_types.values()) == {"text", "timestamp without time zone"}
    migrations.migrate(backup=False)  # and forward again, over the rolled-back text
    assert snapshot() == before


@pytest.mark.parametrize("backend", POSTGRES_ONLY)  # on SQLite migration 003 changes nothing
def test_migration_003_refuses_a_json_column_holding_no_json_and_changes_nothing(empty_url, backend):
    pfdb.init_database(empty_url)
    migrations.migrate("002", backup=False)
    with pfdb.db_session_scope():
        pfdb.db.execute_sql(
            "INSERT INTO system_logs (created_at, updated_at, level, message, extra) "
            "VALUES (now(), now(), 'INFO', 'raw', 'not json')"
        )
    with pytest.raises(pfdb.errors.MigrationError, match="003_postgres_jsonb_timestamptz failed.*json") as failed:
        migrations.migrate(backup=False)
    assert "\n" not in str(failed.value) and "nothing of it was applied" in str(failed.value)
    assert [m.name for m in migrations.status().applied] == ["001_initial", "002_unique_category_names"]
    assert column_types([("system_logs", "extra")]) == {("system_logs", "extra"): "text"}
