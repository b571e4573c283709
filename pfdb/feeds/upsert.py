"""The import fast path: statements built once from the models' metadata, rows handed straight to the driver.

peewee's ``insert_many`` builds its SQL value by value and spends most of an import
doing so; here each statement is written once per import from ``Product._meta`` and
``ProductImage._meta`` (table and column names, defaults, ``db_value`` conversions), and
every batch goes to the driver as plain tuples:

* SQLite: one prepared ``INSERT … ON CONFLICT (sku) DO UPDATE … WHERE (changed)`` through
  the raw ``sqlite3`` cursor's ``executemany``;
* PostgreSQL: ``COPY`` into a temporary table, then one ``INSERT … SELECT … ON CONFLICT
  (sku) DO UPDATE … WHERE (changed) RETURNING id, sku``.

The ``SET`` list holds only the columns the feed carries (plus ``updated_at`` and the
sync status), so a feed without descriptions never touches them; ``WHERE`` skips rows
that would not change (the importer only sends changed ones, this guards against a
concurrent writer). Everything runs on the caller's connection and transaction.
"""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from .._peewee import peewee as pw
from ..models import Product, ProductImage
from ..models.fields import utcnow


def _db_converter(field: pw.Field):
    """``field.db_value`` where it does more than peewee's base coercion, else ``None`` (value as is)."""
    return None if type(field).db_value is pw.Field.db_value else field.db_value


class Table:
    """A model's insertable columns, in one order, with their defaults and conversions."""

    def __init__(self, model: type[pw.Model]):
        self.model = model
        self.name = model._meta.table_name
        self.fields = [f for f in model._meta.sorted_fields if not f.primary_key]
        self.columns = [f.column_name for f in self.fields]
        self.position = {f.name: i for i, f in enumerate(self.fields)}
        self.convert = {f.name: _db_converter(f) for f in self.fields}
        self.pk = model._meta.primary_key.column_name

    def template(self, now: dt.datetime) -> list[Any]:
        """A row of defaults (callable ones called once), already in database form."""
        row = []
        for f in self.fields:
            value = f.default() if callable(f.default) else f.default
            if f.default is utcnow:
                value = now
            row.append(f.db_value(value) if value is not None else None)
        return row


PRODUCTS = Table(Product)
IMAGES = Table(ProductImage)
SKU = Product.sku.column_name
CATEGORY_ID = Product.category.column_name
#: what a changed product's sync status becomes: the model's default ("pending")
SYNC_PENDING = Product.shopify_sync_status.default


class Writer:
    """The statements of one import; subclasses talk to one driver."""

    param = "?"
    distinct = "IS NOT"

    def __init__(self, database: pw.Database, carried: Sequence[str]):
        """``carried``: Product field names the feed sets (``category`` for the category id)."""
        self.database = database
        q = database.quote
        self.q = lambda name: f"{q[0]}{name}{q[1]}"
        self.carried = [f for f in PRODUCTS.fields if f.name in carried]
        self.carried_columns = [f.column_name for f in self.carried]
        cols = ", ".join(self.q(c) for c in [PRODUCTS.pk, SKU, *self.carried_columns])
        self.select_existing = f"SELECT {cols} FROM {self.q(PRODUCTS.name)} WHERE {self.q(SKU)} "
        touched = [*self.carried_columns, Product.updated_at.column_name, Product.shopify_sync_status.column_name]
        self.set_clause = ", ".join(f"{self.q(c)} = excluded.{self.q(c)}" for c in touched)
        table = self.q(PRODUCTS.name)
        self.changed = " OR ".join(
            f"{table}.{self.q(c)} {self.distinct} excluded.{self.q(c)}" for c in self.carried_columns
        ) or "FALSE"
        self.insert_columns = ", ".join(self.q(c) for c in PRODUCTS.columns)
        image_cols = ", ".join(self.q(c) for c in (ProductImage.product.column_name, IMAGES.pk,
                                                    ProductImage.content_hash.column_name,
                                                    ProductImage.position.column_name,
                                                    ProductImage.is_primary.column_name))
        self.select_images = (f"SELECT {image_cols} FROM {self.q(IMAGES.name)} WHERE "
                              f"{self.q(ProductImage.url.column_name)} IS NOT NULL AND "
                              f"{self.q(ProductImage.product.column_name)} ")
        self.image_conflict = ", ".join(self.q(c) for c in (ProductImage.product.column_name,
                                                             ProductImage.content_hash.column_name))
        p = self.param
        self.update_image = (
            f"UPDATE {self.q(IMAGES.name)} SET {self.q(ProductImage.position.column_name)} = {p}, "
            f"{self.q(ProductImage.is_primary.column_name)} = {p}, {self.q(ProductImage.updated_at.column_name)} = {p} "
            f"WHERE {self.q(IMAGES.pk)} = {p}")
        self.delete_image = f"DELETE FROM {self.q(IMAGES.name)} WHERE {self.q(IMAGES.pk)} = {p}"
        self.touch = (
            f"UPDATE {table} SET {self.q(Product.updated_at.column_name)} = {p}, "
            f"{self.q(Product.shopify_sync_status.column_name)} = {p} WHERE {self.q(PRODUCTS.pk)} = {p}")

    def cursor(self):
        return self.database.cursor()

    # -- the interface the importer uses -------------------------------------------------------
    def start(self) -> None:
        """Once per import, on the import's connection."""

    def finish(self) -> None:
        """Once at the end (also after a failure, if the connection is still usable)."""

    def fetch_existing(self, skus: list[str]) -> dict[str, tuple]:
        """``sku -> (id, sku, *carried columns)`` for the SKUs already stored, raw driver values."""
        raise NotImplementedError

    def upsert(self, rows: list[list[Any]]) -> dict[str, int] | None:
        """Write full product rows (``PRODUCTS.columns`` order); may return ``sku -> id``."""
        raise NotImplementedError

    def ids_for(self, skus: list[str]) -> dict[str, int]:
        raise NotImplementedError

    def fetch_images(self, product_ids: list[int]) -> list[tuple]:
        """``(product_id, id, content_hash, position, is_primary)`` of the URL images of these products."""
        raise NotImplementedError

    def insert_images(self, rows: list[list[Any]]) -> None:
        raise NotImplementedError

    def update_images(self, rows: list[tuple]) -> None:
        """``(position, is_primary, updated_at, id)`` per image."""
        self.cursor().executemany(self.update_image, rows)

    def delete_images(self, ids: list[int]) -> None:
        self.cursor().executemany(self.delete_image, [(i,) for i in ids])

    def touch_products(self, ids: list[int], now: Any) -> None:
        """Mark products changed whose only change was their images."""
        self.cursor().executemany(self.touch, [(now, SYNC_PENDING, i) for i in ids])


class SqliteWriter(Writer):
    param = "?"
    distinct = "IS NOT"

    def __init__(self, database: pw.Database, carried: Sequence[str]):
        super().__init__(database, carried)
        values = ", ".join("?" for _ in PRODUCTS.columns)
        self.upsert_sql = (
            f"INSERT INTO {self.q(PRODUCTS.name)} ({self.insert_columns}) VALUES ({values}) "
            f"ON CONFLICT ({self.q(SKU)}) DO UPDATE SET {self.set_clause} WHERE {self.changed}"
        )
        image_values = ", ".join("?" for _ in IMAGES.columns)
        self.insert_images_sql = (
            f"INSERT INTO {self.q(IMAGES.name)} ({', '.join(self.q(c) for c in IMAGES.columns)}) "
            f"VALUES ({image_values}) ON CONFLICT ({self.image_conflict}) DO NOTHING"
        )

    def cursor(self):
        return self.database.connection().cursor()

    def _in(self, values: list[Any]) -> str:
        return f"IN ({', '.join('?' for _ in values)})"

    def fetch_existing(self, skus: list[str]) -> dict[str, tuple]:
        if not skus:
            return {}
        rows = self.cursor().execute(self.select_existing + self._in(skus), skus).fetchall()
        return {row[1]: row for row in rows}

    def upsert(self, rows: list[list[Any]]) -> None:
        self.cursor().executemany(self.upsert_sql, rows)
        return None

    def ids_for(self, skus: list[str]) -> dict[str, int]:
        if not skus:
            return {}
        sql = f"SELECT {self.q(PRODUCTS.pk)}, {self.q(SKU)} FROM {self.q(PRODUCTS.name)} WHERE {self.q(SKU)} "
        return {sku: pid for pid, sku in self.cursor().execute(sql + self._in(skus), skus)}

    def fetch_images(self, product_ids: list[int]) -> list[tuple]:
        if not product_ids:
            return []
        return self.cursor().execute(self.select_images + self._in(product_ids), product_ids).fetchall()

    def insert_images(self, rows: list[list[Any]]) -> None:
        self.cursor().executemany(self.insert_images_sql, rows)


# COPY's text format: backslash escapes for the characters that delimit it; \N is NULL.
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return value.translate(_COPY_ESCAPES) if ("\\" in value or "\t" in value or "\n" in value or "\r" in value) \
            else value
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value).translate(_COPY_ESCAPES)


def copy_buffer(rows: Iterable[Sequence[Any]]) -> io.StringIO:
    """Rows as PostgreSQL ``COPY … FROM STDIN`` text."""
    text = "".join("\t".join([_copy_text(v) for v in row]) + "\n" for row in rows)
    return io.StringIO(text)


class PostgresWriter(Writer):
    param = "%s"
    distinct = "IS DISTINCT FROM"
    STAGE = "pfdb_import_products"
    IMAGE_STAGE = "pfdb_import_images"

    def __init__(self, database: pw.Database, carried: Sequence[str]):
        super().__init__(database, carried)
        cols = self.insert_columns
        image_cols = ", ".join(self.q(c) for c in IMAGES.columns)
        self.upsert_sql = (
            f"INSERT INTO {self.q(PRODUCTS.name)} ({cols}) SELECT {cols} FROM {self.STAGE} "
            f"ON CONFLICT ({self.q(SKU)}) DO UPDATE SET {self.set_clause} WHERE {self.changed} "
            f"RETURNING {self.q(PRODUCTS.pk)}, {self.q(SKU)}"
        )
        self.copy_sql = f"COPY {self.STAGE} ({cols}) FROM STDIN"
        self.insert_images_sql = (
            f"INSERT INTO {self.q(IMAGES.name)} ({image_cols}) SELECT {image_cols} FROM {self.IMAGE_STAGE} "
            f"ON CONFLICT ({self.image_conflict}) DO NOTHING"
        )
        self.copy_images_sql = f"COPY {self.IMAGE_STAGE} ({image_cols}) FROM STDIN"
        self._image_cols = image_cols

    def start(self) -> None:
        # Staging tables with exactly the target's column types and no constraints; temporary,
        # so they vanish with the session, and dropped again at the end because pooled
        # connections outlive the import.
        cursor = self.cursor()
        for stage, table, cols in ((self.STAGE, PRODUCTS.name, self.insert_columns),
                                   (self.IMAGE_STAGE, IMAGES.name, self._image_cols)):
            cursor.execute(f"DROP TABLE IF EXISTS {stage}")
            cursor.execute(f"CREATE TEMPORARY TABLE {stage} AS SELECT {cols} FROM {self.q(table)} WITH NO DATA")

    def finish(self) -> None:
        cursor = self.cursor()
        cursor.execute(f"DROP TABLE IF EXISTS {self.STAGE}")
        cursor.execute(f"DROP TABLE IF EXISTS {self.IMAGE_STAGE}")

    def fetch_existing(self, skus: list[str]) -> dict[str, tuple]:
        if not skus:
            return {}
        cursor = self.cursor()
        cursor.execute(self.select_existing + "= ANY(%s)", (skus,))
        return {row[1]: row for row in cursor.fetchall()}

    def upsert(self, rows: list[list[Any]]) -> dict[str, int]:
        cursor = self.cursor()
        cursor.copy_expert(self.copy_sql, copy_buffer(rows))
        cursor.execute(self.upsert_sql)
        ids = {sku: pid for pid, sku in cursor.fetchall()}
        cursor.execute(f"TRUNCATE {self.STAGE}")
        return ids

    def ids_for(self, skus: list[str]) -> dict[str, int]:
        if not skus:
            return {}
        cursor = self.cursor()
        cursor.execute(f"SELECT {self.q(PRODUCTS.pk)}, {self.q(SKU)} FROM {self.q(PRODUCTS.name)} "
                       f"WHERE {self.q(SKU)} = ANY(%s)", (skus,))
        return {sku: pid for pid, sku in cursor.fetchall()}

    def fetch_images(self, product_ids: list[int]) -> list[tuple]:
        if not product_ids:
            return []
        cursor = self.cursor()
        cursor.execute(self.select_images + "= ANY(%s)", (product_ids,))
        return cursor.fetchall()

    def insert_images(self, rows: list[list[Any]]) -> None:
        cursor = self.cursor()
        cursor.copy_expert(self.copy_images_sql, copy_buffer(rows))
        cursor.execute(self.insert_images_sql)
        cursor.execute(f"TRUNCATE {self.IMAGE_STAGE}")

    def delete_images(self, ids: list[int]) -> None:
        self.cursor().execute(f"DELETE FROM {self.q(IMAGES.name)} WHERE {self.q(IMAGES.pk)} = ANY(%s)", (ids,))


def make_writer(database: pw.Database, carried: Sequence[str]) -> Writer:
    if isinstance(database, pw.PostgresqlDatabase):
        return PostgresWriter(database, carried)
    return SqliteWriter(database, carried)
