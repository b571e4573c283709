"""The hand-written raw-driver import that ``import_benchmark.py`` holds ``pfdb import`` to.

What a careful engineer writes without pfdb, run as its own process so that both sides pay
for starting Python: the feed read with ``csv``, categories found or created through a dict
cache, and

* SQLite: one prepared ``INSERT … ON CONFLICT (sku) DO UPDATE`` (every row rewritten) through
  ``sqlite3.executemany``, images alike, a transaction per 2,000 rows;
* PostgreSQL: psycopg2 ``COPY`` of the whole file into a temporary table, then one
  ``INSERT … SELECT … ON CONFLICT (sku) DO UPDATE``, images alike, in one transaction.

No validation, no change detection, no job record: the floor, not a competitor.

    python benchmarks/raw_import.py sqlite:///path.db feed.csv
    python benchmarks/raw_import.py postgresql://user@host/db feed.csv
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import io
import re
import sys
from collections.abc import Callable, Iterator

BATCH = 2000
_NON_SLUG = re.compile(r"[^a-z0-9]+")
PRODUCT_COLS = [
    "created_at",
    "updated_at",
    "sku",
    "name",
    "description",
    "price",
    "compare_at_price",
    "currency",
    "brand",
    "gtin",
    "inventory_quantity",
    "status",
    "category_id",
    "shopify_sync_status",
]
UPDATE_COLS = [
    "name",
    "description",
    "price",
    "compare_at_price",
    "currency",
    "brand",
    "gtin",
    "inventory_quantity",
    "category_id",
    "updated_at",
]
IMAGE_COLS = ["created_at", "updated_at", "product_id", "url", "content_hash", "position", "is_primary"]


def read(feed: str) -> tuple[list[str], Iterator[list[str]]]:
    f = open(feed, encoding="utf-8", newline="")  # noqa: SIM115 (read to the end by the caller)
    reader = csv.reader(f)
    return next(reader), reader


class Categories:
    """Find-or-create of 'A > B' paths with a dict cache, as a hand-written import would."""

    def __init__(self, execute: Callable, param: str):
        self.execute, self.p, self.cache = execute, param, {}

    def id_for(self, path: str, now: str) -> int | None:
        if not path:
            return None
        if path in self.cache:
            return self.cache[path][0]
        parent_id, parent_path, names = None, "/", [n.strip() for n in path.split(">")]
        for level, name in enumerate(names):
            key = " > ".join(names[: level + 1])
            if key in self.cache:
                parent_id, parent_path = self.cache[key]
                continue
            slug = _NON_SLUG.sub("-", key.lower()).strip("-")
            rows = self.execute(f"SELECT id, path FROM categories WHERE slug = {self.p}", (slug,))
            if rows:
                parent_id, parent_path = rows[0]
            else:
                parent_id = self.execute(
                    f"INSERT INTO categories (created_at, updated_at, name, slug, parent_id, level, path, sort_order, "
                    f"is_active) VALUES ({', '.join([self.p] * 9)}) RETURNING id",
                    (now, now, name, slug, parent_id, level, parent_path, 0, True),
                )[0][0]
                parent_path = f"{parent_path}{parent_id}/"
                self.execute(f"UPDATE categories SET path = {self.p} WHERE id = {self.p}", (parent_path, parent_id))
            self.cache[key] = (parent_id, parent_path)
        return parent_id


def rows_of(header: list[str], reader: Iterator[list[str]], cats: Categories, now: str):
    """(product tuple, image URLs) per row, in ``PRODUCT_COLS`` order."""
    at = {name: i for i, name in enumerate(header)}
    s, n, d, p, c, cur, b, g, q = (
        at[k]
        for k in (
            "sku",
            "name",
            "description",
            "price",
            "compare_at_price",
            "currency",
            "brand",
            "gtin",
            "inventory_quantity",
        )
    )
    cat, img = at.get("category"), at.get("images")
    for row in reader:
        category_id = cats.id_for(row[cat], now) if cat is not None else None
        product = (
            now,
            now,
            row[s],
            row[n],
            row[d] or None,
            row[p] or None,
            row[c] or None,
            row[cur],
            row[b] or None,
            row[g] or None,
            int(row[q] or 0),
            "draft",
            category_id,
            "pending",
        )
        yield product, (row[img].split("|") if img is not None and row[img] else ())


def sqlite(path: str, feed: str) -> int:
    import sqlite3

    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in ("journal_mode = wal", "synchronous = normal", "foreign_keys = 1", "cache_size = -65536"):
        conn.execute(f"PRAGMA {pragma}")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(" ")
    cats = Categories(lambda sql, params: conn.execute(sql, params).fetchall(), "?")
    upsert = (
        f"INSERT INTO products ({', '.join(PRODUCT_COLS)}) VALUES ({', '.join('?' * len(PRODUCT_COLS))}) "
        f"ON CONFLICT (sku) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in UPDATE_COLS)}"
    )
    images = (
        f"INSERT INTO product_images ({', '.join(IMAGE_COLS)}) VALUES "
        f"(?, ?, (SELECT id FROM products WHERE sku = ?), ?, ?, ?, ?) ON CONFLICT (product_id, content_hash) "
        f"DO NOTHING"
    )
    header, reader = read(feed)
    products, pictures, count = [], [], 0
    conn.execute("BEGIN IMMEDIATE")
    for product, urls in rows_of(header, reader, cats, now):
        products.append(product)
        for position, url in enumerate(urls):
            pictures.append(
                (now, now, product[2], url, hashlib.sha256(url.encode()).hexdigest(), position, position == 0)
            )
        if len(products) >= BATCH:
            conn.executemany(upsert, products)
            if pictures:
                conn.executemany(images, pictures)
            conn.execute("COMMIT")
            conn.execute("BEGIN IMMEDIATE")
            count += len(products)
            products, pictures = [], []
    conn.executemany(upsert, products)
    if pictures:
        conn.executemany(images, pictures)
    conn.execute("COMMIT")
    conn.close()
    return count + len(products)


def _copy_line(values) -> str:
    out = []
    for v in values:
        if v is None:
            out.append("\\N")
        elif isinstance(v, bool):
            out.append("t" if v else "f")
        else:
            s = str(v)
            if "\\" in s or "\t" in s or "\n" in s or "\r" in s:
                s = s.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
            out.append(s)
    return "\t".join(out) + "\n"


def postgres(url: str, feed: str) -> int:
    import psycopg2

    conn = psycopg2.connect(url)
    cur = conn.cursor()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(" ")

    def execute(sql, params):
        cur.execute(sql, params)
        return cur.fetchall() if cur.description else []

    cats = Categories(execute, "%s")
    cur.execute(f"CREATE TEMP TABLE stage AS SELECT {', '.join(PRODUCT_COLS)} FROM products WITH NO DATA")
    cur.execute(
        "CREATE TEMP TABLE image_stage (created_at timestamp, updated_at timestamp, sku varchar, "
        "url varchar, content_hash varchar, position int, is_primary boolean)"
    )
    products, pictures = io.StringIO(), io.StringIO()
    count = 0
    header, reader = read(feed)
    for product, urls in rows_of(header, reader, cats, now):
        products.write(_copy_line(product))
        for position, url in enumerate(urls):
            pictures.write(
                _copy_line(
                    (now, now, product[2], url, hashlib.sha256(url.encode()).hexdigest(), position, position == 0)
                )
            )
        count += 1
    products.seek(0)
    cur.copy_expert(f"COPY stage ({', '.join(PRODUCT_COLS)}) FROM STDIN", products)
    cur.execute(
        f"INSERT INTO products ({', '.join(PRODUCT_COLS)}) SELECT {', '.join(PRODUCT_COLS)} FROM stage "
        f"ON CONFLICT (sku) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in UPDATE_COLS)}"
    )
    if pictures.tell():
        pictures.seek(0)
        cur.copy_expert("COPY image_stage FROM STDIN", pictures)
        cur.execute(
            f"INSERT INTO product_images ({', '.join(IMAGE_COLS)}) SELECT s.created_at, s.updated_at, p.id, "
            "s.url, s.content_hash, s.position, s.is_primary FROM image_stage s JOIN products p ON p.sku = s.sku "
            "ON CONFLICT (product_id, content_hash) DO NOTHING"
        )
    conn.commit()
    conn.close()
    return count


def main(argv: list[str]) -> int:
    url, feed = argv
    if url.startswith("sqlite:///"):
        count = sqlite(url[len("sqlite:///") :], feed)
    else:
        count = postgres(url, feed)
    print(count)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
