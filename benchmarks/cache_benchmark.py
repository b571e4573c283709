"""Cached against uncached lookups: a configuration value, a category by path, a product by SKU.

Both backends in one run (a SQLite file in a temporary folder, a PostgreSQL database created
and dropped on --postgres), each with 2,000 products and a three-level category tree. For
each lookup the same calls run with the cache on (``CACHE_URL``, values warm in Redis) and
off, in alternating rounds so that the machine's drift hits both alike; printed are median
microseconds per call and the ratio uncached / cached (above 1: the cache pays).

    python benchmarks/cache_benchmark.py [--postgres postgresql://postgres@127.0.0.1:5432/postgres]
        [--redis redis://127.0.0.1:6379/0] [--calls 2000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pfdb  # noqa: E402
from pfdb import Category, Configuration, Product  # noqa: E402
from pfdb.categories import category_by_path  # noqa: E402
from pfdb.lifecycle import init  # noqa: E402

PRODUCTS = 2000


def fill() -> None:
    with pfdb.db_session_scope():
        for n in range(50):
            Configuration.set_value(f"setting.{n}", f"value {n}")
        top = Category.create(name="Apparel")
        mid = Category.create(name="Clothing", parent=top)
        Category.create(name="Shirts", parent=mid)
        Product.insert_many(
            [
                {"sku": f"SKU-{n:05d}", "name": f"Product {n}", "price": "9.99", "currency": "EUR"}
                for n in range(PRODUCTS)
            ]
        ).execute()


LOOKUPS = {
    "configuration value": lambda i: Configuration.get_value(f"setting.{i % 50}"),
    "category by path": lambda i: category_by_path("Apparel > Clothing > Shirts"),
    "product by SKU": lambda i: Product.by_sku(f"SKU-{i % 200:05d}"),
}


def per_call_us(url: str, cache_url: str | None, prefix: str, lookup, calls: int) -> float:
    if cache_url:
        os.environ.update(CACHE_URL=cache_url, CACHE_KEY_PREFIX=prefix)
    else:
        os.environ.pop("CACHE_URL", None)
    pfdb.init_database(url)
    try:
        for i in range(200):  # warm: the pool's connection, Redis's values, SQLite's pages
            lookup(i)
        start = time.perf_counter()
        for i in range(calls):
            lookup(i)
        return (time.perf_counter() - start) / calls * 1e6
    finally:
        pfdb.close_database()


def measure(name: str, url: str, redis_url: str, calls: int, rounds: int) -> None:
    prefix = f"pfdbbench-{uuid.uuid4().hex[:8]}"
    init(url)
    fill()
    pfdb.close_database()
    for label, lookup in LOOKUPS.items():
        cached, uncached, ratios = [], [], []
        for _ in range(rounds):
            off = per_call_us(url, None, prefix, lookup, calls)
            on = per_call_us(url, redis_url, prefix, lookup, calls)
            uncached.append(off)
            cached.append(on)
            ratios.append(off / on)
        print(
            f"{name:<11} {label:<21} {statistics.median(uncached):>9.1f} {statistics.median(cached):>9.1f}"
            f" {statistics.median(ratios):>7.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
        )
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match=f"{prefix}:*"))
    if keys:
        client.delete(*keys)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    print(f"{'backend':<11} {'lookup':<21} {'uncached':>9} {'cached':>9} {'ratio':>8}  (µs per call, medians)")
    with tempfile.TemporaryDirectory() as folder:
        measure("SQLite", f"sqlite:///{folder}/bench.db", args.redis, args.calls, args.rounds)
    import psycopg2

    name = f"pfdb_cache_bench_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(args.postgres)
    admin.autocommit = True
    base = args.postgres.rsplit("/", 1)[0]
    try:
        with admin.cursor() as cursor:
            cursor.execute(f'CREATE DATABASE "{name}"')
        measure("PostgreSQL", f"{base}/{name}", args.redis, args.calls, args.rounds)
    finally:
        with admin.cursor() as cursor:
            cursor.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


if __name__ == "__main__":
    main()
