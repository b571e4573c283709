"""What routing reads to a replica costs, measured side by side in one run (docs/replicas.md).

Starts a primary and a streaming replica of its own (tests/pg_servers.py: initdb and
pg_basebackup as the ``postgres`` user), migrates pfdb into the primary, loads products, then
times, alternating the bindings so the machine's noise falls on both:

* point reads (``Product.get`` by SKU) bound without replicas (the primary answers) and with
  one (the replica answers): the cost of choosing a replica and borrowing its connection;
* a write then a read of it, the read-your-writes path: one WAL-position query on the
  primary after each write, and the read from the primary until the replica has replayed it;
* a ``db_read_scope()`` of ten reads, on the primary and on the replica;
* and, without any query, what routing itself adds to a read: choosing the replica, and
  borrowing and returning the replica's pooled connection.

Both servers are on this machine, so the figures show pfdb's own overhead, not the network's.

    python benchmarks/replica_reads.py [--reads 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from pg_servers import TempPostgres  # noqa: E402

import pfdb  # noqa: E402
from pfdb import migrations  # noqa: E402
from pfdb.database import db_read_scope  # noqa: E402
from pfdb.models import Product  # noqa: E402

PRODUCTS = 1000


def point_reads(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        Product.get(Product.sku == f"B-{i % PRODUCTS:05d}")
    return (time.perf_counter() - start) / n


def write_then_read(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        sku = f"B-{i % PRODUCTS:05d}"
        Product.update(inventory_quantity=i).where(Product.sku == sku).execute()
        assert Product.get(Product.sku == sku).inventory_quantity == i
    return (time.perf_counter() - start) / n


def read_scopes(n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        with db_read_scope():
            for j in range(10):
                Product.get(Product.sku == f"B-{(i + j) % PRODUCTS:05d}")
    return (time.perf_counter() - start) / n


def routing_overhead(primary_url: str, replica_url: str, n: int = 20000) -> tuple[float, float]:
    """Seconds per read that routing adds, without the query: the choice, and the pool round."""
    database = pfdb.init_database(primary_url, replica_urls=replica_url)
    replicas = database.pfdb_replicas
    Product.select().count()  # measured once: the choice below uses what it learnt
    start = time.perf_counter()
    for _ in range(n):
        replicas.choose()
    choose = (time.perf_counter() - start) / n
    target = replicas.replicas[0]
    start = time.perf_counter()
    for _ in range(n):
        target.connect(reuse_if_open=True)
        target.close()
    borrow = (time.perf_counter() - start) / n
    pfdb.close_database()
    return choose, borrow


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with TempPostgres() as primary:
        replica = primary.replica()
        primary.sql("CREATE DATABASE shop")
        migrations.init(primary.url("shop"))
        with pfdb.db_session_scope():
            Product.insert_many(
                [{"sku": f"B-{i:05d}", "name": f"Product {i}", "price": "9.99"} for i in range(PRODUCTS)]
            ).execute()
        pfdb.close_database()
        primary.wait_for_replay()

        cases = [
            ("point read", point_reads, args.reads),
            ("write, then read it back", write_then_read, args.reads // 4),
            ("db_read_scope() of 10 reads", read_scopes, args.reads // 10),
        ]
        results: dict[tuple[str, str], list[float]] = {}
        for _ in range(args.rounds):
            for label, function, n in cases:
                for binding in ("primary only", "with a replica"):
                    extra = {"replica_urls": replica.url("shop")} if binding == "with a replica" else {}
                    pfdb.init_database(primary.url("shop"), **extra)
                    function(max(1, n // 10))  # warm the pools
                    results.setdefault((label, binding), []).append(function(n))
                    pfdb.close_database()
                    primary.wait_for_replay()
        overhead = routing_overhead(primary.url("shop"), replica.url("shop"))

    print(f"{'operation':<30} {'primary only':>14} {'with a replica':>16} {'ratio':>7}")
    for label, _, _ in cases:
        alone = statistics.median(results[(label, "primary only")])
        routed = statistics.median(results[(label, "with a replica")])
        print(f"{label:<30} {alone * 1e6:>11.0f} us {routed * 1e6:>13.0f} us {routed / alone:>6.2f}x")
    choose, borrow = overhead
    print(
        f"pfdb's own cost per routed read: choosing the replica {choose * 1e6:.1f} us, "
        f"borrowing and returning its pooled connection {borrow * 1e6:.1f} us"
    )


if __name__ == "__main__":
    main()
