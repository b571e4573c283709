"""Honest counts and messages: the Job's counts match what was committed; no rejects, no rejects file;
the summary names what it counts."""

from __future__ import annotations

from pathlib import Path

import pytest
from feeds_samples import PFDB_CSV, SHOPIFY_CSV, write

from pfdb.feeds import import_products
from pfdb.models import Job, Product, SyncHistory

BATCH = 50
SHARED = Path("/work/shared/data")


def feed_text(n: int) -> str:
    return "sku,name,price\n" + "".join(f"C-{i:04d},Item {i},{i % 90 + 1}.50\n" for i in range(n))


def test_an_interrupt_right_after_a_commit_leaves_counts_that_match_the_database(db, tmp_path, monkeypatch):
    """The signal lands after the second batch's COMMIT returned, before the importer adds it up:
    the moment that made a Job say 46000 created while 48000 products were stored."""
    feed = write(tmp_path, "feed.csv", feed_text(4 * BATCH))
    database = db.obj
    real_commit = database.commit
    fired = []

    def commit_then_interrupt():
        real_commit()
        if not fired and Product.select().count() == 2 * BATCH:
            fired.append(True)
            raise KeyboardInterrupt

    monkeypatch.setattr(database, "commit", commit_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        import_products(feed, batch_size=BATCH)
    monkeypatch.undo()
    assert fired and Product.select().count() == 2 * BATCH
    job, sync = Job.get(), SyncHistory.get()
    assert job.status == "cancelled"
    assert f"({2 * BATCH} created, 0 updated in whole batches)" in job.error_message, job.error_message
    assert (sync.status, sync.created_count, sync.updated_count) == ("cancelled", 2 * BATCH, 0)
    result = import_products(feed, batch_size=BATCH)  # and a re-run finishes it
    assert (result.created, result.unchanged) == (2 * BATCH, 2 * BATCH)


def test_sync_history_counts_follow_each_batch(db, tmp_path):
    result = import_products(write(tmp_path, "feed.csv", feed_text(3 * BATCH + 7)), batch_size=BATCH)
    sync = SyncHistory.get()
    assert (sync.status, sync.processed_count, sync.created_count) == ("completed", result.rows, 3 * BATCH + 7)
    assert sync.error_details["unchanged"] == 0


def test_no_rejects_means_no_rejects_file_and_no_message(db, database_url, tmp_path, run_cli):
    rejects = tmp_path / "rejects.csv"
    rejects.write_text("sku,reject_line,reject_reason\nOLD,3,from another run\n", encoding="utf-8")
    feed = write(tmp_path, "feed.csv", PFDB_CSV)
    code, out, err = run_cli("--database-url", database_url, "import", str(feed), "--rejects", str(rejects))
    assert code == 0, err
    assert "rejected rows written" not in out and not rejects.exists()
    result = import_products(feed, rejects=rejects)
    assert result.rejects_file is None and not rejects.exists()
    bad = write(tmp_path, "bad.csv", "sku,name,price\nB-1,Bad,abc\n")
    code, out, err = run_cli("--database-url", database_url, "import", str(bad), "--rejects", str(rejects))
    assert code == 1 and f"rejected rows written to {rejects}" in out
    assert rejects.read_text(encoding="utf-8").splitlines()[1].startswith("B-1,Bad,abc,2,")


def test_an_unwritable_rejects_path_is_refused_before_anything_is_imported(db, tmp_path):
    from pfdb.errors import FeedError

    with pytest.raises(FeedError, match="cannot write the rejects file"):
        import_products(write(tmp_path, "feed.csv", PFDB_CSV), rejects=tmp_path / "missing" / "rejects.csv")
    assert Product.select().count() == 0


def test_the_shopify_summary_counts_variants_from_lines(db, database_url, tmp_path, run_cli):
    feed = write(tmp_path, "shopify.csv", SHOPIFY_CSV)
    code, out, err = run_cli("--database-url", database_url, "import", str(feed))
    assert code == 0, err
    assert "(shopify): 4 variants from 5 lines, 4 created" in out
    code, out, err = run_cli("--database-url", database_url, "import", str(write(tmp_path, "p.csv", PFDB_CSV)))
    assert "(pfdb): 3 rows, " in out  # one line, one product: no "from"


@pytest.mark.skipif(not (SHARED / "shopify-jewelery.csv").exists(), reason="the shared real files are not here")
def test_the_real_files_keep_their_counts(db):
    expected = {
        "shopify-jewelery.csv": ("shopify", 41, 23),
        "shopify-apparel.csv": ("shopify", 22, None),
        "shopify-home-and-garden.csv": ("shopify", 21, None),
        "google-retail-products.jsonl": ("google-retail", None, None),
    }
    for name, (fmt, lines, rows) in expected.items():
        result = import_products(SHARED / name)
        assert result.format == fmt and result.rejected == 0, (name, result.rejects[:3])
        assert result.created == result.rows and result.created > 0
        if lines:
            assert result.lines == lines
        if rows:
            assert result.rows == rows
