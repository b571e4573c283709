"""Export on both backends: the round trip into an empty database, subtrees, changed-since, files and the CLI."""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import shutil

import pytest
from feeds_samples import PFDB_CSV, SHOPIFY_CSV, catalogue_state, write

import pfdb
from pfdb.errors import NotFoundError, UsageError
from pfdb.feeds import PFDB_COLUMNS, export_products, import_products
from pfdb.feeds.exporter import parse_since
from pfdb.models import Product

RICH = PFDB_CSV + (
    'P-4,"Tasse « café », 200 ml","<div class=""x"">Line 1\r\nLine 2 — ü</div>",7.00,,EUR,,,1,active,'
    "Vêtements > Chemises > Manches longues,https://img.example.com/p4.jpg\n"
)


@pytest.fixture
def other_url(backend, tmp_path, request):
    """A second fresh, migrated database of the same backend (the round trip's target)."""
    if backend == "sqlite":
        path = tmp_path / "other.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        return f"sqlite:///{path}"
    from conftest import pg_url

    server = request.getfixturevalue("pg_server")
    name = server.create(template=request.getfixturevalue("pg_template"))
    request.addfinalizer(lambda: (pfdb.close_database(), server.release(name)))
    return pg_url(name)


def _rich_catalogue(tmp_path):
    import_products(write(tmp_path, "rich.csv", RICH))
    import_products(write(tmp_path, "shopify.csv", SHOPIFY_CSV))
    extra = [{"sku": "J-1", "name": "Lampe ☀", "attributes": {"watt": 40, "tags": ["a", "b"]}, "weight": "1.25"}]
    import_products(write(tmp_path, "extra.jsonl", "".join(json.dumps(x) + "\n" for x in extra)))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip_into_an_empty_database(db, database_url, other_url, tmp_path, fmt):
    _rich_catalogue(tmp_path)
    expected = catalogue_state()
    out = tmp_path / f"export.{fmt}"
    result = export_products(out)
    assert (result.format, result.products) == (fmt, len(expected["products"]))
    assert result.images == sum(len(p[2]) for p in expected["products"].values())
    pfdb.init_database(other_url)
    back = import_products(out)
    assert (back.created, back.rejected) == (result.products, 0)
    assert catalogue_state() == expected
    again = import_products(out)  # and the export is itself an idempotent feed
    assert (again.created, again.updated, again.unchanged) == (0, 0, result.products)


def test_csv_export_columns_and_values(db, tmp_path):
    import_products(write(tmp_path, "rich.csv", RICH))
    buffer = io.StringIO()
    export_products(buffer)
    rows = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert tuple(rows[0]) == PFDB_COLUMNS
    shirt = next(r for r in rows if r["sku"] == "P-1")
    assert (shirt["price"], shirt["compare_at_price"], shirt["category"]) == ("29.90", "39.90", "Vêtements > Chemises")
    assert shirt["images"] == "https://img.example.com/p1-a.jpg|https://img.example.com/p1-b.jpg"
    mug = next(r for r in rows if r["sku"] == "P-4")
    assert mug["description"] == '<div class="x">Line 1\r\nLine 2 — ü</div>'
    assert mug["category"] == "Vêtements > Chemises > Manches longues"


def test_category_subtree_and_changed_since(db, tmp_path):
    import_products(write(tmp_path, "rich.csv", RICH))
    shirts = Product.get(Product.sku == "P-1").category
    buffer = io.StringIO()
    result = export_products(buffer, category=shirts.slug)
    assert result.category == shirts.slug
    assert sorted(r["sku"] for r in csv.DictReader(io.StringIO(buffer.getvalue()))) == ["P-1", "P-4"]
    by_path = export_products(io.StringIO(), category="Vêtements")
    assert by_path.products == 3  # P-1, P-2 and P-4 under the root
    with pytest.raises(NotFoundError):
        export_products(io.StringIO(), category="nope")
    old = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=10)
    Product.update(updated_at=old).where(Product.sku != "P-2").execute()
    recent = io.StringIO()
    assert export_products(recent, changed_since="2d").products == 1
    assert "P-2" in recent.getvalue()
    assert export_products(io.StringIO(), changed_since=(old - dt.timedelta(hours=1)).isoformat()).products == 4


def test_pages_gz_and_jsonl(db, tmp_path):
    import_products(write(tmp_path, "rich.csv", RICH))
    out = tmp_path / "export.jsonl.gz"
    seen = []
    result = export_products(out, page_size=1, progress=seen.append)
    assert (result.format, result.products) == ("jsonl", 4) and seen[-1] == 4
    lines = [json.loads(x) for x in gzip.decompress(out.read_bytes()).decode().splitlines()]
    assert [x["sku"] for x in lines] == ["P-1", "P-2", "P-3", "P-4"]  # id order, across pages
    assert lines[0]["images"] == ["https://img.example.com/p1-a.jpg", "https://img.example.com/p1-b.jpg"]
    assert lines[0]["price"] == "29.90" and lines[2]["category"] == "Accessoires"


def test_interrupted_export_leaves_no_file(db, tmp_path):
    import_products(write(tmp_path, "rich.csv", RICH))
    out = tmp_path / "export.csv"

    def boom(count):
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        export_products(out, progress=boom)
    assert list(tmp_path.glob("*export*")) == []


def test_parse_since():
    assert parse_since("2024-05-01").isoformat() == "2024-05-01T00:00:00+00:00"
    assert parse_since("2024-05-01T12:00:00+02:00").hour == 10
    assert parse_since("2024-05-01T12:00:00Z").hour == 12
    delta = dt.datetime.now(dt.timezone.utc) - parse_since("24h")
    assert dt.timedelta(hours=23) < delta < dt.timedelta(hours=25)
    with pytest.raises(UsageError):
        parse_since("yesterday")


def test_cli_export_to_stdout_and_file(db, database_url, tmp_path, run_cli):
    import_products(write(tmp_path, "rich.csv", RICH))
    code, out, err = run_cli("--database-url", database_url, "export")
    assert code == 0
    assert out.startswith("sku,name,") and "exported 4 products" in err  # the summary never mixes into the data
    target = tmp_path / "out.jsonl"
    code, out, err = run_cli("--database-url", database_url, "export", str(target), "--category", "vetements", "--json")
    assert code == 0 and json.loads(out)["products"] == 3
    assert len(target.read_text(encoding="utf-8").splitlines()) == 3
    code, out, err = run_cli("--database-url", database_url, "export", "--category", "missing")
    assert code == 1 and "category 'missing' does not exist" in err
    code, out, err = run_cli("--database-url", database_url, "export", "--changed-since", "soon")
    assert code == 2 and "is not a time" in err
