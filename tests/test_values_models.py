"""Issue 10 §5 at the model level: the number grammar, NaN in JSON and NUL in text are ValidationErrors.

The grammar (``pfdb.numbers``) is the one rule for both ``Product.validate()`` and the feed
cleaners; the parity test below holds them to the same answers and the same reasons.
"""

from __future__ import annotations

from decimal import Decimal

import pytest

from pfdb.errors import ValidationError
from pfdb.feeds.validation import Invalid, cleaner_for
from pfdb.models import Category, Product
from pfdb.models.catalog import MONEY, WEIGHT
from pfdb.numbers import DecimalGrammar, NumberError, parse_integer

# Each refused today by the grammar; each was accepted (or crashed) before.
REFUSED_PRICES = {
    "1e30": "without an exponent",
    "1e999999999": "without an exponent",
    "0E+1000000": "without an exponent",
    "1e2": "without an exponent",
    "1_000": "without '_'",
    "٣.٥٠": "digits 0-9",
    "+3": "without the '+'",
    "NaN": "is not a number",
    "Infinity": "is not a number",
    "-inf": "is not a number",
    "1,50": "decimal point",
    "12;50": "is not a number",
    "-": "is not a number",
    "1.005": "more than 2 decimal places",
    "-1": "must not be negative",
    "10000000000": "out of range (0 to 9999999999.99)",
}
ACCEPTED_PRICES = {
    "19.99": "19.99",
    " 7 ": "7.00",
    "0": "0.00",
    ".5": "0.50",
    "5.": "5.00",
    "19.990": "19.99",
    "-0": "0.00",
    "007.50": "7.50",
    "9999999999.99": "9999999999.99",
}


@pytest.mark.parametrize("text, reason", sorted(REFUSED_PRICES.items()))
def test_money_grammar_refuses_with_a_reason(text, reason):
    with pytest.raises(NumberError) as info:
        MONEY.parse(text)
    assert reason in str(info.value)


def test_money_grammar_accepts_plain_decimals_and_python_numbers():
    for text, value in ACCEPTED_PRICES.items():
        assert MONEY.parse(text) == Decimal(value) and str(MONEY.parse(text)) == value, text
    assert MONEY.parse(12.5) == Decimal("12.50") and MONEY.parse(19.99) == Decimal("19.99")
    assert MONEY.parse(Decimal("1E+2")) == Decimal("100.00")  # a Decimal object is a number, not text
    assert MONEY.parse(3) == Decimal("3.00") and MONEY.parse(None) is None and MONEY.parse("  ") is None
    for value in (Decimal("1e30"), Decimal("NaN"), float("nan"), float("inf"), 1e30, 10**400, True, [1]):
        with pytest.raises(NumberError):
            MONEY.parse(value)


def test_weights_round_and_whole_numbers_stay_whole():
    assert WEIGHT.parse("1.2345") == Decimal("1.235") and WEIGHT.parse("0.0005") == Decimal("0.001")
    with pytest.raises(NumberError, match="out of range"):
        WEIGHT.parse("9999999.9996")  # rounds up out of numeric(10, 3)
    assert parse_integer("12") == 12 and parse_integer("12.0") == 12 and parse_integer("-3") == -3
    for text in ("1e999999999", "1e2", "+3", "1_000", "٣", "1.5", "2147483648"):
        with pytest.raises(NumberError):
            parse_integer(text)
    negative = DecimalGrammar(5, 2, negative=True)
    assert negative.parse("-123.45") == Decimal("-123.45")
    with pytest.raises(NumberError, match=r"out of range \(-999.99 to 999.99\)"):
        negative.parse("-1000")


def test_huge_inputs_are_refused_without_building_huge_numbers():
    import time

    start = time.monotonic()
    for text in ("9" * 1_000_000, "0." + "1" * 1_000_000, "1e999999999"):
        with pytest.raises(NumberError):
            MONEY.parse(text)
    with pytest.raises(NumberError):
        parse_integer("1e999999999")  # int(Decimal("1e999999999")) would run for hours
    assert time.monotonic() - start < 2


def test_grammar_matches_the_columns():
    for name in ("price", "compare_at_price"):
        field = Product._meta.fields[name]
        assert (MONEY.digits, MONEY.places) == (field.max_digits, field.decimal_places)
    assert (WEIGHT.digits, WEIGHT.places) == (Product.weight.max_digits, Product.weight.decimal_places)


# -- the model and the feed give the same answers, with the same reasons ------------------------
PARITY = {
    "price": [*REFUSED_PRICES, *ACCEPTED_PRICES, 12.5, 19.999, Decimal("1e30"), float("nan"), True],
    "compare_at_price": ["1e30", "24.90", "+1"],
    "weight": ["1.5", "1.2345", "-2", "abc", "1e3", "1_0", "٣", "+3", "NaN", "9999999.9996", "10000000", 0.25],
    "inventory_quantity": ["12", "12.0", "-4", "1.5", "1e2", "1e999999999", "+3", "1_000", "2147483648", "NaN"],
    "attributes": [{"a": 1}, {"a": float("nan")}, {"a": [1, float("inf")]}, {"a": {"b": float("-inf")}}],
    "name": ["Shirt", "Sh\x00irt"],
    "description": ["<p>x</p>", "a\x00b"],
    "brand": ["Acme", "\x00"],
}


def _model(field, value):
    p = Product(**{"sku": "S-1", "name": "N", field: value})
    try:
        p.validate()
        from pfdb.models.base import refuse_nul

        refuse_nul(p)
    except ValidationError as exc:
        assert exc.field == field
        return ("refused", exc.message.split(": ", 1)[1])
    return ("ok", getattr(p, field))


def _feed(field, value):
    try:
        return ("ok", cleaner_for(field)(value))
    except Invalid as exc:
        return ("refused", str(exc))


@pytest.mark.parametrize("field", sorted(PARITY))
def test_feed_and_model_agree_value_and_reason(field):
    for value in PARITY[field]:
        assert _feed(field, value) == _model(field, value), (field, value)


# -- Product.create on both backends ------------------------------------------------------------
@pytest.mark.parametrize("price", ["1e30", "1e999999999", "0E+1000000", "1_000", "٣.٥٠", "+3", "1e2", "NaN"])
def test_product_create_refuses_bad_prices_naming_the_field(db, price):
    with pytest.raises(ValidationError) as info:
        Product.create(sku="P-1", name="Shirt", price=price)
    assert info.value.field == "price" and str(info.value).startswith("price: ")
    with pytest.raises(ValidationError, match="compare_at_price"):
        Product.create(sku="P-1", name="Shirt", compare_at_price=price)
    assert Product.select().count() == 0


@pytest.mark.parametrize(
    "field, value",
    [("weight", "1e30"), ("weight", "+3"), ("inventory_quantity", "1e999999999"), ("inventory_quantity", "1_000")],
)
def test_product_create_refuses_bad_weights_and_quantities(db, field, value):
    with pytest.raises(ValidationError) as info:
        Product.create(sku="P-1", name="Shirt", **{field: value})
    assert info.value.field == field
    assert Product.select().count() == 0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_infinity_in_attributes_are_refused(db, value):
    with pytest.raises(ValidationError, match=r"attributes: holds (NaN|Infinity|-Infinity) at a, which is not JSON"):
        Product.create(sku="P-1", name="Shirt", attributes={"a": value})
    with pytest.raises(ValidationError, match=r"at tags\[1\]"):
        Product.create(sku="P-1", name="Shirt", attributes={"tags": ["x", value]})
    assert Product.select().count() == 0
    p = Product.create(sku="P-1", name="Shirt", attributes={"a": 1.5, "b": None})
    assert Product.get_by_id(p.id).attributes == {"a": 1.5, "b": None}


@pytest.mark.parametrize("field", ["sku", "name", "description", "brand", "manufacturer"])
def test_nul_in_any_text_field_is_a_validation_error_on_both_backends(db, field):
    values = {"sku": "P-1", "name": "Shirt", field: "abc\x00def"}
    with pytest.raises(ValidationError) as info:
        Product.create(**values)
    assert info.value.field == field and "NUL" in str(info.value)
    assert Product.select().count() == 0
    with pytest.raises(ValidationError, match="name: contains a NUL"):
        Category.create(name="Sh\x00irts")
    assert Category.select().count() == 0
