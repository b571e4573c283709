"""Validating feed values the way ``Product.validate()`` does, without building a model per row.

A model instance per row costs more than everything else an import does, so each field
gets a small cleaning function instead, chosen from the model's own metadata (type,
``max_length``, decimal places) plus the rules ``Product.validate()`` adds (money, GTIN,
currency, status), which both read from ``pfdb.rules``; the cleaners only add per-row fast
paths in front. tests/test_feeds_validation.py checks that both accept and refuse the
same values. A cleaner returns the Python value, ``None`` for "no value in this row"
(an empty cell never blanks a stored value), or raises ``Invalid``.

A pfdb CSV is cleaned a column at a time (``RowCleaner.clean_many``): a column cleaner
(``column_cleaner``) takes a whole column in a few C calls when every cell is an ordinary
value, and hands any other column to the per-value cleaner, which alone gives reasons.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from decimal import Decimal
from hashlib import sha256
from operator import itemgetter
from typing import Any

from .._peewee import peewee as pw
from ..models import Product, ProductImage
from ..models.fields import JSONField, json_problem
from ..numbers import DecimalGrammar, NumberError, parse_integer
from ..rules import (
    PRODUCT_RULES,
    PRODUCT_STATUSES,
    RULE_ERRORS,
    currency_code,
    gtin_is_valid,
    gtin_reason,
    gtins_valid,
    status_reason,
    truth,
)
from ..text import NUL_REASON
from .formats import CATEGORY, IMAGES, FeedFormat, Record
from .layout import RowLayout

#: The model's GTIN rule (``pfdb.rules``), under the name this module has always offered.
gtin_check = gtin_is_valid


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
        text = raw.strip() if raw.__class__ is str else _as_text(raw)
        if text is None:
            return None
        if raw.__class__ is not str:
            text = text.strip()
        if identifier and text[:1] == "'":
            text = text[1:].strip()  # '7350177880121: a spreadsheet kept the digits as text
        if not text:
            return None
        if max_length and len(text) > max_length:
            raise Invalid(f"is longer than {max_length} characters ({len(text)})")
        if "\x00" in text:
            raise Invalid(NUL_REASON)
        return text

    return clean


def verbatim_text(raw: Any) -> str | None:
    """Long text (descriptions) kept exactly as written, HTML and newlines included."""
    text = _as_text(raw)
    if text is None or not text.strip():
        return None
    if "\x00" in text:
        raise Invalid(NUL_REASON)
    return text


def number_cleaner(grammar: DecimalGrammar) -> Cleaner:
    """A column's numbers by ``grammar`` (``pfdb.numbers``, the model's own rule).

    Nearly every feed value matches ``grammar.fast`` (``19.99``), whose value is one
    ``Decimal`` and a quantize; anything else goes through the full grammar for its reason.
    """
    fast, exponent, parse = grammar.fast.fullmatch, grammar.exponent, grammar.parse

    def clean(raw: Any) -> Decimal | None:
        if raw.__class__ is str:
            text = raw.strip()
            if fast(text):
                return Decimal(text).quantize(exponent)
        try:
            return parse(raw)
        except NumberError as exc:
            raise Invalid(str(exc)) from None

    return clean


def decimal_cleaner(field: pw.DecimalField) -> Cleaner:
    """A non-negative number rounded to the column's decimal places (a column ``PRODUCT_RULES`` does not name)."""
    return number_cleaner(DecimalGrammar(field.max_digits, field.decimal_places, rounding=True))


def integer_cleaner(raw: Any) -> int | None:
    if raw.__class__ is str:
        text = raw.strip()
        if text.isdigit() and text.isascii() and len(text) < 10:  # "12": the common case, in range
            return int(text)
    try:
        return parse_integer(raw)
    except NumberError as exc:
        raise Invalid(str(exc)) from None


def boolean_cleaner(raw: Any) -> bool | None:
    if isinstance(raw, bool) or raw is None:
        return raw
    try:
        return truth(str(raw))
    except RULE_ERRORS:
        raise Invalid(f"{raw!r} is not true or false") from None


def _no_constant(name: str) -> Any:
    raise Invalid(f"holds {name}, which is not JSON; use null or a string instead")


def json_cleaner(raw: Any) -> dict | None:
    if raw is None or raw == "" or raw == {}:
        return None
    value = raw
    if isinstance(raw, str):
        if not raw.strip():
            return None
        try:
            value = json.loads(raw, parse_constant=_no_constant)  # NaN, Infinity: Python's, not JSON
        except json.JSONDecodeError as exc:
            raise Invalid(f"is not valid JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise Invalid('must be a JSON object such as {"color": "red"}')
    problem = json_problem(value)  # NaN (a JSON Lines reader takes it), a NUL (jsonb cannot keep it)
    if problem:
        raise Invalid(problem)
    return value or None


_plain_text = text_cleaner(None)
_identifier = text_cleaner(None, identifier=True)


def _memoised(clean: Cleaner) -> Cleaner:
    """For fields with a handful of distinct values (currency, status): look them up, don't re-parse."""
    cached = functools.lru_cache(maxsize=256)(clean)

    def lookup(raw: Any) -> Any:
        return cached(raw) if raw.__class__ is str else clean(raw)

    functools.update_wrapper(lookup, clean)
    lookup.cached = cached  # type: ignore[attr-defined]  # for a column of text cells (``column_cleaner``)
    return lookup


@_memoised
def currency_cleaner(raw: Any) -> str | None:
    text = _plain_text(raw)
    if text is None:
        return None
    try:
        return currency_code(text)
    except RULE_ERRORS as exc:
        raise Invalid(str(exc)) from None


def gtin_cleaner(raw: Any) -> str | None:
    code = _identifier(raw)
    if code is None:
        return None
    if not gtin_is_valid(code):
        raise Invalid(gtin_reason(code))
    return code


@_memoised
def status_cleaner(raw: Any) -> str | None:
    text = _plain_text(raw)
    if text is None:
        return None
    if text.lower() not in PRODUCT_STATUSES:
        raise Invalid(status_reason(text))
    return text.lower()


def cleaner_for(name: str) -> Cleaner:
    """The cleaner of a Product field: the rules of ``Product.validate()``, else by field type."""
    field = Product._meta.fields[name]
    rule = PRODUCT_RULES.get(name)
    if rule is not None and rule.grammar is not None:  # price, compare_at_price, weight: the model's grammar
        return number_cleaner(rule.grammar)
    special = {
        "sku": text_cleaner(field.max_length if isinstance(field, pw.CharField) else None, identifier=True),
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


# -- a column at a time -------------------------------------------------------------------------
#: What cleans a whole column of text cells (a pfdb CSV's) into the driver's form, or returns
#: ``None`` when a cell needs the per-value cleaner (a value to refuse, or just an unusual one).
ColumnCleaner = Callable[[list[str]], list[Any] | None]


def _all_match(item: str) -> Callable[[list[str]], bool]:
    """Whether every cell of a column is empty or matches ``item`` (a regex matching no newline).

    One match over the cells joined by newlines runs in C; a cell holding a newline itself
    shows up as one newline too many, and fails the check.
    """
    column = re.compile(f"(?:{item})?(?:\n(?:{item})?)*")

    def check(cells: list[str]) -> bool:
        text = "\n".join(cells)
        return column.fullmatch(text) is not None and text.count("\n") == len(cells) - 1

    return check


def _converted(make: ColumnCleaner, convert: Callable[[Any], Any] | None) -> ColumnCleaner:
    if convert is None:
        return make

    def column(cells: list[str]) -> list[Any] | None:
        values = make(cells)
        return None if values is None else [None if v is None else convert(v) for v in values]

    return column


def _text_column(max_length: int | None, *, identifier: bool = False) -> ColumnCleaner:
    """``text_cleaner`` for a column without a NUL, an over-long value, or (identifiers) an apostrophe."""

    def column(cells: list[str]) -> list[Any] | None:
        stripped = list(map(str.strip, cells))
        joined = "".join(stripped)
        if "\x00" in joined or (identifier and "'" in joined):
            return None
        if max_length and max(map(len, stripped), default=0) > max_length:
            return None
        return [text or None for text in stripped]

    return column


def _verbatim_column(cells: list[str]) -> list[Any] | None:
    """``verbatim_text`` for a column without a NUL (``isspace`` is ``not strip()`` of a non-empty text)."""
    if "\x00" in "".join(cells):
        return None
    return [text if text and not text.isspace() else None for text in cells]


def _number_column(grammar: DecimalGrammar, convert: Callable[[Any], Any] | None) -> ColumnCleaner | None:
    """A column of numbers in their stored form already: ``19.99`` for money, no spaces, no leading zero.

    Such a text is ``str()`` of its cleaned Decimal, which is ``Decimal(text)`` as is (its
    places are the column's, so the quantize changes nothing): a driver taking decimals as
    text (SQLite's writer) gets the cells themselves, and no Decimal is made at all.
    """
    if grammar.whole_digits < 1:
        return None
    whole = f"(?:0|[1-9][0-9]{{0,{grammar.whole_digits - 1}}})"
    matches = _all_match(whole + (f"\\.[0-9]{{{grammar.places}}}" if grammar.places else ""))
    if convert is str:
        make: ColumnCleaner = lambda cells: [text or None for text in cells]  # noqa: E731
    else:
        make = _converted(lambda cells: [Decimal(text) if text else None for text in cells], convert)

    def column(cells: list[str]) -> list[Any] | None:
        return make(cells) if matches(cells) else None

    return column


_small_integers = _all_match("[0-9]{1,9}")  # integer_cleaner's fast path: in range whatever the digits


def _integer_column(cells: list[str]) -> list[Any] | None:
    return [int(text) if text else None for text in cells] if _small_integers(cells) else None


_gtin_lengths = _all_match("[0-9]{8}|[0-9]{12,14}")


def _gtin_column(cells: list[str]) -> list[Any] | None:
    if not _gtin_lengths(cells) or not gtins_valid([code for code in cells if code]):
        return None
    return [code or None for code in cells]


def _memoised_column(clean: Cleaner) -> ColumnCleaner:
    """A ``_memoised`` cleaner over a column: its C cache per cell (it cleans "" to ``None`` too)."""
    cached = clean.cached  # type: ignore[attr-defined]

    def column(cells: list[str]) -> list[Any] | None:
        try:
            return list(map(cached, cells))
        except Invalid:
            return None

    return column


def column_cleaner(name: str, convert: Callable[[Any], Any] | None) -> ColumnCleaner | None:
    """The column cleaner of a Product field, giving ``convert``'s form; ``None``: value by value only.

    Each one accepts only columns whose every cell its field's cleaner takes, with the same
    result; a column it leaves (``None``) is cleaned value by value, which finds the reasons.
    """
    field = Product._meta.fields[name]
    rule = PRODUCT_RULES.get(name)
    if rule is not None and rule.grammar is not None:
        return _number_column(rule.grammar, convert)
    if name in ("currency", "status"):
        return _converted(_memoised_column(cleaner_for(name)), convert)
    if name == "gtin":
        return _converted(_gtin_column, convert)
    if name in ("sku", "manufacturer_part_number"):
        return _converted(_text_column(getattr(field, "max_length", None), identifier=True), convert)
    if isinstance(field, JSONField):
        return None
    if isinstance(field, pw.CharField):
        return _converted(_text_column(field.max_length), convert)
    if isinstance(field, pw.TextField):
        return _converted(_verbatim_column, convert)
    if isinstance(field, pw.DecimalField):
        return _number_column(DecimalGrammar(field.max_digits, field.decimal_places, rounding=True), convert)
    if isinstance(field, pw.IntegerField):
        return _converted(_integer_column, convert)
    return None  # booleans: value by value


URL_MAX = ProductImage.url.max_length


def split_images(raw: Any, separator: str) -> list[tuple[str, str]] | None:
    """``"a|b|a"`` or ``["a", "b"]`` -> ``[(url, content_hash), …]`` in order, duplicates dropped."""
    if raw is None:
        return None
    if raw.__class__ is str:
        if "\x00" in raw:
            raise Invalid(f"an image URL {NUL_REASON}")
        items = raw.split(separator)
    elif isinstance(raw, list):
        items = raw
        for item in items:
            if not isinstance(item, str):
                raise Invalid(f"{json.dumps(item)[:40]} is not a URL")
            if "\x00" in item:
                raise Invalid(f"an image URL {NUL_REASON}")
    else:
        raise Invalid("must be a list of URLs")
    urls = dict.fromkeys(map(str.strip, items))  # in order, each once
    urls.pop("", None)
    if not urls:
        return None
    longest = max(map(len, urls))
    if longest > URL_MAX:
        raise Invalid(f"an image URL is longer than {URL_MAX} characters ({longest})")
    # image_hash(url), inlined: the URLs are stripped already, and this runs per image.
    return [(url, sha256(url.encode("utf-8")).hexdigest()) for url in urls]


class RowCleaner:
    """Cleans every value a record carries; collects all of a row's errors, not just the first.

    ``clean`` returns the values as a list in the order of ``layout`` (the import's
    ``RowLayout``), in the driver's form, ``None`` where the row gives nothing; the category
    is returned apart, its place in the list left for the importer's resolved id.
    """

    def __init__(
        self, fmt: FeedFormat, layout: RowLayout, converter: Callable[[pw.Field], Callable[[Any], Any] | None]
    ):
        """``converter(field)`` gives what turns a cleaned value into the driver's form (``Writer.converter``)."""
        self.format = fmt
        self.fields = list(layout.fields)
        self.has_category = layout.category is not None
        self.has_images = IMAGES in fmt.carried
        self.separator = fmt.image_separator
        positions = getattr(fmt, "positions", None)  # cells by index (pfdb CSV) instead of a dict
        self.positional = positions is not None

        def key(name: str) -> Any:
            return positions.get(name) if positions is not None else name

        # A field the cells do not hold (a --currency default) is left to the importer to fill.
        self.plan = [
            (i, key(f.name), fmt.column(f.name), cleaner_for(f.name), converter(f))
            for i, f in enumerate(self.fields)
            if f.name != CATEGORY and (positions is None or f.name in positions)
        ]
        # Positional cells: the column cleaners ``clean_many`` tries first, and what takes the columns out.
        self.columns = [column_cleaner(self.fields[i].name, convert) for i, _, _, _, convert in self.plan]
        places = [key for _, key, *_ in self.plan]
        self._take = itemgetter(*places) if len(places) > 1 else None
        self.category_key = key(CATEGORY) if self.has_category else None
        self.images_key = key(IMAGES) if self.has_images else None
        self.width = layout.width

    def clean(self, record: Record) -> tuple[list[Any], Any, Any, list[tuple[str, str]] | None]:
        """(values, category value, images, errors or None)."""
        values = record.values
        get = values.__getitem__ if self.positional else values.get
        out: list[Any] = [None] * self.width
        errors = list(record.errors) if record.errors else None
        for i, key, column, clean, convert in self.plan:
            raw = get(key)
            if raw is None or raw == "":
                continue
            try:
                value = clean(raw)
            except Invalid as exc:
                errors = errors or []
                errors.append((column, str(exc)))
                continue
            if value is not None:
                out[i] = convert(value) if convert is not None else value
        category = images = None
        if self.has_category:
            category = get(self.category_key)
            if isinstance(category, str):
                category = category.strip() or None
                if category is not None and "\x00" in category:
                    errors = errors or []
                    errors.append((self.format.column(CATEGORY), NUL_REASON))
            elif isinstance(category, tuple) and any(isinstance(v, str) and "\x00" in v for v in category):
                errors = errors or []  # a CategoryRef (Shopify, Google): its path or id
                errors.append((self.format.column(CATEGORY), NUL_REASON))
        if self.has_images:
            try:
                images = split_images(get(self.images_key), self.separator)
            except Invalid as exc:
                errors = errors or []
                errors.append((self.format.column(IMAGES), str(exc)))
        return out, category, images, errors

    def clean_many(self, records: list[Record]) -> list[tuple[list[Any], Any, Any, list[tuple[str, str]] | None]]:
        """``[self.clean(r) for r in records]``, computed a column at a time when cells are positional.

        Row by row, most of the cost is the loop around the cleaners (a plan entry, a lookup,
        an empty check and a store per field); by column, each cleaner runs over its column
        in one comprehension. A column where a value is refused is cleaned again value by
        value, to collect the errors in ``clean``'s order (the row's fields, then category, images).
        """
        n = len(records)
        if not self.positional or n < 2:
            return [self.clean(r) for r in records]
        rows = [r.values for r in records]
        errors = [list(r.errors) if r.errors else None for r in records]
        columns: list[list[Any]] = [[None] * n for _ in range(self.width)]
        if self._take is not None:
            cells = list(zip(*map(self._take, rows), strict=True))
        else:
            cells = [[row[key] for row in rows] for _, key, *_ in self.plan]
        for (i, _, column, clean, convert), bulk, raw in zip(self.plan, self.columns, cells, strict=True):
            if bulk is not None:  # the whole column in a few C calls, when every cell is an ordinary one
                values = bulk(raw)
                if values is not None:
                    columns[i] = values
                    continue
            try:
                values = [clean(v) if v else None for v in raw]  # cells are text: "" is no value
            except Invalid:
                values = [None] * n
                for j, v in enumerate(raw):
                    if v:
                        try:
                            values[j] = clean(v)
                        except Invalid as exc:
                            errors[j] = (errors[j] or []) + [(column, str(exc))]
            if convert is not None:
                values = [None if v is None else convert(v) for v in values]
            columns[i] = values
        out = list(map(list, zip(*columns, strict=True)))
        categories = images = [None] * n
        if self.has_category:
            categories = [row[self.category_key].strip() or None for row in rows]
            if any(c is not None and "\x00" in c for c in categories):
                name = self.format.column(CATEGORY)
                for j, c in enumerate(categories):
                    if c is not None and "\x00" in c:
                        errors[j] = (errors[j] or []) + [(name, NUL_REASON)]
        if self.has_images:
            key, separator = self.images_key, self.separator
            try:
                images = [split_images(row[key], separator) for row in rows]
            except Invalid:
                images = [None] * n
                name = self.format.column(IMAGES)
                for j, row in enumerate(rows):
                    try:
                        images[j] = split_images(row[key], separator)
                    except Invalid as exc:
                        errors[j] = (errors[j] or []) + [(name, str(exc))]
        return list(zip(out, categories, images, errors, strict=True))
