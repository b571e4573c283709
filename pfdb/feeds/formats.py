"""Feed formats: recognising one from its header and turning its rows into product records.

A format reads an opened feed (``reading.FeedInput``) and yields ``Record``s: the raw
values of the Product fields it carries (strings as written, or JSON values), keyed by
field name, plus the original row for the rejects file. Values are not validated here
(``validation`` does that, the same way for every format); a format only reports what
it alone can see, such as a Google price without a number or a Shopify row without a
Handle. The Product fields a feed may set come from the model (``FEED_FIELDS``), so a
field added to Product is importable and exported without touching this module.
"""

from __future__ import annotations

import configparser
import hashlib
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any, NamedTuple

from ..category_paths import join_names
from ..errors import FeedError, UsageError
from ..models import Product
from ..numbers import DecimalGrammar, NumberError
from ..text import ascii_slug, first_line
from .reading import FeedInput

CATEGORY = "category"
IMAGES = "images"
# Product fields that belong to pfdb itself or to the Shopify sync, never to a supplier feed.
NOT_FROM_FEEDS = frozenset(
    {"id", "created_at", "updated_at", "shopify_product_id", "shopify_synced_at", "shopify_sync_status"}
)
#: pfdb's own columns, in export order: the Product fields a feed may set (``category`` as a
#: path or slug), then ``images``.
PFDB_COLUMNS: tuple[str, ...] = tuple(f.name for f in Product._meta.sorted_fields if f.name not in NOT_FROM_FEEDS) + (
    IMAGES,
)
#: the Product fields among them (category and images are resolved separately)
FEED_FIELDS: tuple[str, ...] = tuple(c for c in PFDB_COLUMNS if c not in (CATEGORY, IMAGES))

FORMAT_NAMES = ("pfdb", "shopify", "woocommerce", "google", "google-retail")
_ALIASES = {
    "woo": "woocommerce",
    "csv": "pfdb",
    "jsonl": "pfdb",
    "tsv": "pfdb",
    "merchant": "google",
    "google-merchant": "google",
}


class CategoryRef(NamedTuple):
    """A category as a feed names it: ``path`` (``A > B``), or ``google`` (a taxonomy id or a path).

    A plain string in a record is pfdb's own form: a path if it has ``>``, else a slug.
    """

    kind: str
    value: str
    fallback: str | None = None  # google: the path to use when the id is unknown


class Record:
    """One product as a feed row gives it, before validation."""

    __slots__ = ("line", "values", "raw", "errors", "notes")

    def __init__(
        self, line: int, values: dict[str, Any], raw: Any, errors: list | None = None, notes: list | None = None
    ):
        self.line = line
        self.values = values
        self.raw = raw  # the original cells (CSV) or object (JSON) for the rejects file
        self.errors = errors  # [(column, message)] the format found
        self.notes = notes  # [(column, message)] worth reporting but not rejecting (a generated SKU)


class FeedFormat:
    """What every format offers the importer."""

    name = "pfdb"
    image_separator = "|"
    path_separator = ">"
    unit = "rows"  # what one record is, for the summary ("23 variants from 41 lines")

    def __init__(self) -> None:
        self.carried: tuple[str, ...] = ()  # PFDB_COLUMNS entries this feed sets
        self.columns: dict[str, str] = {}  # field -> the column it comes from, for messages
        self.ignored: tuple[str, ...] = ()  # columns of the file that map to nothing

    def column(self, field: str) -> str:
        return self.columns.get(field, field)

    def records(self, feed: FeedInput) -> Iterator[Record]:  # pragma: no cover - abstract
        raise NotImplementedError


def _norm(column: str) -> str:
    """A header cell as formats compare it: trimmed, lower case, without a ``g:`` prefix."""
    text = column.strip().lower()
    return text[2:] if text.startswith("g:") else text


def _index(header: list[str]) -> dict[str, int]:
    index: dict[str, int] = {}
    for i, name in enumerate(header):
        index.setdefault(_norm(name), i)
    return index


def _length_error(cells: list[str], width: int) -> list | None:
    if len(cells) > width:
        return [
            (
                "-",
                f"the row has {len(cells)} cells but the header has {width}; "
                "is a cell with the delimiter in it missing its quotes?",
            )
        ]
    return None


# -- pfdb's own CSV and JSON Lines --------------------------------------------------------------
class PfdbFormat(FeedFormat):
    """Columns named as Product fields; ``category`` a path or slug; ``images`` ``|``-separated."""

    name = "pfdb"
    detected = False  # taken for pfdb by detection: the image cells are checked (guard_detected_pfdb)

    def __init__(self, feed: FeedInput):
        super().__init__()
        known = set(PFDB_COLUMNS)
        if feed.kind == "jsonl":
            # A later line may carry a field the first lacks: absent keys keep the stored values.
            self.carried = PFDB_COLUMNS
            self._unknown: set[str] = set()
            return
        self._pairs: list[tuple[str, int]] = []
        ignored = []
        for i, column in enumerate(feed.header):
            key = column.strip().lower()
            if key in known and key not in dict(self._pairs):
                self._pairs.append((key, i))
            else:
                ignored.append(column)
        if "sku" not in dict(self._pairs):
            raise FeedError(
                f"{feed.name} has no sku column (columns: {', '.join(feed.header)[:200]})",
                hint="pfdb feeds name their columns as Product fields; for another layout pass --format or --mapping",
            )
        self.carried = tuple(c for c in PFDB_COLUMNS if c in dict(self._pairs))
        self.ignored = tuple(ignored)

    @property
    def positions(self) -> dict[str, int] | None:
        """CSV: field -> cell index; records then hold the cells themselves (no dict per row)."""
        return dict(self._pairs) if hasattr(self, "_pairs") else None

    def records(self, feed: FeedInput) -> Iterator[Record]:
        if feed.kind == "jsonl":
            yield from self._json_records(feed)
            return
        width = len(feed.header)
        images = self.positions.get(IMAGES) if self.detected else None
        for line, cells in feed.csv_rows():
            if images is not None and images < len(cells) and cells[images].strip():  # the first images cell
                if comma_separated_images(cells[images]):  # before the first batch: nothing is imported
                    raise FeedError(
                        f"{feed.name} line {line}: the images cell holds comma-separated URLs, and "
                        "pfdb feeds separate them with |; not imported",
                        hint=_GUARD_HINT,
                    )
                images = None
            if len(cells) == width:
                yield Record(line, cells, cells)
            elif len(cells) > width:
                yield Record(line, cells, cells, _length_error(cells, width))
            else:  # a short row (trailing empty cells trimmed by an editor)
                yield Record(line, cells + [""] * (width - len(cells)), cells)

    def _json_records(self, feed: FeedInput) -> Iterator[Record]:
        known = set(PFDB_COLUMNS)
        for line, obj in feed.json_rows():
            if not isinstance(obj, dict):
                yield Record(line, {}, obj, [("-", "the line is not a JSON object")])
                continue
            values = {key: value for key, value in obj.items() if key in known}
            if len(values) != len(obj):
                self._unknown.update(k for k in obj if k not in known)
                self.ignored = tuple(sorted(self._unknown))
            yield Record(line, values, obj)


# A weight as a feed writes it, before conversion to kg (``WEIGHT`` then checks the result):
# the number grammar with room to spare, so a 30-digit weight is refused instead of overflowing.
_MEASURE = DecimalGrammar(20, 8, negative=True, rounding=True)


# -- Shopify product CSV ------------------------------------------------------------------------
_SHOPIFY_VARIANT_COLUMNS = ("variant sku", "variant price", "option1 value", "variant barcode")
_SHOPIFY_PER_ROW = re.compile(r"^(variant |option\d value$|image (src|position|alt text)$)")


def generated_sku(handle: str, options: list[str]) -> str:
    """A stable SKU for a Shopify variant without one: the handle and its option values.

    ``classic-varsity-top`` + ``["Medium"]`` -> ``classic-varsity-top-medium``. Too long
    for the column, it keeps a readable head and a hash of the whole. Built with ``ascii_slug``,
    not the transliterating ``slugify``: a SKU is an identity, and the same export must find
    the same SKUs it was first imported with.
    """
    parts = [ascii_slug(handle) or handle.strip()]
    for value in options:
        parts.append(ascii_slug(value) or hashlib.sha1(value.encode("utf-8")).hexdigest()[:8])
    sku = "-".join(parts)
    limit = Product.sku.max_length
    if len(sku) > limit:
        digest = hashlib.sha1(sku.encode("utf-8")).hexdigest()[:12]
        sku = f"{sku[: limit - 13].rstrip('-')}-{digest}"
    return sku


class ShopifyFormat(FeedFormat):
    """Shopify's product CSV: one row per variant and image; continuation rows have no Title.

    Every variant becomes one pfdb product (name ``Title - Option / Option``); the
    product's images go to each of its variants, the variant's own image first.
    """

    name = "shopify"
    unit = "variants"

    def __init__(self, feed: FeedInput):
        super().__init__()
        if feed.kind != "csv":
            raise FeedError(f"{feed.name}: a Shopify feed is a CSV file")
        self._ix = ix = _index(feed.header)
        if "handle" not in ix:
            raise FeedError(f"{feed.name} has no Handle column", hint="is this a Shopify product export?")
        self.header = feed.header
        self.columns = {
            "sku": "Variant SKU",
            "name": "Title",
            "description": "Body (HTML)",
            "brand": "Vendor",
            "price": "Variant Price",
            "compare_at_price": "Variant Compare At Price",
            "gtin": "Variant Barcode",
            "inventory_quantity": "Variant Inventory Qty",
            "weight": "Variant Grams",
            "status": "Status",
            "manufacturer_part_number": "Google Shopping / MPN",
            "shopify_handle": "Handle",
            "category": "Type",
            "images": "Image Src",
            "attributes": "Tags",
        }
        sources = {
            "sku": "handle",
            "name": "title",
            "description": "body (html)",
            "brand": "vendor",
            "price": "variant price",
            "compare_at_price": "variant compare at price",
            "gtin": "variant barcode",
            "inventory_quantity": "variant inventory qty",
            "weight": "variant grams",
            "status": "status" if "status" in ix else "published",
            "manufacturer_part_number": "google shopping / mpn",
            "shopify_handle": "handle",
            "category": "product category" if "product category" in ix else "type",
            "images": "image src",
            "attributes": "tags" if "tags" in ix else "option1 name",
        }
        if "variant weight" in ix:  # some exports (apps, newer admin) give the weight in Variant Weight Unit
            sources["weight"] = "variant weight"
            self.columns["weight"] = "Variant Weight"
        self.carried = tuple(c for c in PFDB_COLUMNS if c in sources and sources[c] in ix)
        used = {
            *sources.values(),
            "status",
            "published",
            "product category",
            "type",
            "tags",
            "option1 name",
            "option2 name",
            "option3 name",
            "option1 value",
            "option2 value",
            "option3 value",
            "variant sku",
            "variant grams",
            "variant weight",
            "variant weight unit",
            "variant image",
        }
        self.ignored = tuple(h for h in feed.header if _norm(h) not in used)
        self._product_level = [i for name, i in ix.items() if not _SHOPIFY_PER_ROW.match(name)]

    def _cell(self, cells: list[str], column: str) -> str:
        i = self._ix.get(column)
        return cells[i].strip() if i is not None and i < len(cells) else ""

    def records(self, feed: FeedInput) -> Iterator[Record]:
        group: list[tuple[int, list[str]]] = []
        current = None
        self.lines_read = 0
        for line, cells in feed.csv_rows():
            self.lines_read += 1
            handle = self._cell(cells, "handle")
            if group and handle != current:
                yield from self._product(group)
                group = []
            current = handle
            group.append((line, cells))
        if group:
            yield from self._product(group)

    def _product(self, group: list[tuple[int, list[str]]]) -> Iterator[Record]:
        cell = self._cell
        _, first = group[0]
        handle = cell(first, "handle")
        title = cell(first, "title")
        images: list[str] = []
        for _, cells in group:
            src = cell(cells, "image src")
            if src and src not in images:
                images.append(src)
        option_names = [cell(first, f"option{n} name") for n in (1, 2, 3)]
        shared: dict[str, Any] = {"shopify_handle": handle}
        for field, column in (
            ("description", "body (html)"),
            ("brand", "vendor"),
            ("manufacturer_part_number", "google shopping / mpn"),
        ):
            if column in self._ix:
                shared[field] = cell(first, column)
        category = cell(first, "product category") or cell(first, "type")
        if category:
            shared["category"] = CategoryRef("path", category)
        if "status" in self._ix:
            shared["status"] = cell(first, "status").lower()
        elif "published" in self._ix and cell(first, "published"):
            shared["status"] = "active" if cell(first, "published").lower() == "true" else "draft"
        tags = [t.strip() for t in cell(first, "tags").split(",") if t.strip()]
        variants = [(line, cells) for line, cells in group if any(cell(cells, c) for c in _SHOPIFY_VARIANT_COLUMNS)]
        if not variants:
            variants = group[:1]
        for line, cells in variants:
            errors: list[tuple[str, str]] = []
            notes: list[tuple[str, str]] = []
            if not handle:
                errors.append(("Handle", "is empty; every Shopify row names its product's Handle"))
            options = [cell(cells, f"option{n} value") for n in (1, 2, 3)]
            chosen = [v for v in options if v and v != "Default Title"]
            values = dict(shared)
            sku = cell(cells, "variant sku")
            if not sku and handle:
                sku = generated_sku(handle, chosen)
                notes.append(("Variant SKU", f"no SKU: generated {sku!r} from the handle and options"))
            values["sku"] = sku
            if title:
                values["name"] = f"{title} - {' / '.join(chosen)}" if chosen else title
            for field, column in (
                ("price", "variant price"),
                ("compare_at_price", "variant compare at price"),
                ("gtin", "variant barcode"),
                ("inventory_quantity", "variant inventory qty"),
            ):
                values[field] = cell(cells, column)
            weight, grams = cell(cells, "variant weight"), cell(cells, "variant grams")
            if weight:
                # Variant Weight is in Variant Weight Unit. Variant Grams is always grams: the unit
                # there is only how Shopify shows it (a 1 oz item exports as 28 grams, unit oz).
                unit = cell(cells, "variant weight unit").lower() or "kg"
                try:
                    if unit not in _TO_KG:
                        raise NumberError(f"{unit!r} is not a weight unit (g, kg, lb, oz)")
                    values["weight"] = (_MEASURE.parse(weight) * _TO_KG[unit]).quantize(Decimal("0.001"))
                except NumberError as exc:
                    errors.append(("Variant Weight", str(exc)))
            elif grams:
                try:
                    amount = _MEASURE.parse(grams)
                    if amount > 0:
                        values["weight"] = (amount / 1000).quantize(Decimal("0.001"))
                except NumberError as exc:
                    errors.append(("Variant Grams", str(exc)))
            attributes: dict[str, Any] = {}
            opts = {
                name or f"Option{n}": v
                for n, (name, v) in enumerate(zip(option_names, options, strict=True), 1)
                if v and v != "Default Title"
            }
            if opts:
                attributes["options"] = opts
            if tags:
                attributes["tags"] = tags
            if attributes:
                values["attributes"] = attributes
            own = cell(cells, "variant image")
            values["images"] = [own, *(i for i in images if i != own)] if own else images
            yield Record(line, values, self._raw(first, cells), errors or None, notes or None)

    def _raw(self, first: list[str], cells: list[str]) -> list[str]:
        """The variant's row with its product's cells filled in: it can be fixed and re-fed alone."""
        if cells is first:
            return cells
        raw = list(cells) + [""] * (len(self.header) - len(cells))
        for i in self._product_level:
            if i < len(first) and not raw[i]:
                raw[i] = first[i]
        return raw


# -- Google Merchant Center feeds (tab- or comma-separated) -------------------------------------
_MONEY = re.compile(r"^\s*(?:([A-Za-z]{3})\s+)?([0-9]+(?:\.[0-9]+)?)\s*(?:([A-Za-z]{3}))?\s*$")
_WEIGHT = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*(kg|g|lb|lbs|oz)?\s*$", re.IGNORECASE)
_TO_KG = {
    "kg": Decimal(1),
    "g": Decimal("0.001"),
    "lb": Decimal("0.45359237"),
    "lbs": Decimal("0.45359237"),
    "oz": Decimal("0.028349523125"),
}
_GOOGLE_ATTRIBUTES = (
    "link",
    "availability",
    "condition",
    "item_group_id",
    "color",
    "size",
    "gender",
    "age_group",
    "material",
    "pattern",
)


def parse_google_price(text: str) -> tuple[str, str | None] | None:
    """``"15.00 USD"`` -> ``("15.00", "USD")``; ``None`` when it is not a price."""
    match = _MONEY.match(text)
    if not match or (match[1] and match[3]):
        return None
    return match[2], (match[1] or match[3] or "").upper() or None


class GoogleMerchantFormat(FeedFormat):
    """Google Merchant Center product data: ``id``, ``title``, ``price`` like ``15.00 USD``, …"""

    name = "google"
    image_separator = ","

    def __init__(self, feed: FeedInput):
        super().__init__()
        if feed.kind != "csv":
            raise FeedError(f"{feed.name}: a Google Merchant feed is a tab- or comma-separated file")
        self._ix = ix = _index(feed.header)
        if "id" not in ix:
            raise FeedError(f"{feed.name} has no id column", hint="is this a Google Merchant Center feed?")
        self._width = len(feed.header)
        self.columns = {
            "sku": "id",
            "name": "title",
            "description": "description",
            "price": "price",
            "compare_at_price": "sale_price",
            "currency": "price",
            "brand": "brand",
            "gtin": "gtin",
            "manufacturer_part_number": "mpn",
            "weight": "shipping_weight",
            "category": "google_product_category",
            "images": "image_link",
            "attributes": "link",
        }
        present = {
            "sku": "id",
            "name": "title",
            "description": "description",
            "brand": "brand",
            "gtin": "gtin",
            "manufacturer_part_number": "mpn",
            "weight": "shipping_weight",
            "images": "image_link",
        }
        carried = {f for f, c in present.items() if c in ix}
        if "price" in ix:
            carried |= {"price", "currency"} | ({"compare_at_price"} if "sale_price" in ix else set())
        if "google_product_category" in ix or "product_type" in ix:
            carried.add("category")
        if "additional_image_link" in ix:
            carried.add("images")
        if any(a in ix for a in _GOOGLE_ATTRIBUTES):
            carried.add("attributes")
        self.carried = tuple(c for c in PFDB_COLUMNS if c in carried)
        used = set(present.values()) | {
            "price",
            "sale_price",
            "google_product_category",
            "product_type",
            "additional_image_link",
            *_GOOGLE_ATTRIBUTES,
        }
        self.ignored = tuple(h for h in feed.header if _norm(h) not in used)

    def records(self, feed: FeedInput) -> Iterator[Record]:
        ix = self._ix
        simple = [
            (field, ix[column])
            for field, column in (
                ("sku", "id"),
                ("name", "title"),
                ("description", "description"),
                ("brand", "brand"),
                ("gtin", "gtin"),
                ("manufacturer_part_number", "mpn"),
            )
            if column in ix
        ]
        for line, cells in feed.csv_rows():

            def cell(column: str, cells: list[str] = cells) -> str:
                i = ix.get(column)
                return cells[i].strip() if i is not None and i < len(cells) else ""

            errors = _length_error(cells, self._width) or []
            values: dict[str, Any] = {field: cells[i] for field, i in simple if i < len(cells)}
            self._prices(cell, values, errors)
            gpc, product_type = cell("google_product_category"), cell("product_type")
            if gpc or product_type:
                values["category"] = CategoryRef("google", gpc or product_type, product_type or None)
            images = [u.strip() for u in [cell("image_link"), *cell("additional_image_link").split(",")] if u.strip()]
            if images:
                values["images"] = images
            weight = cell("shipping_weight")
            if weight:
                match = _WEIGHT.match(weight)
                if match:
                    try:
                        kg = _MEASURE.parse(match[1]) * _TO_KG[(match[2] or "kg").lower()]
                        values["weight"] = kg.quantize(Decimal("0.001"))
                    except NumberError as exc:
                        errors.append(("shipping_weight", str(exc)))
                else:
                    errors.append(("shipping_weight", f"{weight!r} is not a weight such as '0.5 kg'"))
            attributes = {a: cell(a) for a in _GOOGLE_ATTRIBUTES if cell(a)}
            if attributes:
                values["attributes"] = attributes
            yield Record(line, values, cells, errors or None)

    @staticmethod
    def _prices(cell, values: dict[str, Any], errors: list) -> None:
        parsed = {}
        for column in ("price", "sale_price"):
            text = cell(column)
            if not text:
                continue
            price = parse_google_price(text)
            if price is None:
                errors.append((column, f"{text!r} is not a price such as '15.00 USD'"))
            else:
                parsed[column] = price
        if not parsed:
            return
        currencies = {c for _, c in parsed.values() if c}
        if len(currencies) > 1:
            errors.append(("sale_price", f"is in {'/'.join(sorted(currencies))}: price and sale_price differ"))
        if currencies:
            values["currency"] = currencies.pop()
        if "sale_price" in parsed:
            values["price"] = parsed["sale_price"][0]
            if "price" in parsed:
                values["compare_at_price"] = parsed["price"][0]
        else:
            values["price"] = parsed["price"][0]


# -- WooCommerce product CSV -----------------------------------------------------------------------
_WOO_WEIGHT = re.compile(r"^weight \((kg|g|lbs?|oz)\)$")
_WOO_SKIPPED = ("variable", "grouped")
_WOO_INHERITED = ("category", "images", "brand", "description", "weight")


def _woo_list(text: str) -> list[str]:
    r"""A WooCommerce list cell (``A > B, C``; ``\,`` is a comma inside a value) -> its items."""
    items = re.split(r"(?<!\\),", text)
    return [item.replace("\\,", ",").strip() for item in items if item.strip()]


class WooCommerceFormat(FeedFormat):
    """WooCommerce's product CSV export (``Type``, ``SKU``, ``Regular price``, ``Sale price``, ``Parent``, …).

    Each simple, external and variation row is one pfdb product. A variable product is not:
    it has no price of its own (its variations do), so it is remembered and its variations,
    which name it by SKU (or ``id:N``) in ``Parent``, inherit its category, images, brand,
    description and weight where they have none. A grouped product only lists other products,
    so it is skipped too. The sale price is the price when set, the regular price then the
    compare-at price. ``Weight (lbs)`` / ``(kg)`` / ``(oz)`` / ``(g)`` gives the unit; pfdb
    stores kg. ``Published`` 1 is active, 0 and -1 (private, draft) are draft.
    """

    name = "woocommerce"
    image_separator = ","
    unit = "products"

    def __init__(self, feed: FeedInput):
        super().__init__()
        if feed.kind != "csv":
            raise FeedError(f"{feed.name}: a WooCommerce export is a CSV file")
        self._ix = ix = _index(feed.header)
        if "sku" not in ix or "type" not in ix:
            raise FeedError(f"{feed.name} has no SKU or Type column", hint="is this a WooCommerce product export?")
        self._width = len(feed.header)
        self._weight_column, self._weight_unit = next(
            ((h, m[1]) for h in feed.header if (m := _WOO_WEIGHT.match(_norm(h)))), (None, None)
        )
        self.columns = {
            "sku": "SKU",
            "name": "Name",
            "description": "Description",
            "price": "Sale price/Regular price",
            "compare_at_price": "Regular price",
            "brand": "Brands",
            "gtin": "GTIN, UPC, EAN, or ISBN",
            "inventory_quantity": "Stock",
            "weight": self._weight_column or "Weight",
            "status": "Published",
            "category": "Categories",
            "images": "Images",
            "attributes": "Attribute 1 value(s)",
        }
        sources = {
            "sku": ("sku", "id"),
            "name": ("name",),
            "description": ("description", "short description"),
            "price": ("sale price", "regular price"),
            "compare_at_price": ("regular price",),
            "brand": ("brands",),
            "gtin": ("gtin, upc, ean, or isbn",),
            "inventory_quantity": ("stock",),
            "weight": (_norm(self._weight_column),) if self._weight_column else (),
            "status": ("published",),
            "category": ("categories",),
            "images": ("images",),
            "attributes": ("tags", "attribute 1 name", "external url"),
        }
        self.carried = tuple(c for c in PFDB_COLUMNS if any(s in ix for s in sources.get(c, ())))
        used = {s for names in sources.values() for s in names} | {"type", "parent", "button text"}
        self.ignored = tuple(
            h
            for h in feed.header
            if _norm(h) not in used and not re.match(r"^attribute \d+ (name|value\(s\))$", _norm(h))
        )
        self._parents: dict[str, dict[str, Any]] = {}
        self.lines_read = 0
        self.skipped: dict[str, int] = {}

    def records(self, feed: FeedInput) -> Iterator[Record]:
        ix = self._ix
        for line, cells in feed.csv_rows():
            self.lines_read += 1

            def cell(column: str, cells: list[str] = cells) -> str:
                i = ix.get(column)
                return cells[i].strip() if i is not None and i < len(cells) else ""

            kinds = {k.strip().lower() for k in cell("type").split(",")}
            values, errors, notes = self._values(cell)
            if kinds & set(_WOO_SKIPPED):
                kind = "variable" if "variable" in kinds else "grouped"
                if kind == "variable":  # kept for its variations (a handful of fields per parent)
                    inherited = {k: values[k] for k in _WOO_INHERITED if values.get(k)}
                    for key in (cell("sku"), f"id:{cell('id')}"):
                        if key and key != "id:":
                            self._parents[key] = inherited
                self.skipped[kind] = self.skipped.get(kind, 0) + 1
                continue
            if "variation" in kinds:
                parent = cell("parent")
                inherited = self._parents.get(parent)
                if inherited is None and parent:
                    notes.append(
                        ("Parent", f"{parent!r} is not a variable product before this line; nothing inherited")
                    )
                for key, value in (inherited or {}).items():
                    if not values.get(key):
                        values[key] = value
                options = values.pop("_options", None)
                if options:
                    values.setdefault("attributes", {})["options"] = options
            else:
                options = values.pop("_options", None)
                if options:
                    values.setdefault("attributes", {}).update(options)
            if not values.get("sku"):
                errors.append(("SKU", "is empty and the row has no ID to name it by"))
            errors += _length_error(cells, self._width) or []
            yield Record(line, values, cells, errors or None, notes or None)

    def _values(self, cell) -> tuple[dict[str, Any], list, list]:
        errors: list[tuple[str, str]] = []
        notes: list[tuple[str, str]] = []
        values: dict[str, Any] = {
            "name": cell("name"),
            "description": cell("description") or cell("short description"),
            "gtin": cell("gtin, upc, ean, or isbn"),
            "inventory_quantity": cell("stock"),
        }
        sku = cell("sku")
        if not sku and cell("id"):
            sku = f"woo-{cell('id')}"
            notes.append(("SKU", f"no SKU: generated {sku!r} from the ID"))
        values["sku"] = sku
        sale, regular = cell("sale price"), cell("regular price")
        if sale:
            values["price"], values["compare_at_price"] = sale, regular
        else:
            values["price"] = regular
        brands = _woo_list(cell("brands"))
        if brands:
            values["brand"] = brands[0]
        published = cell("published")
        if published:
            values["status"] = "active" if published == "1" else "draft"
        categories = _woo_list(cell("categories"))
        if categories:
            values["category"] = CategoryRef("path", categories[0])
        images = [u.strip() for u in cell("images").split(",") if u.strip()]
        if images:
            values["images"] = images
        weight = cell(_norm(self._weight_column)) if self._weight_column else ""
        if weight:
            try:
                kg = _MEASURE.parse(weight) * _TO_KG[self._weight_unit]
                values["weight"] = kg.quantize(Decimal("0.001"))
            except NumberError as exc:
                errors.append((self._weight_column, str(exc)))
        attributes: dict[str, Any] = {}
        tags = _woo_list(cell("tags"))
        if tags:
            attributes["tags"] = tags
        if cell("external url"):
            attributes["external_url"] = cell("external url")
            if cell("button text"):
                attributes["button_text"] = cell("button text")
        if attributes:
            values["attributes"] = attributes
        options = {}
        n = 1
        while f"attribute {n} name" in self._ix:
            name, value = cell(f"attribute {n} name"), cell(f"attribute {n} value(s)")
            if name and value:
                options[name] = value
            n += 1
        if options:
            values["_options"] = options
        return values, errors, notes


# -- Google Cloud Retail product JSON (JSON Lines) -----------------------------------------------
_RETAIL_AVAILABILITY = ("IN_STOCK", "OUT_OF_STOCK", "PREORDER", "BACKORDER")


class GoogleRetailFormat(FeedFormat):
    """Google Cloud Retail ``Product`` objects, one per line (``id``, ``title``, ``priceInfo``, …)."""

    name = "google-retail"

    def __init__(self, feed: FeedInput):
        super().__init__()
        if feed.kind != "jsonl":
            raise FeedError(f"{feed.name}: a Google Retail feed is a JSON Lines file")
        self.carried = (
            "sku",
            "name",
            "description",
            "price",
            "compare_at_price",
            "currency",
            "brand",
            "gtin",
            "inventory_quantity",
            "category",
            "attributes",
            "images",
        )
        self.carried = tuple(c for c in PFDB_COLUMNS if c in self.carried)
        self.columns = {
            "sku": "id",
            "name": "title",
            "price": "priceInfo.price",
            "compare_at_price": "priceInfo.originalPrice",
            "currency": "priceInfo.currencyCode",
            "brand": "brands",
            "inventory_quantity": "availableQuantity",
            "category": "categories",
            "images": "images",
            "attributes": "attributes",
        }

    def records(self, feed: FeedInput) -> Iterator[Record]:
        for line, obj in feed.json_rows():
            if not isinstance(obj, dict):
                yield Record(line, {}, obj, [("-", "the line is not a JSON object")])
                continue
            errors = []
            price = obj.get("priceInfo") or {}
            values: dict[str, Any] = {
                "sku": obj.get("id"),
                "name": obj.get("title"),
                "description": obj.get("description"),
                "gtin": obj.get("gtin"),
                "inventory_quantity": obj.get("availableQuantity"),
                "price": price.get("price"),
                "compare_at_price": price.get("originalPrice"),
                "currency": price.get("currencyCode"),
            }
            brands = obj.get("brands") or []
            if brands:
                values["brand"] = brands[0]
            categories = obj.get("categories") or []
            if categories:
                values["category"] = CategoryRef("path", str(categories[0]))
            values["images"] = [i.get("uri") for i in obj.get("images") or [] if isinstance(i, dict) and i.get("uri")]
            availability = obj.get("availability")
            if availability is not None and availability not in _RETAIL_AVAILABILITY:
                errors.append(("availability", f"{availability!r} is not one of {', '.join(_RETAIL_AVAILABILITY)}"))
            values["attributes"] = self._attributes(obj) or None
            yield Record(line, values, obj, errors or None)

    @staticmethod
    def _attributes(obj: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key in ("availability", "uri"):
            if obj.get(key):
                out[key] = obj[key]
        colors = (obj.get("colorInfo") or {}).get("colors")
        if colors:
            out["colors"] = colors
        if obj.get("sizes"):
            out["sizes"] = obj["sizes"]
        attributes = obj.get("attributes") or {}
        items = (
            attributes.items()
            if isinstance(attributes, dict)
            else ((a.get("key"), a.get("value")) for a in attributes if isinstance(a, dict))
        )
        for key, value in items:
            if key and isinstance(value, dict):
                out[str(key)] = value.get("text") or value.get("numbers")
        return out


# -- a column-mapping file for any other layout -------------------------------------------------
def _dig(obj: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(obj, dict):
            obj = obj.get(part)
        elif isinstance(obj, list) and part.isdigit():
            obj = obj[int(part)] if int(part) < len(obj) else None
        else:
            return None
        if obj is None:
            return None
    return obj


class ColumnMapping:
    """A column-mapping file: which feed column holds which Product field, and how lists are split.

    JSON::

        {"columns": {"SKU": "sku", "Sale price": "price", "Regular price": "price", "Images": "images"},
         "images_separator": ",", "category_separator": ">", "defaults": {"currency": "EUR"}}

    or INI with ``[columns]`` (``SKU = sku``), ``[options]`` and ``[defaults]`` sections.
    Several columns may feed one field: the first non-empty one, in the file's order, wins.
    """

    def __init__(
        self,
        columns: dict[str, str],
        *,
        images_separator: str = "|",
        category_separator: str = ">",
        delimiter: str | None = None,
        defaults: dict[str, Any] | None = None,
        source: str = "mapping",
    ):
        self.source = source
        targets = set(PFDB_COLUMNS)
        for column, field in columns.items():
            if field not in targets:
                raise FeedError(
                    f"{source}: column {column!r} maps to {field!r}, which is not a product field",
                    hint=f"fields: {', '.join(PFDB_COLUMNS)}",
                )
        for field in defaults or {}:
            if field not in targets:
                raise FeedError(f"{source}: default for {field!r}, which is not a product field")
        if "sku" not in columns.values():
            raise FeedError(f"{source}: no column maps to sku", hint='add e.g. "SKU": "sku" under "columns"')
        self.columns = dict(columns)
        self.images_separator = images_separator or "|"
        self.category_separator = category_separator or ">"
        self.delimiter = delimiter
        self.defaults = dict(defaults or {})

    @classmethod
    def load(cls, path: str | Path) -> ColumnMapping:
        """Read a ``.json`` or ``.ini`` mapping file (``FeedError`` naming what is wrong)."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise FeedError(f"cannot read the mapping file {path}: {exc.strerror}") from None
        if text.lstrip().startswith("{"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise FeedError(f"{path} line {exc.lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(data.get("columns"), dict):
                raise FeedError(f'{path}: needs a "columns" object of feed column -> product field')
            return cls(
                data["columns"],
                images_separator=data.get("images_separator", "|"),
                category_separator=data.get("category_separator", ">"),
                delimiter=data.get("delimiter"),
                defaults=data.get("defaults"),
                source=str(path),
            )
        parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
        parser.optionxform = str  # keep column names as written
        try:
            parser.read_string(text, source=str(path))
        except configparser.Error as exc:
            raise FeedError(f"{path}: not a valid INI mapping ({first_line(exc)})") from None
        if not parser.has_section("columns"):
            raise FeedError(f"{path}: needs a [columns] section of 'feed column = product field' lines")
        options = dict(parser["options"]) if parser.has_section("options") else {}
        delimiter = options.get("delimiter")
        if delimiter and delimiter.lower() in ("tab", "\\t"):
            delimiter = "\t"
        return cls(
            {k.strip(): v.strip() for k, v in parser["columns"].items()},
            images_separator=options.get("images_separator", "|"),
            category_separator=options.get("category_separator", ">"),
            delimiter=delimiter,
            defaults=dict(parser["defaults"]) if parser.has_section("defaults") else None,
            source=str(path),
        )


class MappingFormat(FeedFormat):
    """Any CSV or JSON Lines layout, through a ``ColumnMapping``; JSON sources may be dotted paths (``price.amount``)."""

    name = "mapping"

    def __init__(self, feed: FeedInput, mapping: ColumnMapping):
        super().__init__()
        self.mapping = mapping
        self.image_separator = mapping.images_separator
        self.path_separator = mapping.category_separator
        fields: dict[str, list[Any]] = {}
        if feed.kind == "csv":
            exact = {name.strip(): i for i, name in reversed(list(enumerate(feed.header)))}
            folded = {name.strip().lower(): i for i, name in reversed(list(enumerate(feed.header)))}
            missing = []
            for column, field in mapping.columns.items():
                i = exact.get(column.strip(), folded.get(column.strip().lower()))
                if i is None:
                    missing.append(column)
                else:
                    fields.setdefault(field, []).append(i)
            if missing:
                raise FeedError(
                    f"{mapping.source} names {', '.join(map(repr, missing))}, which {feed.name} does not have",
                    hint=f"its columns: {', '.join(feed.header)[:300]}",
                )
            used = {i for idx in fields.values() for i in idx}
            self.ignored = tuple(h for i, h in enumerate(feed.header) if i not in used)
            self._width = len(feed.header)
        else:
            for column, field in mapping.columns.items():
                fields.setdefault(field, []).append(column.split("."))
        self._sources = fields
        self.columns = {field: next(c for c, f in mapping.columns.items() if f == field) for field in fields}
        self.carried = tuple(c for c in PFDB_COLUMNS if c in fields or c in mapping.defaults)

    def _category(self, value: Any) -> Any:
        if self.path_separator == ">" or not isinstance(value, str):
            return value
        return CategoryRef("path", join_names(value.split(self.path_separator)))

    def records(self, feed: FeedInput) -> Iterator[Record]:
        defaults, sources = self.mapping.defaults, self._sources
        if feed.kind == "csv":
            for line, cells in feed.csv_rows():
                values: dict[str, Any] = {}
                for field, indexes in sources.items():
                    for i in indexes:
                        if i < len(cells) and cells[i].strip():
                            values[field] = cells[i]
                            break
                for field, value in defaults.items():
                    values.setdefault(field, value)
                if CATEGORY in values:
                    values[CATEGORY] = self._category(values[CATEGORY])
                yield Record(line, values, cells, _length_error(cells, self._width))
            return
        for line, obj in feed.json_rows():
            values = {}
            for field, paths in sources.items():
                for path in paths:
                    value = _dig(obj, path)
                    if value not in (None, "", []):
                        values[field] = value
                        break
            for field, value in defaults.items():
                values.setdefault(field, value)
            if CATEGORY in values:
                values[CATEGORY] = self._category(values[CATEGORY])
            yield Record(line, values, obj)


# -- detection ----------------------------------------------------------------------------------
def is_woocommerce(columns: set[str]) -> bool:
    """WooCommerce's export header: Type and SKU, with its price or Parent columns."""
    return {"type", "sku"} <= columns and bool(columns & {"regular price", "sale price", "parent"})


def detect_format(feed: FeedInput) -> str:
    """The format name a feed's header (or first JSON object) says it is, or ``FeedError``."""
    if feed.kind == "jsonl":
        keys = set(feed.first_object or {})
        if "sku" in keys:
            return "pfdb"
        if "priceInfo" in keys or {"id", "title"} <= keys:
            return "google-retail"
        raise FeedError(
            f"cannot tell the format of {feed.name} from its first object (keys: {', '.join(sorted(keys))[:200]})",
            hint="pfdb JSON Lines needs a sku key; for another layout pass --mapping FILE",
        )
    columns = {_norm(c) for c in feed.header}
    if "handle" in columns and any(c.startswith("variant ") for c in columns):
        return "shopify"
    if is_woocommerce(columns):
        return "woocommerce"
    if "sku" in columns:
        return "pfdb"
    if "id" in columns and "title" in columns and columns & {"price", "link", "image_link"}:
        return "google"
    raise FeedError(
        f"cannot tell the format of {feed.name} from its header ({', '.join(feed.header)[:200]})",
        hint="pass --format pfdb|shopify|woocommerce|google|google-retail, or --mapping FILE for another layout",
    )


_GUARD_HINT = (
    "if it is a pfdb feed, pass --format pfdb; for another layout, --format shopify|woocommerce|google "
    "or --mapping FILE (see examples/)"
)


def guard_detected_pfdb(feed: FeedInput, fmt: PfdbFormat) -> None:
    """Refuse a feed taken for pfdb's own format only because it has a ``sku`` column.

    Another shop's export with a SKU column imported as a pfdb feed loses its prices and
    most of its data while exiting 0. Asked for explicitly (``--format pfdb``), it imports.
    """
    if feed.kind == "jsonl":
        keys = list(feed.first_object or {})
        unknown = [k for k in keys if k not in PFDB_COLUMNS]
    else:
        keys, unknown = list(feed.header), list(fmt.ignored)
    # A pfdb feed without prices is common (stock or category updates); one whose prices sit in
    # a column pfdb does not know ("Regular price", "Variant Price") would be imported priceless.
    priced = [k for k in unknown if "price" in k.lower()]
    if "price" not in {k.strip().lower() for k in keys} and priced:
        raise FeedError(
            f"{feed.name} looks like a pfdb feed but has no price column (only {priced[0]!r}, which "
            "pfdb does not read); not imported",
            hint=_GUARD_HINT,
        )
    if len(unknown) * 2 > len(keys):
        raise FeedError(
            f"{feed.name} looks like a pfdb feed but {len(unknown)} of its {len(keys)} columns are not "
            f"pfdb's ({', '.join(unknown[:5])}…); not imported",
            hint=_GUARD_HINT,
        )


def comma_separated_images(cell: Any) -> bool:
    """An images cell holding URLs separated by commas (pfdb separates them with ``|``)."""
    return isinstance(cell, str) and "|" not in cell and len(re.findall(r"(?:^|,)\s*https?://", cell)) > 1


def make_format(
    feed: FeedInput, name: str | None = None, mapping: ColumnMapping | str | Path | None = None
) -> FeedFormat:
    """The format object for ``feed``: ``mapping`` wins, then ``name``, then detection."""
    if mapping is not None:
        return MappingFormat(feed, mapping if isinstance(mapping, ColumnMapping) else ColumnMapping.load(mapping))
    key = (name or "auto").strip().lower()
    key = _ALIASES.get(key, key)
    if key == "auto":
        key = detect_format(feed)
        if key == "pfdb":
            fmt = PfdbFormat(feed)
            guard_detected_pfdb(feed, fmt)
            fmt.detected = True
            return fmt
    if key not in FORMAT_NAMES:
        raise UsageError(f"unknown feed format {name!r} (--format)", hint=f"formats: auto, {', '.join(FORMAT_NAMES)}")
    return {
        "pfdb": PfdbFormat,
        "shopify": ShopifyFormat,
        "woocommerce": WooCommerceFormat,
        "google": GoogleMerchantFormat,
        "google-retail": GoogleRetailFormat,
    }[key](feed)
