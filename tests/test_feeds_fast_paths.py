"""The import's speed measures leave nothing behind: per-import settings end with the import.

benchmarks/import_benchmark.py shows what they buy; these tests hold what they must not change.
"""

from __future__ import annotations

import dataclasses

from feeds_samples import write

import pfdb
from pfdb.feeds import import_products
from pfdb.models import Product, ProductImage


def _feed(tmp_path, rows: int, *, price: str = "10.00", name: str = "feed.csv"):
    lines = ["sku,name,price,images"] + [
        f"S-{i:04d},Item {i},{price},https://img.example.com/{i}/a.jpg|https://img.example.com/{i}/b.jpg"
        for i in range(rows)
    ]
    return write(tmp_path, name, "\n".join(lines) + "\n")


def test_sqlite_keeps_the_statement_journal_in_memory_only_while_importing(sqlite_url, tmp_path):
    pfdb.init_database(sqlite_url)
    database = pfdb.get_database()

    def temp_store() -> int:
        return database.execute_sql("PRAGMA temp_store").fetchone()[0]

    with database.connection_context():
        before = temp_store()
        seen = []
        result = import_products(_feed(tmp_path, 50), batch_size=20, progress=lambda _: seen.append(temp_store()))
        after = temp_store()
    assert result.created == 50
    assert seen and set(seen) == {2}  # MEMORY while the batches are written
    assert after == before == 0  # the default again: VACUUM and big sorts still spill to disk


def test_postgresql_lookups_read_the_index_and_leave_the_planner_as_it_was(postgres_url, tmp_path):
    pfdb.init_database(postgres_url)
    database = pfdb.get_database()
    assert import_products(_feed(tmp_path, 300), batch_size=100).created == 300

    def sample(_):
        # strict: the whole import is one transaction, so its own scan counts are visible here
        (scans,) = database.execute_sql(
            "SELECT seq_scan FROM pg_stat_xact_user_tables WHERE relname = %s", (Product._meta.table_name,)
        ).fetchone()
        (setting,) = database.execute_sql("SHOW enable_seqscan").fetchone()
        samples.append((scans, setting))

    samples: list[tuple[int, str]] = []
    changed = _feed(tmp_path, 300, price="11.00", name="changed.csv")
    with database.connection_context():
        result = import_products(changed, batch_size=100, strict=True, progress=sample)
        (after,) = database.execute_sql("SHOW enable_seqscan").fetchone()
    assert (result.updated, result.unchanged) == (300, 0)
    # Each batch looked up its stored products and images by their keys, never by reading the table
    # whole (the planner's choice for 100 keys of 300 rows), and gave the planner back its setting.
    assert len(samples) >= 3 and set(samples) == {(0, "on")}
    assert after == "on"


def test_stored_empty_strings_carried_into_a_changed_row_stay_empty(db, tmp_path):
    # COPY's CSV form cannot tell "" from NULL: a batch carrying a stored "" must use the text form
    # (only text columns are checked for one, which is how the check stays cheap).
    Product.insert(sku="E-1", name="", brand="", price="1.00", currency="EUR", inventory_quantity=0).execute()
    feed = write(tmp_path, "feed.csv", "sku,brand,price\nE-1,,2.00\n")
    result = import_products(feed)
    assert (result.updated, result.rejected) == (1, 0)
    stored = Product.get(Product.sku == "E-1")
    assert (stored.name, stored.brand, str(stored.price)) == ("", "", "2.00")


def test_a_re_import_that_reorders_images_moves_them(db, tmp_path):
    # The stored images are updated in place (position, primary): a boolean parameter on PostgreSQL.
    head = "sku,name,price,images\n"
    import_products(
        write(tmp_path, "first.csv", head + "R-1,Item,1.00,https://i.example/a.jpg|https://i.example/b.jpg\n")
    )
    result = import_products(
        write(tmp_path, "second.csv", head + "R-1,Item,1.00,https://i.example/b.jpg|https://i.example/a.jpg\n")
    )
    assert (result.updated, result.unchanged, result.images_added, result.images_removed) == (1, 0, 0, 0)
    images = ProductImage.select().order_by(ProductImage.position)
    assert [(i.url, i.position, i.is_primary) for i in images] == [
        ("https://i.example/b.jpg", 0, True),
        ("https://i.example/a.jpg", 1, False),
    ]


def _count_merges(monkeypatch) -> list[int]:
    """The sizes of the batches the database merged (``Writer.merge``), on either backend."""
    from pfdb.feeds import upsert

    merged: list[int] = []
    for writer in (upsert.PostgresWriter, upsert.SqliteWriter):
        original = writer.merge
        monkeypatch.setattr(
            writer, "merge", lambda self, rows, original=original: merged.append(len(rows)) or original(self, rows)
        )
    return merged


def test_a_batch_the_server_merges_counts_and_touches_what_the_lookup_would(db, tmp_path, monkeypatch):
    # A batch of mostly new products goes whole: the database finds, compares and writes
    # (Writer.merge), images compared only for the stored ones.
    merged = _count_merges(monkeypatch)
    head = "sku,name,description,price,images\n"
    first = "".join(
        f"M-{i},Item {i},d{i},10.00,https://i.example/{i}/a.jpg|https://i.example/{i}/b.jpg\n" for i in range(5)
    )
    import_products(write(tmp_path, "first.csv", head + first))
    before = {p.sku: p.updated_at for p in Product.select()}
    second = (
        "M-0,Item 0,d0,10.00,https://i.example/0/a.jpg|https://i.example/0/b.jpg\n"  # unchanged
        "M-1,Item 1,d1,11.00,https://i.example/1/a.jpg|https://i.example/1/b.jpg\n"  # price
        "M-2,Item 2,,10.00,https://i.example/2/a.jpg|https://i.example/2/b.jpg\n"  # empty: keeps d2
        "M-3,Item 3,d3,10.00,https://i.example/3/b.jpg|https://i.example/3/a.jpg\n"  # images reordered
        "M-4,Item 4,d4,10.00,https://i.example/4/c.jpg\n"  # images replaced
        + "".join(f"N-{i},New {i},,5.00,https://i.example/n{i}.jpg\n" for i in range(6))
    )
    result = import_products(write(tmp_path, "second.csv", head + second))
    assert (result.created, result.updated, result.unchanged, result.rejected) == (6, 3, 2, 0)
    assert (result.images_added, result.images_removed) == (7, 2)
    stored = {p.sku: p for p in Product.select()}
    assert stored["M-2"].description == "d2" and stored["N-0"].description is None
    assert str(stored["M-1"].price) == "11.00"
    assert [stored[s].updated_at == before[s] for s in ("M-0", "M-1", "M-2", "M-3", "M-4")] == [
        True, False, True, False, False,
    ]  # fmt: skip
    urls = lambda sku: [  # noqa: E731
        (i.url, i.position, i.is_primary)
        for i in ProductImage.select().where(ProductImage.product == stored[sku]).order_by(ProductImage.position)
    ]
    assert urls("M-3") == [("https://i.example/3/b.jpg", 0, True), ("https://i.example/3/a.jpg", 1, False)]
    assert urls("M-4") == [("https://i.example/4/c.jpg", 0, True)]
    assert urls("N-5") == [("https://i.example/n5.jpg", 0, True)]
    assert merged == [5, 11]


def test_a_re_import_goes_back_to_the_lookup_after_a_batch_of_stored_products(db, tmp_path, monkeypatch):
    # Sending every row to the server costs more than looking up and sending the changed ones
    # once most rows are stored: the first such batch says so, and the next ones look up.
    merged = _count_merges(monkeypatch)
    assert import_products(_feed(tmp_path, 300), batch_size=100).created == 300
    assert merged == [100, 100, 100]
    merged.clear()
    result = import_products(_feed(tmp_path, 300, price="11.00", name="changed.csv"), batch_size=100)
    assert (result.created, result.updated, result.unchanged) == (0, 300, 0)
    assert merged == [100]


def test_sqlite_merge_tells_new_rows_from_stored_ones_at_the_id_limit(sqlite_url, tmp_path):
    # A merged batch's new rows are those with an id above the highest before it. At the highest
    # id SQLite picks free ids at random: that batch takes the lookup, and the counts stay right.
    pfdb.init_database(sqlite_url)
    Product.insert(id=2**63 - 1, sku="TOP", name="Top", price="1.00", currency="USD", inventory_quantity=0).execute()
    Product.insert(id=1, sku="S-0001", name="Old", price="1.00", currency="USD", inventory_quantity=0).execute()
    result = import_products(_feed(tmp_path, 10))
    assert (result.created, result.updated, result.unchanged) == (9, 1, 0)
    assert Product.select().count() == 11 and Product.get(Product.sku == "S-0001").name == "Item 1"


def test_sqlite_caps_the_page_cache_only_while_importing(sqlite_url, tmp_path):
    # The connection's 64 MiB page cache held mostly pages written once: capped for the import
    # (memory growth at a million rows), the connection's own size again afterwards.
    pfdb.init_database(sqlite_url)
    database = pfdb.get_database()

    def cache_size() -> int:
        return database.execute_sql("PRAGMA cache_size").fetchone()[0]

    with database.connection_context():
        before = cache_size()
        seen = []
        result = import_products(_feed(tmp_path, 50), batch_size=20, progress=lambda _: seen.append(cache_size()))
        after = cache_size()
    assert result.created == 50
    assert seen and set(seen) == {-16 * 1024}
    assert after == before == -64 * 1024


def test_sqlite_merge_leaves_json_feeds_to_the_lookup(sqlite_url, tmp_path, monkeypatch):
    # SQLite compares JSON as text: stored with other spacing, an unchanged value would count as
    # a change in a merge. A feed carrying a JSON column is compared in Python (``same``).
    pfdb.init_database(sqlite_url)
    merged = _count_merges(monkeypatch)
    database = pfdb.get_database()
    database.execute_sql(
        "INSERT INTO products (created_at, updated_at, sku, name, currency, inventory_quantity, status, "
        """shopify_sync_status, attributes) VALUES ('2026-01-01 00:00:00', '2026-01-01 00:00:00', 'J-1', 'J', """
        """'USD', 0, 'draft', 'pending', '{"a":1}')"""
    )
    feed = write(tmp_path, "json.csv", 'sku,name,attributes\nJ-1,J,"{""a"": 1}"\nJ-2,K,"{""b"": 2}"\n')
    result = import_products(feed)
    assert (result.created, result.updated, result.unchanged, result.rejected) == (1, 0, 1, 0)
    assert merged == []


def test_postgresql_batches_commit_without_waiting_for_the_disk_only_when_they_are_the_transaction(
    postgres_url, tmp_path, monkeypatch
):
    # Each batch's own commit does not wait for its WAL flush (the Job's last commit does, for
    # all of them); a batch inside a caller's transaction (strict: one for the whole import)
    # leaves the setting alone, and nothing outlives the batch.
    from pfdb.feeds import upsert

    pfdb.init_database(postgres_url)
    database = pfdb.get_database()
    seen: list[str] = []
    original = upsert.PostgresWriter.merge

    def merge(self, rows):
        seen.append(database.execute_sql("SHOW synchronous_commit").fetchone()[0])
        return original(self, rows)

    monkeypatch.setattr(upsert.PostgresWriter, "merge", merge)
    with database.connection_context():
        assert import_products(_feed(tmp_path, 300), batch_size=100).created == 300
        after = database.execute_sql("SHOW synchronous_commit").fetchone()[0]
        assert seen == ["off"] * 3 and after == "on"
        seen.clear()
        others = write(tmp_path, "others.csv", "sku,name,price\n" + "".join(f"T-{i},T {i},1.00\n" for i in range(200)))
        assert import_products(others, batch_size=100, strict=True).created == 200
        assert seen == ["on"] * 2
        # With read replicas, this process's next reads wait for the primary's flushed WAL:
        # a batch's commit must be in it, so it waits for the flush as before.
        seen.clear()
        settings = database.pfdb_settings
        monkeypatch.setattr(
            database, "pfdb_settings", dataclasses.replace(settings, replica_urls=(settings.database_url,))
        )
        more = write(tmp_path, "more.csv", "sku,name,price\n" + "".join(f"U-{i},U {i},1.00\n" for i in range(200)))
        assert import_products(more, batch_size=100).created == 200
        assert seen == ["on"] * 2
