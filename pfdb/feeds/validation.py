"""Validating feed values the way ``Product.validate()`` does, without building a model per row.

A model instance per row costs more than everything else an import does, so each field
gets a small cleaning function instead, chosen from the model's own metadata (type,
``max_length``, decimal places) plus the rules ``Product.validate()`` adds (money, GTIN,
currency, status). tests/test_feeds_validation.py checks that both accept and refuse the
same values. A cleaner returns the Python value, ``None`` for "no value in this row"
(an empty cell never blanks a stored value), or raises ``Invalid``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from .._peewee import peewee as pw
from ..errors import ValidationError
from ..models import Product, ProductImage, gtin_is_valid, image_hash, to_money
from ..models.catalog import PRODUCT_STATUSES
from ..models.fields import JSONField
from .formats import CATEGORY, FEED_FIELDS, IMAGES, FeedFormat, Record

_CURRENCY = re.compile(r"[A-Z]{3}")
_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}
INT_RANGE = (-(2**31), 2**31 - 1)  # IntegerField is a 32-bit integer on PostgreSQL


class Invalid(Exception):
    """One value a feed cannot import; the message completes "<column>: …"."""


Cleaner = Callable[[Any], Any]


def _as_text(raw: Any) -> str | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        return raw
    if isinstance(raw, (dict, list, bool)):
        raise Invalid(f"must be text, got {json.dumps(raw)[:40]}")
    return str(raw)


def text_cleaner(max_length: int | None, *, identifier: bool = False) -> Cleaner:
    """Trimmed text up to ``max_length``; identifiers also lose a spreadsheet's leading apostrophe."""

    def clean(raw: Any) -> str | None:
        text = _as_text(raw)
        if text is None:
            return None
        text = text.strip()
        if identifier and text[:1] == "'":
            text = text[1:].strip()  # '7350177880121: a spreadsheet kept the digits as text
        if not text:
            return None
        if max_length and len(text) > max_length:
            raise Invalid(f"is longer than {max_length} characters ({len(text)})")
        return text

    return clean


def verbatim_text(raw: Any) -> str | None:
    """Long text (descriptions) kept exactly as written, HTML and newlines included."""
    text = _as_text(raw)
    return text if text is not None and text.strip() else None


def money_cleaner(field: str) -> Cleaner:
    def clean(raw: Any) -> Decimal | None:
        if isinstance(raw, str):
            raw = raw.strip()
        if raw is None or raw == "":
            return None
        if isinstance(raw, bool):
            raise Invalid(f"{raw!r} is not a number")
        try:
            return to_money(field, raw)
        except ValidationError as exc:
            raise Invalid(exc.message.split(": ", 1)[1]) from None

    return clean


def decimal_cleaner(field: pw.DecimalField) -> Cleaner:
    """A non-negative number rounded to the column's decimal places (weights)."""
    exp = Decimal(1).scaleb(-field.decimal_places)
    limit = Decimal(10) ** (field.max_digits - field.decimal_places)

    def clean(raw: Any) -> Decimal | None:
        if isinstance(raw, bool):
            raise Invalid(f"{raw!r} is not a number")
        if isinstance(raw, float):
            raw = repr(raw)
        if isinstance(raw, str):
            raw = raw.strip()
            if not raw:
                return None
        if raw is None:
            return None
        try:
            value = Decimal(raw) if not isinstance(raw, Decimal) else raw
        except (InvalidOperation, ValueError, TypeError):
            raise Invalid(f"{raw!r} is not a number") from None
        if not value.is_finite():
            raise Invalid(f"{raw!r} is not a number")
        if value < 0:
            raise Invalid("must not be negative")
        value = value.quantize(exp, rounding=ROUND_HALF_UP)
        if value >= limit:
            raise Invalid(f"{value} is too large")
        return value

    return clean


def integer_cleaner(raw: Any) -> int | None:
    if isinstance(raw, bool):
        raise Invalid(f"{raw!r} is not a whole number")
    if isinstance(raw, int):
        value = raw
    elif isinstance(raw, float):
        if not raw.is_integer():
            raise Invalid(f"{raw!r} is not a whole number")
        value = int(raw)
    else:
        text = _as_text(raw)
        if text is None or not text.strip():
            return None
        text = text.strip()
        try:
            value = int(text)
        except ValueError:
            try:
                number = Decimal(text)
            except InvalidOperation:
                raise Invalid(f"{text!r} is not a whole number") from None
            if not number.is_finite() or number != number.to_integral_value():
                raise Invalid(f"{text!r} is not a whole number") from None
            value = int(number)
    if not INT_RANGE[0] <= value <= INT_RANGE[1]:
        raise Invalid(f"{value} is out of range")
    return value


def boolean_cleaner(raw: Any) -> bool | None:
    if isinstance(raw, bool) or raw is None:
        return raw
    text = str(raw).strip().lower()
    if not text:
        return None
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Invalid(f"{raw!r} is not true or false")


def json_cleaner(raw: Any) -> dict | None:
    if raw is None or raw == "" or raw == {}:
        return None
    value = raw
    if isinstance(raw, str):
        if not raw.strip():
            return None
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise Invalid(f"is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise Invalid("must be a JSON object such as {\"color\": \"red\"}")
    return value or None


def currency_cleaner(raw: Any) -> str | None:
    text = text_cleaner(None)(raw)
    if text is None:
        return None
    code = text.upper()
    if not _CURRENCY.fullmatch(code):
        raise Invalid(f"{text!r} is not a three-letter ISO 4217 code")
    return code


def gtin_cleaner(raw: Any) -> str | None:
    code = text_cleaner(None, identifier=True)(raw)
    if code is None:
        return None
    if not gtin_is_valid(code):
        raise Invalid(f"{code!r} is not a valid GTIN (8, 12, 13 or 14 digits with check digit)")
    return code


def status_cleaner(raw: Any) -> str | None:
    text = text_cleaner(None)(raw)
    if text is None:
        return None
    if text.lower() not in PRODUCT_STATUSES:
        raise Invalid(f"must be one of {', '.join(PRODUCT_STATUSES)}, got {text!r}")
    return text.lower()


def cleaner_for(name: str) -> Cleaner:
    """The cleaner of a Product field: the rules of ``Product.validate()``, else by field type."""
    field = Product._meta.fields[name]
    special = {
        "sku": text_cleaner(field.max_length if isinstance(field, pw.CharField) else None, identifier=True),
        "price": money_cleaner("price"),
        "compare_at_price": money_cleaner("compare_at_price"),
        "currency": currency_cleaner,
        "gtin": gtin_cleaner,
        "status": status_cleaner,
        "manufacturer_part_number": text_cleaner(getattr(field, "max_length", None), identifier=True),
    }
    if name in special:
        return special[name]
    if isinstance(field, JSONField):
        return json_cleaner
    if isinstance(field, pw.CharField):
        return text_cleaner(field.max_length)
    if isinstance(field, pw.TextField):
        return verbatim_text
    if isinstance(field, pw.DecimalField):
        return decimal_cleaner(field)
    if isinstance(field, pw.IntegerField):
        return integer_cleaner
    if isinstance(field, pw.BooleanField):
        return boolean_cleaner
    raise TypeError(f"no feed cleaner for Product.{name} ({type(field).__name__})")  # a new field type


URL_MAX = ProductImage.url.max_length


def split_images(raw: Any, separator: str) -> list[tuple[str, str]] | None:
    """``"a|b|a"`` or ``["a", "b"]`` -> ``[(url, content_hash), …]`` in order, duplicates dropped."""
    if raw is None:
        return None
    if isinstance(raw, str):
        items = raw.split(separator) if separator in raw else [raw]
    elif isinstance(raw, list):
        items = raw
    else:
        raise Invalid("must be a list of URLs")
    out: list[tuple[str, str]] = []
    seen = set()
    for item in items:
        if not isinstance(item, str):
            raise Invalid(f"{json.dumps(item)[:40]} is not a URL")
        url = item.strip()
        if not url or url in seen:
            continue
        if len(url) > URL_MAX:
            raise Invalid(f"an image URL is longer than {URL_MAX} characters ({len(url)})")
        seen.add(url)
        out.append((url, image_hash(url)))
    return out or None


class RowCleaner:
    """Cleans every value a record carries; collects all of a row's errors, not just the first."""

    def __init__(self, fmt: FeedFormat):
        self.format = fmt
        self.plan = [(name, fmt.column(name), cleaner_for(name)) for name in fmt.carried if name in FEED_FIELDS]
        self.has_category = CATEGORY in fmt.carried
        self.has_images = IMAGES in fmt.carried
        self.separator = fmt.image_separator

    def clean(self, record: Record) -> tuple[dict[str, Any], Any, Any, list[tuple[str, str]]]:
        """(field values present in the row, category value, images, errors)."""
        values = record.values
        out: dict[str, Any] = {}
        errors = list(record.errors) if record.errors else []
        for name, column, clean in self.plan:
            raw = values.get(name)
            if raw is None or raw == "":
                continue
            try:
                value = clean(raw)
            except Invalid as exc:
                errors.append((column, str(exc)))
                continue
            if value is not None:
                out[name] = value
        category = images = None
        if self.has_category:
            category = values.get(CATEGORY)
            if isinstance(category, str):
                category = category.strip() or None
        if self.has_images:
            try:
                images = split_images(values.get(IMAGES), self.separator)
            except Invalid as exc:
                errors.append((self.format.column(IMAGES), str(exc)))
        return out, category, images, errors
