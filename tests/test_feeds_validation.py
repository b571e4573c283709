"""Feed validation agrees with ``Product.validate()``; reading and de-duplication helpers. No database needed."""

from __future__ import annotations

import io
import random
from decimal import Decimal

import pytest

from pfdb.errors import ValidationError
from pfdb.feeds.formats import FEED_FIELDS, PFDB_COLUMNS, parse_google_price
from pfdb.feeds.importer import SeenKeys
from pfdb.feeds.reading import open_feed, sniff_delimiter
from pfdb.feeds.validation import Invalid, cleaner_for, gtin_check, split_images
from pfdb.models import Product, gtin_is_valid

CASES = {
    "sku": ["ABC-1", "  padded  ", "x" * 100, "x" * 101],
    "name": ["Shirt", "n" * 500, "n" * 501],
    "price": ["19.99", "0", "19.999", "-1", "abc", "1e3", "NaN", "9999999999.99", "10000000000", 12.5],
    "compare_at_price": ["5.5", "-0.01"],
    "currency": ["EUR", "usd", "EURO", "E1R"],
    "gtin": ["4006381333931", "4006381333932", "12345670", "123", "00012345600012"],
    "status": ["draft", "active", "archived", "deleted"],
    "brand": ["Acme", "b" * 255, "b" * 256],
    "manufacturer_part_number": ["K-100", "m" * 101],
    "weight": ["1.5", "-2", "abc"],
}


def _model_accepts(field: str, value) -> bool:
    p = Product(**{"sku": "S-1", "name": "N", field: value})
    try:
        p.validate()
    except ValidationError:
        return False
    return True


def _feed_accepts(field: str, value) -> bool:
    try:
        cleaner_for(field)(value)
    except Invalid:
        return False
    return True


@pytest.mark.parametrize("field", sorted(CASES))
def test_feed_validation_agrees_with_the_model(field):
    for value in CASES[field]:
        assert _feed_accepts(field, value) == _model_accepts(field, value), (field, value)


def test_cleaned_values_match_the_models_normal_form():
    assert cleaner_for("price")("19.9") == Decimal("19.90") == to_model("price", "19.9")
    assert cleaner_for("currency")("usd") == "USD" == to_model("currency", "usd")
    assert cleaner_for("gtin")("'4006381333931") == "4006381333931" == to_model("gtin", "'4006381333931")
    assert cleaner_for("sku")("'  ABC ") == "ABC"  # the apostrophe of a spreadsheet, then the spaces
    assert cleaner_for("name")("  ") is None  # empty: no value in this row
    assert cleaner_for("description")("  <p>x</p>\n") == "  <p>x</p>\n"  # long text is kept verbatim
    assert cleaner_for("inventory_quantity")("12.0") == 12
    with pytest.raises(Invalid):
        cleaner_for("inventory_quantity")("1.5")
    assert cleaner_for("attributes")('{"a": 1}') == {"a": 1}
    with pytest.raises(Invalid):
        cleaner_for("attributes")("[1, 2]")


def to_model(field, value):
    p = Product(**{"sku": "S-1", "name": "N", field: value})
    p.validate()
    return getattr(p, field)


def test_every_feed_field_has_a_cleaner_and_columns_follow_the_model():
    for name in FEED_FIELDS:
        assert callable(cleaner_for(name))
    assert PFDB_COLUMNS[0] == "sku" and PFDB_COLUMNS[-1] == "images" and "category" in PFDB_COLUMNS
    assert not {"id", "created_at", "updated_at", "shopify_sync_status"} & set(PFDB_COLUMNS)


def test_gtin_check_is_the_models_rule():
    rng = random.Random(7)
    for _ in range(20000):
        code = "".join(rng.choice("0123456789") for _ in range(rng.choice([7, 8, 12, 13, 14, 15])))
        assert gtin_check(code) == gtin_is_valid(code), code
    assert not gtin_check("4006381333931x") and not gtin_check("")


def test_one_table_of_rules_serves_the_model_and_the_feed():
    from pfdb import rules
    from pfdb.models import catalog

    # One object each, not copies kept equal by a test.
    assert gtin_check is gtin_is_valid is rules.gtin_is_valid
    assert catalog.MONEY is rules.MONEY and catalog.WEIGHT is rules.WEIGHT
    assert catalog.PRODUCT_STATUSES is rules.PRODUCT_STATUSES
    assert set(rules.PRODUCT_RULES) <= set(Product._meta.fields)


@pytest.mark.parametrize(
    "value, stored",
    [
        ("\u0664\u0660\u0660\u0666\u0663\u0668\u0661\u0663\u0663\u0663\u0669\u0663\u0661", None),  # Arabic-Indic
        ("' 4006381333931", "4006381333931"),  # the apostrophe, then spaces
        ("''4006381333931", None),  # one apostrophe is a spreadsheet's, two are a typo
    ],
)
def test_gtin_forms_the_model_and_the_feed_used_to_disagree_on(value, stored):
    # Before one rule: the model took Arabic-Indic digits and '' and refused "' 4006…"; the feed the reverse.
    assert _model_accepts("gtin", value) is (stored is not None) and _feed_accepts("gtin", value) is (
        stored is not None
    )
    if stored is not None:
        assert to_model("gtin", value) == stored == cleaner_for("gtin")(value)


@pytest.mark.parametrize("word", ["y", "Y", "n", "yes", "OFF", "1", "0"])
def test_settings_and_feeds_read_the_same_true_false_words(word):
    from pfdb.config import parse_bool
    from pfdb.feeds.validation import boolean_cleaner

    assert parse_bool("PFDB_DEBUG", word) is boolean_cleaner(word)
    assert boolean_cleaner("") is None and parse_bool("PFDB_DEBUG", "") is False  # blank: no value / unset
    with pytest.raises(Invalid):
        boolean_cleaner("banana")


def test_images_split_dedupe_and_hash():
    images = split_images(" https://a/1.jpg |https://a/2.jpg||https://a/1.jpg", "|")
    assert [u for u, _ in images] == ["https://a/1.jpg", "https://a/2.jpg"]
    from pfdb.models import image_hash

    assert images[0][1] == image_hash("https://a/1.jpg")
    assert split_images("https://a/é 1.jpg", "|")[0][1] == image_hash(" https://a/é 1.jpg")  # the model's key
    assert split_images("", "|") is None and split_images(["https://a/x.jpg"], "|")[0][0] == "https://a/x.jpg"
    with pytest.raises(Invalid, match="longer than 2048"):
        split_images("https://a/" + "x" * 2048, "|")


def test_seen_keys_is_an_exact_set():
    seen = SeenKeys()
    keys = [f"SKU-{i}" for i in range(50000)] + ["", "ø", "日本"]
    assert all(seen.add(k) for k in keys)
    assert not any(seen.add(k) for k in keys)
    assert seen.count == len(keys)


def test_google_prices_and_delimiters():
    assert parse_google_price("15.00 USD") == ("15.00", "USD")
    assert parse_google_price("EUR 3") == ("3", "EUR")
    assert parse_google_price("3") == ("3", None)
    assert parse_google_price("15,00 EUR") is None and parse_google_price("USD 1 EUR") is None
    assert sniff_delimiter("id\ttitle\tprice, with comma\n") == "\t"
    assert sniff_delimiter("a;b;c\n") == ";" and sniff_delimiter("single\n") == ","


def test_csv_line_numbers_count_physical_lines():
    text = 'sku,name\n\nA,"two\nlines"\r\nB,x\n'
    with open_feed(io.StringIO(text)) as feed:
        assert [(line, cells[0]) for line, cells in feed.csv_rows()] == [(3, "A"), (5, "B")]


class _Unpeekable(io.RawIOBase):
    """A binary stream with neither peek nor seek (a socket, a pipe object)."""

    def __init__(self, data: bytes):
        self._data = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        chunk = self._data.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_feeds_and_taxonomies_open_gzip_the_one_way(tmp_path):
    import gzip

    from pfdb.taxonomy import read_taxonomy

    taxonomy = gzip.compress("\ufeff1 - Apparel\n2 - Apparel > Shirts\n".encode())
    feed = gzip.compress(b"sku,name\nA-1,Shirt\n")
    # The taxonomy reader used to look for gzip only in streams that can peek.
    assert [n.names for n in read_taxonomy(_Unpeekable(taxonomy))] == [("Apparel",), ("Apparel", "Shirts")]
    with open_feed(_Unpeekable(feed)) as opened:
        assert opened.header == ["sku", "name"]
    (tmp_path / "tree.txt").write_bytes(taxonomy)  # by its bytes, whatever its name
    assert len(read_taxonomy(tmp_path / "tree.txt")) == 2
    (tmp_path / "feed.csv").write_bytes(feed)
    with open_feed(tmp_path / "feed.csv") as opened:
        assert opened.header == ["sku", "name"] and opened.size == len(feed)


def test_column_mapping_is_the_name_and_the_old_one_still_works(tmp_path):
    import pfdb.feeds
    from pfdb.feeds import ColumnMapping

    path = tmp_path / "map.json"
    path.write_text('{"columns": {"SKU": "sku", "Title": "name"}}')
    assert ColumnMapping.load(path).columns == {"SKU": "sku", "Title": "name"}
    assert "Mapping" not in pfdb.feeds.__all__ and "ColumnMapping" in pfdb.feeds.__all__
    with pytest.warns(DeprecationWarning, match="ColumnMapping"):
        from pfdb.feeds import Mapping
    assert Mapping is ColumnMapping


# Cells a column cleaner must leave to the per-value cleaner (or take with the same result).
_ODD_CELLS = [
    "",
    " ",
    "  19.99 ",
    "019.99",
    "19.9",
    "19.999",
    "7",
    "0",
    "0.00",
    "-1",
    "1e3",
    "9999999999.99",
    "10000000000.00",
    "12.0",
    "2147483648",
    "99999999999",
    "'4006381333931",
    "4006381333932",
    "4006381333931",
    "12345670",
    "00012345600012",
    "usd",
    "EURO",
    "Active",
    "deleted",
    "'ABC",
    "a\x00b",
    "two\nlines",
    "1.00\n2.00",
    "x" * 101,
    "n" * 501,
    "true",
    '{"a": 1}',
]
_ODD_IMAGES = [
    " https://a/1.jpg | https://a/2.jpg ",
    "https://a/1.jpg||https://a/1.jpg|",
    "|",
    " ",
    "https://a/é.jpg",
    "https://a/\x00.jpg",
    "https://a/" + "x" * 2048,
    "https://a/1.jpg|https://a/" + "y" * 2039,  # 2,049 characters: refused
    "https://a/" + "z" * 2038,  # 2,048: taken
]
_ORDINARY = {
    "sku": lambda i: f"SKU-{i}",
    "name": lambda i: f"Item {i}",
    "description": lambda i: f"<p>{i}</p>\n",
    "price": lambda i: f"{i}.{i % 100:02d}",
    "compare_at_price": lambda i: "" if i % 3 else f"{i + 1}.00",
    "currency": lambda i: "USD",
    "gtin": lambda i: ["4006381333931", "12345670", "00012345600012", ""][i % 4],
    "weight": lambda i: f"{i % 9}.{i % 1000:03d}",
    "inventory_quantity": lambda i: str(i % 50),
    "status": lambda i: "active",
}


@pytest.mark.parametrize("decimals_as", [None, str], ids=["decimals", "decimal-text"])
def test_cleaning_a_column_at_a_time_agrees_with_row_by_row(tmp_path, decimals_as):
    """``clean_many``'s column cleaners give what ``clean`` gives, rejects and their reasons included."""
    from pfdb._peewee import peewee as pw
    from pfdb.feeds.formats import make_format
    from pfdb.feeds.layout import RowLayout
    from pfdb.feeds.validation import RowCleaner

    columns = [*FEED_FIELDS, "category", "images"]
    rng = random.Random(18)
    lines = []
    for i in range(400):
        odd = rng.random() < 0.3  # most chunks hold one odd cell or more, some none
        row = {name: (_ORDINARY[name](i) if name in _ORDINARY else f"v{i}") for name in FEED_FIELDS}
        row["attributes"] = '{"k": 1}' if i % 2 else ""
        row["category"] = f"A > B{i % 3}"
        row["images"] = f"https://a/{i}.jpg|https://a/{i}b.jpg" if i % 5 else ""
        if odd:
            row[rng.choice(FEED_FIELDS)] = rng.choice(_ODD_CELLS)
        if rng.random() < 0.05:
            row["images"] = rng.choice(_ODD_IMAGES)
        lines.append(",".join('"' + row[c].replace('"', '""') + '"' for c in columns))
    path = tmp_path / "feed.csv"
    path.write_text(",".join(columns) + "\n" + "\n".join(lines) + "\n", encoding="utf-8")

    def converter(field):
        return decimals_as if isinstance(field, pw.DecimalField) else None

    with open_feed(str(path)) as feed:
        fmt = make_format(feed)
        records = list(fmt.records(feed))
    cleaner = RowCleaner(fmt, RowLayout.carrying(fmt.carried), converter)
    assert all(cleaner.columns[:-1])  # every column but attributes (JSON) has a column cleaner
    by_row = [cleaner.clean(r) for r in records]
    by_column = [row for i in range(0, len(records), 16) for row in cleaner.clean_many(records[i : i + 16])]
    assert repr(by_column) == repr(by_row)  # repr: Decimal('1.50') is not Decimal('1.5'), nor '1.50'
    assert sum(1 for *_, errors in by_row if errors) > 20  # the odd cells were refused in places


def test_a_whole_column_of_gtins_is_checked_as_one_by_one():
    from pfdb.rules import gtins_valid

    rng = random.Random(8)
    for _ in range(3000):
        codes = ["".join(rng.choice("0123456789") for _ in range(rng.choice((8, 12, 13, 14)))) for _ in range(20)]
        codes = [c[:-1] + next(d for d in "0123456789" if gtin_is_valid(c[:-1] + d)) for c in codes]  # all valid
        assert gtins_valid(codes)
        j = rng.randrange(len(codes))
        codes[j] = codes[j][:-1] + str((int(codes[j][-1]) + rng.randint(1, 9)) % 10)  # one wrong check digit
        assert not gtins_valid(codes)
    assert gtins_valid([]) and gtins_valid(["99999999999997"]) and not gtins_valid(["99999999999999"])
