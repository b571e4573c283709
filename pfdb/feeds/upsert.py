"""The import fast path: statements built once from the models' metadata, rows handed straight to the driver.

peewee's ``insert_many`` builds its SQL value by value and spends most of an import
doing so; here each statement is written once per import from ``Product._meta`` and
``ProductImage._meta`` (table and column names, defaults, ``db_value`` conversions), and
every batch goes to the driver as plain tuples:

* SQLite: one prepared ``INSERT … ON CONFLICT (sku) DO UPDATE … WHERE (changed)`` through
  the raw ``sqlite3`` cursor's ``executemany``; for a first load (``merge``) the whole batch
  as multi-row ``VALUES`` with ``RETURNING``: an empty value keeps the stored one, and
  SQLite compares;
* PostgreSQL: ``COPY`` into a temporary table, then one ``INSERT … SELECT … ON CONFLICT
  (sku) DO UPDATE … WHERE (changed) RETURNING id, sku``; for a first load the same with the
  whole batch (``merge``), compared by the server as on SQLite.

The ``SET`` list holds only the columns the feed carries (plus ``updated_at`` and the
sync status), so a feed without descriptions never touches them; ``WHERE`` skips rows
that would not change (the importer only sends changed ones, this guards against a
concurrent writer). Everything runs on the caller's connection and transaction.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import operator
import sqlite3
from collections.abc import Callable, Sequence
from decimal import Decimal
from itertools import chain
from typing import Any

from .._peewee import peewee as pw
from ..models import Product, ProductImage
from ..models.fields import JSONField, utcnow
from .layout import RowLayout


def db_converter(field: pw.Field) -> Callable[[Any], Any] | None:
    """``field.db_value`` where it does more than peewee's base coercion, else ``None`` (value as is)."""
    return None if type(field).db_value is pw.Field.db_value else field.db_value


class Columns:
    """The columns one import writes to a model's table, in statement order.

    ``given`` are the fields the feed sets, in the model's order; ``kept`` the NOT NULL
    fields without a default that it does not set (a price-only feed has no ``name``):
    the proposed row must satisfy NOT NULL before the conflict is resolved, so they carry
    the stored value, and are never in ``SET``; ``tail`` the other fields whose default is
    not NULL (timestamps, status, …), from the model's defaults once per batch. Nullable
    fields the feed does not carry are left out of the statement altogether.
    """

    def __init__(self, model: type[pw.Model], given: Sequence[pw.Field]):
        self.model = model
        self.table = model._meta.table_name
        self.pk = model._meta.primary_key.column_name
        self.given = list(given)
        names = {f.name for f in self.given}  # by name: peewee fields overload == to build SQL
        others = [f for f in model._meta.sorted_fields if not f.primary_key and f.name not in names]
        self.kept = [f for f in others if not f.null and f.default is None]
        self.tail = [f for f in others if f.default is not None]
        self.fields = self.given + self.kept + self.tail
        self.columns = [f.column_name for f in self.fields]
        self.convert = [db_converter(f) for f in self.given]
        #: (index, database value) of given fields with a non-NULL default, for new rows that lack them
        self.fill = [
            (i, f.db_value(f.default))
            for i, f in enumerate(self.given)
            if f.default is not None and not callable(f.default)
        ]

    def tail_values(self, now: dt.datetime, adapt: Callable[[Any], Any] | None = None) -> tuple:
        """The tail's defaults in database form; ``utcnow`` defaults are ``now`` for the whole batch.

        ``adapt`` turns them into what the driver would (once per batch instead of per row).
        """
        values = []
        for f in self.tail:
            value = now if f.default is utcnow else (f.default() if callable(f.default) else f.default)
            value = f.db_value(value)
            values.append(adapt(value) if adapt is not None else value)
        return tuple(values)


SKU = Product.sku.column_name
#: what a changed product's sync status becomes: the model's default ("pending")
SYNC_PENDING = Product.shopify_sync_status.default
IMAGE_GIVEN = [
    ProductImage.product,
    ProductImage.url,
    ProductImage.content_hash,
    ProductImage.position,
    ProductImage.is_primary,
]


class Writer:
    """The statements of one import, built once; subclasses talk to one driver."""

    param = "?"
    distinct = "IS NOT"

    def __init__(self, database: pw.Database, layout: RowLayout):
        """``layout``: the import's cleaned rows, whose fields lead every product row written."""
        self.database = database
        q = database.quote
        self.q = lambda name: f"{q[0]}{name}{q[1]}"
        self.products = Columns(Product, layout.fields)
        self.images = Columns(ProductImage, IMAGE_GIVEN)
        self.carried = self.products.given
        #: set by the importer per batch: the batch's transaction is the outermost one
        self.batch_commits = False
        if any(f.default is not None and callable(f.default) and f.default is not utcnow for f in self.products.tail):
            raise TypeError("a per-row callable default needs a per-row value")  # none today; keeps tail_values honest
        self.carried_columns = [f.column_name for f in self.carried]
        table = self.q(self.products.table)
        kept = [f.column_name for f in self.products.kept]
        given = [self.stored_as_given(f) for f in self.carried]
        cols = ", ".join([self.q(self.products.pk), self.q(SKU), *given, *(self.q(c) for c in kept)])
        self.select_existing = f"SELECT {cols} FROM {table} WHERE {self.q(SKU)} "
        updatable = [c for c in self.carried_columns if c != SKU]  # the conflict key itself never changes
        touched = [*updatable, Product.updated_at.column_name, Product.shopify_sync_status.column_name]
        self.set_clause = ", ".join(f"{self.q(c)} = excluded.{self.q(c)}" for c in touched)
        self.changed = (
            " OR ".join(f"{table}.{self.q(c)} {self.distinct} excluded.{self.q(c)}" for c in updatable) or "FALSE"
        )
        self.insert_columns = ", ".join(self.q(c) for c in self.products.columns)
        self.image_columns = ", ".join(self.q(c) for c in self.images.columns)
        images = self.q(self.images.table)
        image_pk = self.q(self.images.pk)
        selected = ", ".join(
            self.q(f.column_name)
            for f in (
                ProductImage.product,
                ProductImage.id,
                ProductImage.content_hash,
                ProductImage.position,
                ProductImage.is_primary,
            )
        )
        self.select_images = (
            f"SELECT {selected} FROM {images} WHERE {self.q(ProductImage.url.column_name)} "
            f"IS NOT NULL AND {self.q(ProductImage.product.column_name)} "
        )
        self.image_conflict = ", ".join(
            self.q(f.column_name) for f in (ProductImage.product, ProductImage.content_hash)
        )
        p = self.param
        self.update_image = (
            f"UPDATE {images} SET {self.q(ProductImage.position.column_name)} = {p}, "
            f"{self.q(ProductImage.is_primary.column_name)} = {p}, {self.q(ProductImage.updated_at.column_name)} = {p} "
            f"WHERE {image_pk} = {p}"
        )
        self.delete_image = f"DELETE FROM {images} WHERE {image_pk} = {p}"
        self.touch = (
            f"UPDATE {table} SET {self.q(Product.updated_at.column_name)} = {p}, "
            f"{self.q(Product.shopify_sync_status.column_name)} = {p} WHERE {self.q(self.products.pk)} = {p}"
        )

    def cursor(self):
        return self.database.cursor()

    def _merge_clauses(self) -> tuple[str, str]:
        """``merge``'s SET and WHERE: a value the feed leaves empty keeps the stored one, and a row
        is written only when a value it carries differs (``distinct``: NULL-safe on each backend)."""
        q, table = self.q, self.q(self.products.table)
        updatable = [c for c in self.carried_columns if c != SKU]
        keep = ", ".join(
            [f"{q(c)} = COALESCE(excluded.{q(c)}, {table}.{q(c)})" for c in updatable]
            + [
                f"{q(c)} = excluded.{q(c)}"
                for c in (Product.updated_at.column_name, Product.shopify_sync_status.column_name)
            ]
        )
        differs = (
            " OR ".join(
                f"(excluded.{q(c)} IS NOT NULL AND {table}.{q(c)} {self.distinct} excluded.{q(c)})" for c in updatable
            )
            or "FALSE"
        )
        return keep, differs

    def stored_as_given(self, field: pw.Field) -> str:
        """The select expression of a stored column, in the form a feed's cleaned value has."""
        return self.q(field.column_name)

    @staticmethod
    def adapt(value: Any) -> Any:
        """A database value as the driver's own adapter would send it; used for the per-batch constants."""
        return value

    def converter(self, field: pw.Field) -> Callable[[Any], Any] | None:
        """What turns a cleaned value of ``field`` into what this driver takes, per row; None: as is.

        ``db_value`` where the model converts (JSON, timestamps); decimals are already rounded
        by the feed's cleaners and peewee passes them through unchanged unless ``auto_round``.
        """
        if isinstance(field, pw.DecimalField) and not field.auto_round:
            return str  # COPY and the statements take text; a cell in stored form goes as it is
        return db_converter(field)

    def same(self, field: pw.Field) -> Callable[[Any, Any], bool]:
        """``same(value, stored)`` for a value (driver form) that differs from the stored one by ``!=``.

        Differing representations of one value (Decimal('20.00') and a stored 20, a JSON text
        with other spacing) must not count as a change, or unchanged rows would be rewritten.
        """
        python_value = field.python_value
        return lambda value, stored: stored is not None and python_value(stored) == python_value(value)

    # -- the interface the importer uses -------------------------------------------------------
    def start(self) -> None:
        """Once per import, on the import's connection."""

    def finish(self) -> None:
        """Once at the end (also after a failure, if the connection is still usable)."""

    def begin_batch(self) -> None:
        """In each batch's transaction, before its first statement."""

    #: whether rows come without their tails (``Columns.tail``): the writer adds the batch's
    #: values, given to ``batch_tails``, itself
    tail_apart = False

    def batch_tails(self, products: tuple, images: tuple) -> None:
        """The batch's tail values (``Columns.tail_values``) of products and images, when ``tail_apart``."""

    def fetch_existing(self, skus: list[str]) -> dict[str, tuple]:
        """``sku -> (id, sku, *given columns, *kept columns)`` for the SKUs already stored, raw driver values."""
        raise NotImplementedError

    def upsert(self, rows: list[Sequence[Any]]) -> tuple[int, int] | None:
        """Write product rows (``products.columns`` order).

        Returns ``(inserted, updated)`` as the server counted them when the driver can tell
        (a racing importer may have inserted a row this one expected to create), else None.
        """
        raise NotImplementedError

    #: whether ``merge`` exists: one statement that finds, compares and writes a whole batch
    merges = False

    def merge(self, rows: list[Sequence[Any]]) -> list[tuple[str, int, bool]]:
        """Write a whole batch (``products.columns`` order, a None value keeps what is stored).

        The server finds the stored rows and compares: only new and changed rows are written.
        Returns ``(sku, id, created)`` of the rows written; the others were unchanged.
        """
        raise NotImplementedError

    def product_ids(self, skus: list[str]) -> dict[str, int]:
        """``sku -> id`` of the stored products among ``skus``."""
        return {row[1]: row[0] for row in self.fetch_existing(skus).values()}

    def fetch_images(self, product_ids: list[int]) -> list[tuple]:
        """``(product_id, id, content_hash, position, is_primary)`` of the URL images of these products."""
        raise NotImplementedError

    def insert_images(self, rows: list[Sequence[Any]]) -> int | None:
        """Image rows in ``images.columns`` order, the product given by its SKU; known images are skipped.

        Returns how many were inserted when the driver can tell, else None.
        """
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

    def __init__(self, database: pw.Database, layout: RowLayout):
        super().__init__(database, layout)
        values = ", ".join("?" for _ in self.products.columns)
        self.upsert_sql = (
            f"INSERT INTO {self.q(self.products.table)} ({self.insert_columns}) VALUES ({values}) "
            f"ON CONFLICT ({self.q(SKU)}) DO UPDATE SET {self.set_clause} WHERE {self.changed}"
        )
        # The product is named by its SKU, so new products' images need no id round trip.
        by_sku = f"(SELECT {self.q(self.products.pk)} FROM {self.q(self.products.table)} WHERE {self.q(SKU)} = ?)"
        image_values = ", ".join([by_sku] + ["?" for _ in self.images.columns[1:]])
        self.insert_images_sql = (
            f"INSERT INTO {self.q(self.images.table)} ({self.image_columns}) "
            f"VALUES ({image_values}) ON CONFLICT ({self.image_conflict}) DO NOTHING"
        )
        # ``merge``: the batch as multi-row VALUES, a value left empty keeps the stored one, a row
        # whose values all equal the stored ones is not written. SQLite compares after the
        # column's affinity ('29.90' is the stored 29.9), as ``same`` does; not JSON text, where
        # other spacing of one value would count as a change: such feeds take the lookup.
        self.merges = not any(isinstance(f, JSONField) for f in self.carried)
        q, table = self.q, self.q(self.products.table)
        keep, differs = self._merge_clauses()
        self._merge_head = f"INSERT INTO {table} ({self.insert_columns}) VALUES "
        self._merge_row = f"({values})"
        # Without AUTOINCREMENT a new row's id is the highest plus one, and the batch holds the
        # write lock: an id above the highest before the statement is a row it inserted.
        self._merge_tail = (
            f" ON CONFLICT ({q(SKU)}) DO UPDATE SET {keep} WHERE {differs} "
            f"RETURNING {q(SKU)}, {q(self.products.pk)}, {q(self.products.pk)} > ?"
        )
        self._max_id = f"SELECT max({q(self.products.pk)}) FROM {table}"
        self._merge_sql: dict[int, str] = {}

    def cursor(self):
        return self.database.connection().cursor()

    def _merge_statement(self, rows: int) -> str:
        sql = self._merge_sql.get(rows)
        if sql is None:
            sql = self._merge_sql[rows] = self._merge_head + ", ".join([self._merge_row] * rows) + self._merge_tail
        return sql

    def merge(self, rows: list[Sequence[Any]]) -> list[tuple[str, int, bool]] | None:
        """As PostgreSQL's: one multi-row ``INSERT … ON CONFLICT DO UPDATE … WHERE … RETURNING`` per
        chunk of rows (as many as the statement's variables allow); None when it cannot tell
        created from updated rows (ids at their limit), and the batch takes the lookup."""
        if not rows:
            return []
        cursor = self.cursor()
        highest = cursor.execute(self._max_id).fetchone()[0] or 0
        if highest >= (1 << 63) - 1 - len(rows):
            return None  # SQLite would pick random free ids: ``id > highest`` no longer means new
        connection = self.database.connection()
        limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) if hasattr(connection, "getlimit") else 999
        per = max(1, (min(limit, 32766) - 1) // len(rows[0]))
        written: list[tuple[str, int, bool]] = []
        for start in range(0, len(rows), per):
            chunk = rows[start : start + per]
            params = list(chain.from_iterable(chunk))
            params.append(highest)
            written += cursor.execute(self._merge_statement(len(chunk)), params).fetchall()
        return written

    # Every row of an upsert may fail halfway (a constraint, a foreign key), so SQLite keeps a
    # statement journal of the pages each row changes, in a temporary file: two write calls per
    # page, over a million for 100,000 products, more time than the rows' own writes. In memory
    # it holds one row's pages at a time. Per import only: temp_store also decides where VACUUM
    # and big sorts spill, which must stay on disk.
    _temp_store: int | None = None
    _cache_size: int | None = None
    #: the page cache during an import, in KiB
    CACHE_KIB = 16 * 1024

    def start(self) -> None:
        cursor = self.cursor()
        self._temp_store = cursor.execute("PRAGMA temp_store").fetchone()[0]
        cursor.execute("PRAGMA temp_store = MEMORY")
        # The connection's 64 MiB page cache fills with pages an import writes once and does not
        # read again: at 1,000,000 rows most of the import's memory growth. The pages it comes
        # back to (the indexes' right edges, the categories) fit in far less.
        size = cursor.execute("PRAGMA cache_size").fetchone()[0]  # negative: KiB; positive: pages
        kib = -size if size < 0 else size * cursor.execute("PRAGMA page_size").fetchone()[0] // 1024
        if kib > self.CACHE_KIB:
            self._cache_size = size
            cursor.execute(f"PRAGMA cache_size = {-self.CACHE_KIB}")

    def finish(self) -> None:
        if self._temp_store is not None:
            self.cursor().execute(f"PRAGMA temp_store = {int(self._temp_store)}")
            self._temp_store = None
        if self._cache_size is not None:
            self.cursor().execute(f"PRAGMA cache_size = {int(self._cache_size)}")
            self._cache_size = None

    # What sqlite3 would do through its adapter protocol, done directly: the protocol looks each
    # non-basic value up (a bool is not an exact int) and fails an attribute lookup with a
    # formatted AttributeError before finding peewee's Decimal adapter (str) or its own
    # datetime one (isoformat(" ")): several times per row otherwise.
    @staticmethod
    def adapt(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value.isoformat(" ")
        if isinstance(value, bool):
            return int(value)
        return str(value) if isinstance(value, Decimal) else value

    def converter(self, field: pw.Field) -> Callable[[Any], Any] | None:
        if isinstance(field, pw.DecimalField) and not field.auto_round:
            return str
        if isinstance(field, pw.BooleanField):
            return int
        convert = db_converter(field)
        if convert is not None and isinstance(field, pw.DateTimeField):
            return lambda value: self.adapt(convert(value))
        return convert

    def _in(self, values: list[Any]) -> str:
        return f"IN ({', '.join('?' for _ in values)})"

    def fetch_existing(self, skus: list[str]) -> dict[str, tuple]:
        if not skus:
            return {}
        rows = self.cursor().execute(self.select_existing + self._in(skus), skus).fetchall()
        return {row[1]: row for row in rows}

    def stored_as_given(self, field: pw.Field) -> str:
        # A NUMERIC column hands back 29.9 (REAL) or 49 (INTEGER) for what a feed gives as
        # "29.90" and "49.00": read the feed's way (by SQLite, in C), an unchanged row compares
        # equal as a whole. Not a value with more places than the column keeps (set by hand).
        column = self.q(field.column_name)
        if not isinstance(field, pw.DecimalField):
            return column
        text = f"printf('%.{int(field.decimal_places)}f', {column})"
        return (
            f"CASE WHEN typeof({column}) IN ('real', 'integer') AND CAST({text} AS REAL) = {column} "
            f"THEN {text} ELSE {column} END"
        )

    def upsert(self, rows: list[Sequence[Any]]) -> None:
        self.cursor().executemany(self.upsert_sql, rows)

    def product_ids(self, skus: list[str]) -> dict[str, int]:
        if not skus:
            return {}
        sql = (
            f"SELECT {self.q(SKU)}, {self.q(self.products.pk)} FROM {self.q(self.products.table)} WHERE {self.q(SKU)} "
        )
        return dict(self.cursor().execute(sql + self._in(skus), skus).fetchall())  # the index alone answers

    def fetch_images(self, product_ids: list[int]) -> list[tuple]:
        if not product_ids:
            return []
        return self.cursor().execute(self.select_images + self._in(product_ids), product_ids).fetchall()

    def insert_images(self, rows: list[Sequence[Any]]) -> None:
        self.cursor().executemany(self.insert_images_sql, rows)


# COPY's text format: backslash escapes for the characters that delimit it; \N is NULL.
COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_text(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, str):
        return (
            value.translate(COPY_ESCAPES)
            if ("\\" in value or "\t" in value or "\n" in value or "\r" in value)
            else value
        )
    if isinstance(value, bool):
        return "t" if value else "f"
    if isinstance(value, (int, Decimal)):
        return str(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value).translate(COPY_ESCAPES)


def copy_buffer(rows: Sequence[Sequence[Any]], text: Sequence[int] | None = None) -> tuple[str, io.StringIO]:
    """Rows as ``COPY … FROM STDIN`` data: ``(options, buffer)``.

    CSV written by the C ``csv`` module is the fast form: an unquoted empty field is NULL.
    It cannot tell an empty string from NULL, so a batch holding one (cleaned feed values
    never are; a stored value carried over might be) uses the text format instead.
    ``text``: the positions that can hold a string (a Decimal compared with "" asks
    ``numbers.Rational`` whether it is one, through the abc machinery: 0.15 s a 100,000 rows).
    """
    if text is not None:
        if not text:
            empty = False
        else:
            pick = operator.itemgetter(*text) if len(text) > 1 else (lambda row, i=text[0]: (row[i],))
            empty = any("" in pick(row) for row in rows)
    else:
        empty = any("" in row for row in rows)
    if not empty:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerows(rows)
        buffer.seek(0)
        return "(FORMAT csv)", buffer
    text = "".join("\t".join([_copy_text(v) for v in row]) + "\n" for row in rows)
    return "(FORMAT text)", io.StringIO(text)


class PostgresWriter(Writer):
    param = "%s"
    distinct = "IS DISTINCT FROM"
    STAGE = "pfdb_import_products"
    IMAGE_STAGE = "pfdb_import_images"

    #: The tails (timestamps, status: one value per batch) are parameters of the statements
    #: that move the staged rows, not columns of every COPY row: a third less COPY text to write
    #: and parse for products, as much for images.
    tail_apart = True

    def stored_as_given(self, field: pw.Field) -> str:
        # Decimals travel as text (``converter``): a numeric(12, 2) reads back as '19.99', the
        # cleaned cell's own form, so an unchanged row compares equal without a Decimal made.
        column = self.q(field.column_name)
        if isinstance(field, pw.DecimalField) and not field.auto_round:
            return f"{column}::text"
        return column

    def __init__(self, database: pw.Database, layout: RowLayout):
        super().__init__(database, layout)
        cols, image_cols = self.insert_columns, self.image_columns
        q = self.q
        products, images = self.products, self.images
        self.staged_fields = products.given + products.kept
        self.staged_image_fields = images.given + images.kept
        staged = ", ".join(q(f.column_name) for f in self.staged_fields)
        staged_images = ", ".join(q(f.column_name) for f in self.staged_image_fields)
        self.staged_columns, self.staged_image_columns = staged, staged_images
        select = ", ".join([staged] + ["%s"] * len(products.tail))
        select_images = ", ".join([staged_images] + ["%s"] * len(images.tail))
        self._tail: tuple = ()
        self._image_tail: tuple = ()
        # The ids of the products written come back, so image rows can carry their product's
        # id: joining the staged images to products by SKU made PostgreSQL hash the whole
        # products table once per batch.
        self.upsert_sql = (
            f"INSERT INTO {self.q(self.products.table)} ({cols}) SELECT {select} FROM {self.STAGE} "
            f"ON CONFLICT ({self.q(SKU)}) DO UPDATE SET {self.set_clause} WHERE {self.changed} "
            # xmax is 0 only in a row version this statement inserted (an updated row's old
            # version carries the updater's id): what this import created, not what it expected to.
            f"RETURNING {self.q(SKU)}, {self.q(self.products.pk)}, xmax = 0"
        )
        self.copy_sql = f"COPY {self.STAGE} ({staged}) FROM STDIN WITH "
        # The whole batch in one statement: the unique index finds the stored row, a value the
        # feed leaves empty keeps the stored one, and a row whose every value is the stored one
        # is not written at all (no new version, its updated_at stays).
        table = self.q(self.products.table)
        keep, differs = self._merge_clauses()
        self.merge_sql = (
            f"INSERT INTO {table} ({cols}) SELECT {select} FROM {self.STAGE} "
            f"ON CONFLICT ({q(SKU)}) DO UPDATE SET {keep} WHERE {differs} "
            f"RETURNING {q(SKU)}, {q(self.products.pk)}, xmax = 0"
        )
        self.insert_images_sql = (
            f"INSERT INTO {self.q(self.images.table)} ({image_cols}) SELECT {select_images} FROM {self.IMAGE_STAGE} "
            f"ON CONFLICT ({self.image_conflict}) DO NOTHING"
        )
        self.copy_images_sql = f"COPY {self.IMAGE_STAGE} ({staged_images}) FROM STDIN WITH "
        self.select_ids = (
            f"SELECT {self.q(SKU)}, {self.q(self.products.pk)} FROM {self.q(self.products.table)} "
            f"WHERE {self.q(SKU)} = ANY(%s)"
        )
        self._ids: dict[str, int] = {}  # SKU -> id of this batch's products
        settings = getattr(database, "pfdb_settings", None)
        self.per_transaction = bool(settings and settings.transaction_pooled)
        # With read replicas, this process's reads after a batch wait for the replica to replay
        # the primary's flushed WAL position (replicas.py): a batch's commit must be in it.
        self.async_commits = not (settings and settings.replica_urls)
        self._text = self._text_positions(self.staged_fields)
        self._image_text = self._text_positions(self.staged_image_fields)

    def batch_tails(self, products: tuple, images: tuple) -> None:
        self._tail, self._image_tail = tuple(products), tuple(images)

    @staticmethod
    def _text_positions(fields: Sequence[pw.Field]) -> list[int]:
        """Positions of the columns whose values can be strings (all but numbers, booleans, times, keys)."""
        typed = (pw.DecimalField, pw.IntegerField, pw.BooleanField, pw.DateTimeField, pw.FloatField, pw.ForeignKeyField)
        return [i for i, f in enumerate(fields) if not isinstance(f, typed)]

    def _lookup(self, cursor: Any, sql: str, params: tuple) -> list[tuple]:
        """Rows of a batch's lookup (``= ANY(keys)``), read through the index.

        PostgreSQL costs each of the 2,000 probes as a random read (random_page_cost 4) and
        prefers a sequential scan of the whole table: 15-50 ms a batch at 100,000 products
        instead of 3-6 ms, and growing with the table. So the planner is told to avoid the
        scan for this one statement: SET LOCAL, then back to the default, so that the merges
        (which read the staged rows whole: 4.9 s instead of 0.3 s when left off) and a
        caller's own transaction plan as usual.
        """
        cursor.execute("SET LOCAL enable_seqscan = off; " + sql, params)
        rows = cursor.fetchall()
        cursor.execute("SET LOCAL enable_seqscan TO DEFAULT")
        return rows

    @staticmethod
    def adapt(value: Any) -> Any:
        # The batch's timestamps as COPY text once, rather than by the csv writer in every row.
        return value.isoformat(" ") if isinstance(value, dt.datetime) else value

    def _stages(self) -> tuple[tuple[str, str, str], ...]:
        return (
            (self.STAGE, self.products.table, self.staged_columns),
            (self.IMAGE_STAGE, self.images.table, self.staged_image_columns),
        )

    def start(self) -> None:
        # Staging tables with exactly the target's column types and no constraints; temporary,
        # so they vanish with the session, and dropped again at the end because pooled
        # connections outlive the import. A batch's commit empties them (cheaper than a
        # TRUNCATE per batch); ``_clear`` covers batches inside an outer transaction.
        # Behind a transaction pooler the session is the pooler's: a table made here would
        # sit on one server connection while the next batch runs on another (or find another
        # client's). There each batch makes its own, dropped by its commit (``_stage``).
        if self.per_transaction:
            return
        cursor = self.cursor()
        for stage, table, cols in self._stages():
            cursor.execute(f"DROP TABLE IF EXISTS {stage}")
            cursor.execute(
                f"CREATE TEMPORARY TABLE {stage} ON COMMIT DELETE ROWS AS SELECT {cols} "
                f"FROM {self.q(table)} WITH NO DATA"
            )

    def begin_batch(self) -> None:
        # A batch that commits on its own does not wait for its WAL to reach the disk (50 flushes
        # per 100,000 rows; the raw code commits once): a crash can lose the last batches, whole,
        # with the counts committed beside them, and the import run again finishes them, as after
        # any interruption. The Job's last update commits as usual, which flushes the WAL up to
        # it: a finished import is as durable as before. SQLite's synchronous=NORMAL in WAL mode
        # already commits this way. Not a batch inside a caller's transaction: that one is theirs;
        # nor with read replicas configured (``async_commits``).
        if self.batch_commits and self.async_commits:
            self.cursor().execute("SET LOCAL synchronous_commit = off")

    def _stage(self, cursor: Any, name: str) -> None:
        """Transaction pooling: make staging table ``name`` in this transaction, unless it has it."""
        if self.per_transaction:
            for stage, table, cols in self._stages():
                if stage == name:
                    cursor.execute(
                        f"CREATE TEMPORARY TABLE IF NOT EXISTS {stage} ON COMMIT DROP AS SELECT {cols} "
                        f"FROM {self.q(table)} WITH NO DATA"
                    )

    def _clear(self, cursor: Any, table: str) -> None:
        """Empty a staging table now, unless this batch's own commit will.

        It will not under strict, dry run or a caller's transaction (savepoints do not empty it).
        """
        if not self.batch_commits:
            cursor.execute(f"TRUNCATE {table}")

    def finish(self) -> None:
        if self.per_transaction:
            return  # its commits dropped them; a DROP here could reach another client's session
        cursor = self.cursor()
        cursor.execute(f"DROP TABLE IF EXISTS {self.STAGE}")
        cursor.execute(f"DROP TABLE IF EXISTS {self.IMAGE_STAGE}")

    def fetch_existing(self, skus: list[str]) -> dict[str, tuple]:
        self._ids = {}  # a new batch
        if not skus:
            return {}
        cursor = self.cursor()
        existing = {row[1]: row for row in self._lookup(cursor, self.select_existing + "= ANY(%s)", (skus,))}
        self._ids = {sku: row[0] for sku, row in existing.items()}
        return existing

    def upsert(self, rows: list[Sequence[Any]]) -> tuple[int, int]:
        cursor = self.cursor()
        options, data = copy_buffer(rows, self._text)
        self._stage(cursor, self.STAGE)
        cursor.copy_expert(self.copy_sql + options, data)
        cursor.execute(self.upsert_sql, self._tail)
        written = cursor.fetchall()
        self._ids.update((sku, pk) for sku, pk, _ in written)
        self._clear(cursor, self.STAGE)
        inserted = sum(1 for *_, fresh in written if fresh)
        return inserted, len(written) - inserted

    merges = True

    def merge(self, rows: list[Sequence[Any]]) -> list[tuple[str, int, bool]]:
        cursor = self.cursor()
        options, data = copy_buffer(rows, self._text)
        self._stage(cursor, self.STAGE)
        cursor.copy_expert(self.copy_sql + options, data)
        cursor.execute(self.merge_sql, self._tail)
        written = cursor.fetchall()
        self._clear(cursor, self.STAGE)
        self._ids = {sku: pk for sku, pk, _ in written}
        return written

    def product_ids(self, skus: list[str]) -> dict[str, int]:
        found = dict(self._lookup(self.cursor(), self.select_ids, (skus,))) if skus else {}
        self._ids.update(found)
        return found

    def fetch_images(self, product_ids: list[int]) -> list[tuple]:
        if not product_ids:
            return []
        cursor = self.cursor()
        return self._lookup(cursor, self.select_images + "= ANY(%s)", (product_ids,))

    def insert_images(self, rows: list[Sequence[Any]]) -> None:
        cursor = self.cursor()
        ids = self._ids
        unknown = list({row[0] for row in rows if row[0] not in ids})
        if unknown:  # a product another writer inserted first, so not returned to this one
            ids.update(self._lookup(cursor, self.select_ids, (unknown,)))
        rows = [(ids[row[0]], *row[1:]) for row in rows if row[0] in ids]
        if not rows:
            return 0
        options, data = copy_buffer(rows, self._image_text)
        self._stage(cursor, self.IMAGE_STAGE)
        cursor.copy_expert(self.copy_images_sql + options, data)
        cursor.execute(self.insert_images_sql, self._image_tail)
        inserted = cursor.rowcount
        self._clear(cursor, self.IMAGE_STAGE)
        return inserted

    def update_images(self, rows: list[tuple]) -> None:
        # is_primary comes as 1/0 (what COPY and sqlite3 take); a parameter of an UPDATE must be a bool.
        super().update_images([(position, bool(primary), *rest) for position, primary, *rest in rows])

    def delete_images(self, ids: list[int]) -> None:
        self.cursor().execute(
            f"DELETE FROM {self.q(self.images.table)} WHERE {self.q(self.images.pk)} = ANY(%s)", (ids,)
        )


def make_writer(database: pw.Database, layout: RowLayout) -> Writer:
    if isinstance(database, pw.PostgresqlDatabase):
        return PostgresWriter(database, layout)
    return SqliteWriter(database, layout)
