"""What PgBouncer in transaction pooling mode costs pfdb: feed imports and short transactions.

Three ways to the same PostgreSQL server (PFDB_BENCH_POSTGRES_URL), each into a fresh
migrated database (CREATE DATABASE … TEMPLATE, dropped at the end):

* ``direct``: the server itself, ``DATABASE_POOLER=none`` (staging tables once per import);
* ``direct, pooler mode``: the server itself with ``DATABASE_POOLER=transaction``, which
  isolates what pfdb's own pooler-safe path costs (staging tables made per batch);
* ``through PgBouncer``: a PgBouncer started here (``pool_mode = transaction``), pooler mode.

Workloads: a pfdb import of ``--rows`` rows (default 20,000, batches of 2,000, two images
each), and ``--transactions`` short scopes (one ``Product`` read by SKU each). The ways
run ``--repeat`` times, alternating; medians, and ratios against ``direct``. Needs the
``pgbouncer`` binary (Debian's package). Not a test: run it by hand.

    python benchmarks/pgbouncer_benchmark.py [--rows 20000] [--transactions 2000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # tests/pgbouncer.py starts and stops PgBouncer

import pfdb  # noqa: E402
from pfdb import migrations  # noqa: E402
from pfdb.feeds import import_products  # noqa: E402
from pfdb.models import Product  # noqa: E402

PG_URL = os.environ.get("PFDB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
WAYS = ("direct", "direct, pooler mode", "through PgBouncer")


def write_feed(path: Path, rows: int) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["sku", "name", "price", "currency", "inventory_quantity", "category", "images"])
        for i in range(rows):
            writer.writerow(
                [
                    f"BNC-{i:07d}",
                    f"Product {i}",
                    f"{1 + i % 500}.{i % 100:02d}",
                    "EUR",
                    i % 50,
                    f"Dept {i % 7} > Shelf {i % 23}",
                    f"https://img.example.com/{i}-a.jpg|https://img.example.com/{i}-b.jpg",
                ]
            )
    return path


class Server:
    def __init__(self) -> None:
        import psycopg2

        self.admin = psycopg2.connect(PG_URL, connect_timeout=5)
        self.admin.autocommit = True
        self.created: list[str] = []
        self.template = self.create()
        pfdb.init_database(self.url(self.template))
        migrations.migrate(backup=False)
        pfdb.close_database()

    def create(self, template: str | None = None) -> str:
        name = f"pfdb_bench_{uuid.uuid4().hex[:8]}"
        with self.admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.created.append(name)
        return name

    @staticmethod
    def url(name: str) -> str:
        return f"{PG_URL.rpartition('/')[0]}/{name}"

    def drop_all(self) -> None:
        pfdb.close_database()
        with self.admin.cursor() as cur:
            for name in reversed(self.created):
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.admin.close()


def bind(way: str, name: str, bouncer) -> None:
    if way == "through PgBouncer":
        pfdb.init_database(bouncer.url(name), pooler="transaction")
    else:
        pfdb.init_database(Server.url(name), pooler="transaction" if way.endswith("pooler mode") else "none")


def run_import(way: str, name: str, bouncer, feed: Path) -> float:
    bind(way, name, bouncer)
    start = time.perf_counter()
    result = import_products(feed, batch_size=2000)
    seconds = time.perf_counter() - start
    assert result.created > 0 and not result.rejected, result
    pfdb.close_database()
    return seconds


def run_transactions(way: str, name: str, bouncer, count: int, rows: int) -> float:
    bind(way, name, bouncer)
    start = time.perf_counter()
    for i in range(count):
        with pfdb.db_session_scope():
            Product.get(Product.sku == f"BNC-{(i * 7919) % rows:07d}")
    seconds = time.perf_counter() - start
    pfdb.close_database()
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000, help="rows in the feed (default 20,000)")
    parser.add_argument("--transactions", type=int, default=2000, help="short scopes timed (default 2,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each way (default 3)")
    args = parser.parse_args(argv)

    from pgbouncer import PgBouncer

    server = Server()
    bouncer = PgBouncer(pool_size=5)
    imports: dict[str, list[float]] = {w: [] for w in WAYS}
    scopes: dict[str, list[float]] = {w: [] for w in WAYS}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            feed = write_feed(Path(tmp) / "feed.csv", args.rows)
            for _ in range(args.repeat):
                for way in WAYS:
                    name = server.create(server.template)
                    imports[way].append(run_import(way, name, bouncer, feed))
                    scopes[way].append(run_transactions(way, name, bouncer, args.transactions, args.rows))
    finally:
        bouncer.stop()
        server.drop_all()

    print(f"pfdb import of {args.rows:,} rows (batches of 2,000), medians of {args.repeat}:")
    base = statistics.median(imports["direct"])
    for way in WAYS:
        median = statistics.median(imports[way])
        print(f"  {way:<22} {median:6.2f} s  {args.rows / median:8,.0f} rows/s  {median / base:5.2f}x")
    print(f"{args.transactions:,} short transactions (one product read by SKU each), medians of {args.repeat}:")
    base = statistics.median(scopes["direct"])
    for way in WAYS:
        median = statistics.median(scopes[way])
        per = median / args.transactions * 1e6
        print(f"  {way:<22} {median:6.2f} s  {per:6.0f} µs each  {median / base:5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
