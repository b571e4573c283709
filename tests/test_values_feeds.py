"""Issue 10 §5 in feeds, on both backends: one bad value rejects its row (line and reason), never the file.

Each bad input of the issue is imported as written, next to good rows that must still arrive.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
from decimal import Decimal

import pytest
from feeds_samples import product, write

from pfdb.feeds import import_products
from pfdb.feeds.reading import FIELD_SIZE_LIMIT, LINE_LIMIT, open_feed
from pfdb.models import Category, Product, ProductImage, SyncHistory
from pfdb.text import NUL_REASON


def rejects_by_line(result) -> dict[int, tuple[str, str]]:
    return {r.line: (r.column, r.message) for r in result.rejects}


# -- numbers ------------------------------------------------------------------------------------
BAD_PRICES = ["1e30", "1e999999999", "0E+1000000", "1_000", "٣.٥٠", "+3", "1e2", "NaN", "Infinity", "-inf"]


def test_bad_prices_reject_their_rows_and_the_rest_imports(db, tmp_path):
    lines = ["sku,name,price", "OK-1,First,19.99"]
    lines += [f"BAD-{i},Bad,{price}" for i, price in enumerate(BAD_PRICES)]
    lines += ["OK-2,Last,5"]
    result = import_products(write(tmp_path, "prices.csv", "\n".join(lines) + "\n"))
    assert (result.rows, result.created, result.rejected) == (len(BAD_PRICES) + 2, 2, len(BAD_PRICES))
    got = rejects_by_line(result)
    for i, price in enumerate(BAD_PRICES):
        column, message = got[i + 3]
        assert column == "price" and message.startswith(repr(price)), (price, message)
    assert "without an exponent" in got[3][1] and "without an exponent" in got[4][1]  # 1e30, 1e999999999
    assert "without '_'" in got[6][1] and "digits 0-9" in got[7][1] and "without the '+'" in got[8][1]
    assert got[10][1] == "'NaN' is not a number"
    assert (product("OK-1").price, product("OK-2").price) == (Decimal("19.99"), Decimal("5.00"))
    assert Product.select().count() == 2
    sync = SyncHistory.get_by_id(result.sync_id)
    assert (sync.status, sync.failed_count) == ("completed", len(BAD_PRICES))


def test_bad_weights_and_quantities_reject_their_rows(db, tmp_path):
    text = (
        "sku,name,weight,inventory_quantity\n"
        "W-1,Heavy,1e30,1\nW-2,Odd,+3,1\nQ-1,Many,1,1e999999999\nQ-2,Under,1,1_000\nOK,Fine,1.2345,12.0\n"
    )
    result = import_products(write(tmp_path, "weights.csv", text))
    assert (result.created, result.rejected) == (1, 4)
    got = rejects_by_line(result)
    assert [got[n][0] for n in (2, 3, 4, 5)] == ["weight", "weight", "inventory_quantity", "inventory_quantity"]
    ok = product("OK")
    assert (ok.weight, ok.inventory_quantity) == (Decimal("1.235"), 12)  # weights round to the column


def test_json_lines_numbers_and_nan_attributes(db, tmp_path):
    text = (
        "\n".join(
            [
                '{"sku": "J-1", "name": "Big", "price": 1e30}',
                '{"sku": "J-2", "name": "Inf", "price": 1e999999999}',  # json reads it as float("inf")
                '{"sku": "J-3", "name": "NaN attr", "attributes": {"a": NaN}}',
                '{"sku": "J-4", "name": "Inf attr", "attributes": {"a": [1, Infinity]}}',
                '{"sku": "J-5", "name": "Fine", "price": 12.5, "attributes": {"a": 1.5}}',
            ]
        )
        + "\n"
    )
    result = import_products(write(tmp_path, "feed.jsonl", text))
    assert (result.created, result.rejected) == (1, 4)
    got = rejects_by_line(result)
    assert got[1] == ("price", "1e+30 is out of range (0 to 9999999999.99)")
    assert got[2] == ("price", "inf is not a number")
    assert got[3] == ("attributes", "holds NaN at a, which is not JSON; use null or a string instead")
    assert got[4] == ("attributes", "holds Infinity at a[1], which is not JSON; use null or a string instead")
    assert product("J-5").attributes == {"a": 1.5} and product("J-5").price == Decimal("12.50")


def test_nan_in_a_csv_attributes_cell_is_rejected(db, tmp_path):
    text = 'sku,name,attributes\nA-1,NaN,"{""a"": NaN}"\nA-2,Inf,"{""a"": -Infinity}"\nA-3,Fine,"{""a"": 1}"\n'
    result = import_products(write(tmp_path, "attrs.csv", text))
    assert (result.created, result.rejected) == (1, 2)
    got = rejects_by_line(result)
    assert got[2] == ("attributes", "holds NaN, which is not JSON; use null or a string instead")
    assert got[3] == ("attributes", "holds -Infinity, which is not JSON; use null or a string instead")
    raw = Product.select(Product.attributes).where(Product.sku == "A-3").tuples()
    assert product("A-3").attributes == {"a": 1} and raw


# -- NUL characters -----------------------------------------------------------------------------
def test_nul_in_any_text_cell_rejects_the_row_on_both_backends(db, tmp_path):
    header = "sku,name,description,brand,gtin,currency,category,images,price"
    good = "OK-{n},Good,desc,Acme,,EUR,Shop > Shirts,https://img.example.com/{n}.jpg,1"
    bad = {
        "sku": "N\x00-1,Name,d,b,,EUR,C,,1",
        "name": "N-2,Na\x00me,d,b,,EUR,C,,1",
        "description": "N-3,Name,de\x00sc,b,,EUR,C,,1",
        "brand": "N-4,Name,d,\x00,,EUR,C,,1",
        "gtin": "N-5,Name,d,b,4006381333931\x00,EUR,C,,1",
        "currency": "N-6,Name,d,b,,EU\x00,C,,1",
        "category": "N-7,Name,d,b,,EUR,Shop > Sh\x00irts,,1",
        "images": "N-8,Name,d,b,,EUR,C,https://img.example.com/\x00.jpg,1",
    }
    text = "\n".join([header, good.format(n=1), *bad.values(), good.format(n=2)]) + "\n"
    result = import_products(write(tmp_path, "nul.csv", text))
    assert (result.rows, result.created, result.rejected) == (10, 2, 8)
    got = rejects_by_line(result)
    for line, column in enumerate(bad, start=3):
        assert got[line][0] == column, (column, got[line])
        assert NUL_REASON in got[line][1], got[line]
    assert got[3][1] == NUL_REASON and got[10][1] == f"an image URL {NUL_REASON}"
    assert sorted(p.sku for p in Product.select()) == ["OK-1", "OK-2"]
    assert sorted(c.name for c in Category.select()) == ["Shirts", "Shop"]  # no "Sh\x00irts"
    assert ProductImage.select().count() == 2


def test_nul_in_json_lines_text_rejects_the_row(db, tmp_path):
    text = (
        '{"sku": "J-1", "name": "a\\u0000b"}\n{"sku": "J-2", "name": "fine", "description": "x\\u0000"}\n'
        '{"sku": "J-3", "name": "ok", "attributes": {"k": "v\\u0000"}}\n'
    )
    result = import_products(write(tmp_path, "nul.jsonl", text))
    assert (result.created, result.rejected) == (0, 3)
    # JSON can escape a NUL, but PostgreSQL's jsonb cannot keep one: refused on both backends alike.
    assert rejects_by_line(result) == {
        1: ("name", NUL_REASON),
        2: ("description", NUL_REASON),
        3: ("attributes", "holds a NUL character (\\x00) at k, which PostgreSQL cannot store; remove it"),
    }


# -- a cell over the limit ----------------------------------------------------------------------
def test_a_cell_just_over_the_limit_rejects_its_row_with_line_and_limit(db, tmp_path):
    big = "x" * (FIELD_SIZE_LIMIT + 1)
    text = f'sku,name,description\nA,First,short\nB,Big,{big}\nC,Quoted,"{big}"\nD,Last,short\n'
    rejects = tmp_path / "rejects.csv"
    result = import_products(write(tmp_path, "big.csv", text), rejects=rejects)
    assert (result.rows, result.created, result.rejected) == (4, 2, 2)
    message = f"a cell is longer than {FIELD_SIZE_LIMIT:,} characters, the limit for one cell"
    assert rejects_by_line(result) == {3: ("-", message), 4: ("-", message)}
    assert sorted(p.sku for p in Product.select()) == ["A", "D"]
    rows = list(csv.reader(rejects.open(encoding="utf-8", newline="")))
    assert rows[1] == ["", "", "", "3", f"-: {message}"] and len(rows) == 3


def test_cells_up_to_the_limit_are_read_whole():
    cell = "y" * FIELD_SIZE_LIMIT
    with open_feed(io.StringIO(f'sku,description\nA,{cell}\nB,"{cell}"\n')) as feed:
        rows = [(line, cells[0], len(cells[1])) for line, cells in feed.csv_rows()]
        assert rows == [(2, "A", FIELD_SIZE_LIMIT), (3, "B", FIELD_SIZE_LIMIT)] and feed.broken == []


def test_an_over_long_line_is_dropped_in_pieces_and_reading_goes_on():
    long_line = "z" * (LINE_LIMIT + 1)
    text = f'sku,description\nA,one\nB,{long_line}\nC,"two\n{long_line}\nlines"\nD,"{long_line}\nend"\nE,last\n'
    with open_feed(io.StringIO(text)) as feed:
        assert [(line, cells[0]) for line, cells in feed.csv_rows()] == [(2, "A"), (9, "E")]
        broken = [(b.line, b.message) for b in feed.broken]
    limit = f"longer than {LINE_LIMIT:,} characters, the limit for one line"
    assert broken == [
        (3, f"the line is {limit}"),
        (4, f"line 5 of the row is {limit} (the row runs to line 6)"),  # a quote open across it
        (7, f"the line is {limit} (the row runs to line 8)"),
    ]
    with open_feed(io.StringIO('{"sku": "A"}\n{"sku": "' + long_line + '"}\n{"sku": "C"}\n')) as feed:
        assert [(line, obj["sku"]) for line, obj in feed.json_rows()] == [(1, "A"), (3, "C")]
        assert [(b.line, b.message) for b in feed.broken] == [(2, f"the line is {limit}")]


# -- an unterminated quote ----------------------------------------------------------------------
UNCLOSED = 'sku,name,price\nA,Apple,1\nB,"Banana,2\nC,Cherry,3\nD,Date,4\n'


def test_an_unterminated_quote_is_reported_at_the_line_it_opened(db, tmp_path):
    result = import_products(write(tmp_path, "unclosed.csv", UNCLOSED))
    assert (result.rows, result.created, result.rejected, result.ok) == (2, 1, 1, False)
    assert rejects_by_line(result) == {
        3: (
            "-",
            "the quote opened on line 3 is never closed, so the rest of the file "
            "(lines 3-5) was read as one cell; close it and import again",
        )
    }
    assert [p.sku for p in Product.select()] == ["A"]
    sync = SyncHistory.get_by_id(result.sync_id)
    assert sync.failed_count == 1 and sync.error_details["first_rejects"][0]["line"] == 3


def test_the_quote_may_open_on_a_later_line_of_the_row(tmp_path):
    text = 'sku,description,name\nA,"two\nlines",Apple\nB,"x\ny","Banana\nC,c,c\n'
    with open_feed(io.StringIO(text)) as feed:
        assert [(line, cells[0]) for line, cells in feed.csv_rows()] == [(2, "A")]
        assert [(b.line, b.message[:35]) for b in feed.broken] == [(4, "the quote opened on line 5 is never")]
        assert feed.broken[0].raw[:2] == ["B", "x\ny"]


@pytest.mark.parametrize("compressed", [False, True])
def test_cli_exits_1_for_an_unterminated_quote(db, database_url, tmp_path, run_cli, compressed):
    data = UNCLOSED.encode()
    path = tmp_path / "unclosed.csv"
    path.write_bytes(gzip.compress(data) if compressed else data)
    code, out, err = run_cli("--database-url", database_url, "import", str(path))
    assert code == 1
    assert "2 rows, 1 created, 0 updated, 0 unchanged, 1 rejected" in out
    assert "rejected line 3: -: the quote opened on line 3 is never closed" in err


def test_cli_exits_1_and_names_the_line_for_a_huge_price(db, database_url, tmp_path, run_cli):
    path = write(tmp_path, "feed.csv", "sku,name,price\nA,Apple,1e30\nB,Banana,2\n")
    code, out, err = run_cli("--database-url", database_url, "import", str(path), "--json")
    assert code == 1
    result = json.loads(out)
    assert (result["created"], result["rejected"]) == (1, 1)
    assert result["rejects"][0] == {
        "line": 2,
        "sku": "A",
        "column": "price",
        "message": "'1e30' is not a plain decimal number: write the digits out, without an exponent",
    }
    assert product("B").price == Decimal("2.00")


def test_weights_in_shopify_and_google_feeds_use_the_grammar(db, tmp_path):
    shopify = (
        "Handle,Title,Variant SKU,Variant Grams,Variant Price\n"
        "h1,T,S-1,1e999999999,1\nh2,T,S-2,1_000,1\nh3,T,S-3,250,1\n"
    )
    result = import_products(write(tmp_path, "shopify.csv", shopify))  # Overflow aborted the import before
    assert (result.format, result.created, result.rejected) == ("shopify", 1, 2)
    assert rejects_by_line(result)[2] == (
        "Variant Grams",
        "'1e999999999' is not a plain decimal number: write the digits out, without an exponent",
    )
    assert product("S-3").weight == Decimal("0.250")
    google = (
        "id\ttitle\tprice\tshipping_weight\n"
        f"G-1\tHeavy\t1.00 USD\t{'9' * 30} kg\nG-2\tPricey\t{'9' * 40} USD\t1 kg\nG-3\tFine\t2 USD\t1 lb\n"
    )
    result = import_products(write(tmp_path, "google.tsv", google))  # InvalidOperation aborted it before
    assert (result.format, result.created, result.rejected) == ("google", 1, 2)
    got = rejects_by_line(result)
    assert got[2][0] == "shipping_weight" and "out of range" in got[2][1]
    assert got[3][0] == "price" and "out of range (0 to 9999999999.99)" in got[3][1]
    assert product("G-3").weight == Decimal("0.454")


def test_an_errors_first_line_is_one_rule():
    from pfdb.text import first_line

    assert first_line(ValueError('relation "x" does not exist\nLINE 1: SELECT …\n        ^')) == (
        'relation "x" does not exist'
    )
    assert first_line(ValueError("  padded  \nmore")) == "padded"
    # An empty message is the class's name, never an IndexError (three callers used to raise one).
    assert first_line(KeyboardInterrupt()) == "KeyboardInterrupt" and first_line("") == ""
