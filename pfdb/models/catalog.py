"""The catalogue: a category tree kept as materialized paths, products, their images, category icons.

``Category.path`` holds the ids from the root, ``/1/5/23/``: a subtree is one indexed
prefix scan, and a move rewrites the subtree's paths in one UPDATE instead of walking it.
The path rules themselves live in ``pfdb.category_paths``.
"""

from __future__ import annotations

import hashlib
import re
from decimal import Decimal
from typing import Any

from .. import cache
from .._peewee import peewee as pw
from ..category_paths import JOIN, ROOT, child_path, path_ids, rehome_subtree
from ..category_paths import path_prefix as path_prefix  # the name this module has offered
from ..errors import DuplicateError, ValidationError
from ..rules import MONEY, PRODUCT_RULES, PRODUCT_STATUSES, RULE_ERRORS, currency_code
from ..rules import WEIGHT as WEIGHT  # MONEY, WEIGHT and gtin_is_valid live in pfdb.rules; the old names stay
from ..rules import gtin_is_valid as gtin_is_valid
from ..text import slugify
from .base import BaseModel, require_choice, require_text
from .fields import JSONField, PlacesDecimalField, UTCDateTimeField, json_problem

_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")

SYNC_STATUSES = ("pending", "synced", "failed")
ICON_STATUSES = ("pending", "generated", "failed")


def to_money(field: str, value: Any, *, required: bool = False) -> Decimal | None:
    """An exact, non-negative amount with at most two decimal places (``MONEY``), or ``ValidationError``."""
    try:
        amount = MONEY.parse(value)
    except RULE_ERRORS as exc:
        raise ValidationError(field, str(exc)) from None
    if amount is None and required:
        raise ValidationError(field, "is required")
    return amount


class Category(BaseModel):
    name = pw.CharField(max_length=255)
    slug = pw.CharField(max_length=255, unique=True)
    parent = pw.ForeignKeyField("self", null=True, backref="children", on_delete="RESTRICT")
    level = pw.IntegerField(default=0)
    path = pw.CharField(max_length=1000, default="", index=True)
    description = pw.TextField(null=True)
    sort_order = pw.IntegerField(default=0)
    is_active = pw.BooleanField(default=True)
    external_id = pw.CharField(max_length=100, null=True, unique=True)
    shopify_collection_id = pw.CharField(max_length=100, null=True)
    shopify_handle = pw.CharField(max_length=255, null=True)
    shopify_synced_at = UTCDateTimeField(null=True)

    repr_fields = ("id", "slug", "path")

    class Meta:
        table_name = "categories"

    def validate(self) -> None:
        self.name = require_text("name", self.name, 255)
        if not self.slug:
            self.slug = slugify(self.name)
        if not _SLUG.match(self.slug or "") or len(self.slug) > 255:
            raise ValidationError(
                "slug", f"{self.slug!r} is not a valid slug", hint="use lower-case letters, digits and single hyphens"
            )
        if self.external_id is not None:
            self.external_id = require_text("external_id", self.external_id, 100, allow_empty=True) or None

    def save(self, force_insert: bool = False, only: Any = None) -> int:
        self.validate()
        with self._meta.database.atomic():
            if self._pk is None or force_insert:
                self.path, self.level = self._placement(None)
                result = super().save(force_insert=force_insert, only=only)
                self.path = child_path(self.path, self.id)
                type(self).update(path=self.path).where(type(self).id == self.id).execute()
                return result
            if "parent" in self._dirty:
                self._move()
            return super().save(force_insert=force_insert, only=only)

    def _placement(self, own_path: str | None) -> tuple[str, int]:
        """Parent path and level for the current ``parent_id``; refuses a cycle."""
        if self.parent_id is None:
            return ROOT, 0
        cls = type(self)
        parent = cls.select(cls.path, cls.level).where(cls.id == self.parent_id).first()
        if parent is None:
            raise ValidationError("parent", f"category {self.parent_id} does not exist")
        if own_path and parent.path.startswith(own_path):
            raise ValidationError("parent", "a category cannot become its own ancestor")
        return parent.path, parent.level + 1

    def _move(self) -> None:
        """Re-home this category and rewrite its whole subtree in one UPDATE."""
        cls = type(self)
        old = cls.select(cls.path, cls.level).where(cls.id == self.id).get()
        parent_path, new_level = self._placement(old.path)
        new_path = child_path(parent_path, self.id)
        if new_path != old.path:
            rehome_subtree(cls, old.path, new_path, new_level - old.level)
        self.path, self.level = new_path, new_level

    # -- tree helpers -------------------------------------------------------------
    @property
    def ancestor_ids(self) -> list[int]:
        return path_ids(self.path)[:-1]

    def ancestors(self) -> list[Category]:
        """Root first, this category excluded; one query."""
        ids = self.ancestor_ids
        if not ids:
            return []
        cls = type(self)
        return list(cls.select().where(cls.id.in_(ids)).order_by(cls.level))

    def descendants(self, include_self: bool = False) -> pw.ModelSelect:
        """The whole subtree as one indexed prefix query, ordered by path."""
        cls = type(self)
        query = cls.select().where(path_prefix(cls.path, self.path))
        if not include_self:
            query = query.where(cls.id != self.id)
        return query.order_by(cls.path)

    def breadcrumb(self, separator: str = JOIN) -> str:
        """``"Apparel > Clothing > Shirts"``: the names from the root to this category."""
        return separator.join([c.name for c in self.ancestors()] + [self.name])

    @classmethod
    def by_slug(cls, slug: str) -> Category | None:
        """The category with ``slug``, or None; served by the Redis cache when there is one."""
        slug = str(slug).strip()
        return cache.lookup_row(cls, "slug", slug, lambda: cls.get_or_none(cls.slug == slug))

    @classmethod
    def roots(cls) -> pw.ModelSelect:
        return cls.select().where(cls.parent.is_null()).order_by(cls.sort_order, cls.name)

    def _translate_integrity_error(self, exc: pw.IntegrityError) -> Exception:
        # Migration 002's expression index: the drivers name it without a usable column.
        if "categories_parent_id_name" in str(exc) or "COALESCE(parent_id" in str(exc):
            error = DuplicateError("name", self.name, "Category")
            where = "at the root" if self.parent_id is None else f"under category {self.parent_id}"
            error.message = f"a Category named {self.name!r} already exists {where}"
            error.args = (error.message,)
            return error
        return super()._translate_integrity_error(exc)


class Product(BaseModel):
    sku = pw.CharField(max_length=100, unique=True)
    name = pw.CharField(max_length=500)
    description = pw.TextField(null=True)
    price = PlacesDecimalField(max_digits=12, decimal_places=2, null=True)
    compare_at_price = PlacesDecimalField(max_digits=12, decimal_places=2, null=True)
    currency = pw.CharField(max_length=3, default="USD")
    brand = pw.CharField(max_length=255, null=True)
    manufacturer = pw.CharField(max_length=255, null=True)
    manufacturer_part_number = pw.CharField(max_length=100, null=True)
    gtin = pw.CharField(max_length=14, null=True, index=True)
    weight = PlacesDecimalField(max_digits=10, decimal_places=3, null=True)
    inventory_quantity = pw.IntegerField(default=0)
    status = pw.CharField(max_length=20, default="draft")
    category = pw.ForeignKeyField(Category, null=True, backref="products", on_delete="SET NULL")
    shopify_product_id = pw.CharField(max_length=100, null=True)
    shopify_handle = pw.CharField(max_length=255, null=True)
    shopify_synced_at = UTCDateTimeField(null=True)
    shopify_sync_status = pw.CharField(max_length=20, default="pending")
    attributes = JSONField(null=True)

    repr_fields = ("id", "sku", "price")

    class Meta:
        table_name = "products"
        indexes = ((("category", "status"), False),)

    def validate(self) -> None:
        self.sku = require_text("sku", self.sku, 100)
        self.name = require_text("name", self.name, 500)
        self.currency = require_text("currency", self.currency, 3)
        try:
            self.currency = currency_code(self.currency)
        except RULE_ERRORS as exc:
            raise ValidationError("currency", str(exc)) from None
        for name, rule in PRODUCT_RULES.items():  # price, compare_at_price, weight, inventory_quantity, gtin
            value = getattr(self, name)
            if value is not None:
                try:
                    setattr(self, name, rule.check(value))
                except RULE_ERRORS as exc:
                    raise ValidationError(name, str(exc)) from None
        problem = json_problem(self.attributes)
        if problem:
            raise ValidationError("attributes", problem)
        for name in ("brand", "manufacturer", "shopify_handle"):
            setattr(self, name, require_text(name, getattr(self, name), 255, allow_empty=True))
        self.manufacturer_part_number = require_text(
            "manufacturer_part_number", self.manufacturer_part_number, 100, allow_empty=True
        )
        require_choice("status", self.status, PRODUCT_STATUSES)
        require_choice("shopify_sync_status", self.shopify_sync_status, SYNC_STATUSES)

    @classmethod
    def by_sku(cls, sku: str) -> Product | None:
        """The product with ``sku``, or None; served by the Redis cache when there is one."""
        sku = str(sku).strip()
        return cache.lookup_row(cls, "sku", sku, lambda: cls.get_or_none(cls.sku == sku))

    @classmethod
    def needing_sync(cls) -> pw.ModelSelect:
        """Products changed since their last Shopify sync (served by a partial index)."""
        return cls.select().where(cls.shopify_sync_status == "pending").order_by(cls.updated_at)


# Only unsynced products are ever looked up this way; the index stays small.
Product.add_index(
    pw.ModelIndex(
        Product,
        (Product.updated_at,),
        name="products_pending_sync",
        where=Product.shopify_sync_status == "pending",
    )
)


def image_hash(url_or_bytes: str | bytes) -> str:
    """sha256 of an image's bytes when known, else of its URL: the de-duplication key."""
    data = url_or_bytes if isinstance(url_or_bytes, bytes) else url_or_bytes.strip().encode("utf-8")
    return hashlib.sha256(data).hexdigest()


class ProductImage(BaseModel):
    product = pw.ForeignKeyField(Product, backref="images", on_delete="CASCADE")
    url = pw.CharField(max_length=2048, null=True)
    local_path = pw.CharField(max_length=1024, null=True)
    content_hash = pw.CharField(max_length=64)
    width = pw.IntegerField(null=True)
    height = pw.IntegerField(null=True)
    alt_text = pw.CharField(max_length=500, null=True)
    position = pw.IntegerField(default=0)
    is_primary = pw.BooleanField(default=False)

    repr_fields = ("id", "product_id", "position", "url")

    class Meta:
        table_name = "product_images"
        indexes = ((("product", "content_hash"), True),)

    def validate(self) -> None:
        self.url = require_text("url", self.url, 2048, allow_empty=True) or None
        self.local_path = require_text("local_path", self.local_path, 1024, allow_empty=True) or None
        if not self.url and not self.local_path:
            raise ValidationError("url", "an image needs a url or a local_path")
        if not self.content_hash:
            self.content_hash = image_hash(self.url or self.local_path)
        if not re.fullmatch(r"[0-9a-f]{64}", self.content_hash):
            raise ValidationError("content_hash", "must be a sha256 hex digest")
        for name in ("width", "height", "position"):
            value = getattr(self, name)
            if value is not None and int(value) < 0:
                raise ValidationError(name, "must not be negative")


class Icon(BaseModel):
    category = pw.ForeignKeyField(Category, backref="icons", on_delete="CASCADE")
    file_path = pw.CharField(max_length=1024, null=True)
    url = pw.CharField(max_length=2048, null=True)
    generation = JSONField(null=True)  # {"prompt": …, "style": …, "generator": …}
    status = pw.CharField(max_length=20, default="pending")
    shopify_sync_status = pw.CharField(max_length=20, default="pending")
    shopify_image_id = pw.CharField(max_length=100, null=True)
    synced_at = UTCDateTimeField(null=True)

    repr_fields = ("id", "category_id", "status")

    class Meta:
        table_name = "icons"

    def validate(self) -> None:
        require_choice("status", self.status, ICON_STATUSES)
        require_choice("shopify_sync_status", self.shopify_sync_status, SYNC_STATUSES)
        if self.generation is not None and not isinstance(self.generation, dict):
            raise ValidationError("generation", "must be a dict such as {'prompt': …, 'style': …}")
        problem = json_problem(self.generation)
        if problem:
            raise ValidationError("generation", problem)
