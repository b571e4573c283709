"""Feed import speed and memory: pfdb's import against a hand-written baseline and idiomatic peewee.

Generates a deterministic pfdb CSV feed (default 100,000 rows, 2 images and a two-level
category each) and times, on SQLite (a temporary file) and on PostgreSQL (a temporary
database, created and dropped here; server from PFDB_BENCH_POSTGRES_URL):

* pfdb ``import_products``: a first load, a re-import with 10% of the prices changed, an
  unchanged re-import;
* the baseline a careful engineer writes by hand, reading the same file with ``csv``: on
  SQLite one prepared ``INSERT … ON CONFLICT (sku) DO UPDATE`` per batch through
  ``sqlite3.executemany``; on PostgreSQL psycopg2 ``COPY`` of the whole file into a
  temporary table and one ``INSERT … SELECT … ON CONFLICT (sku) DO UPDATE`` (images alike);
* idiomatic peewee: ``insert_many(...).on_conflict(...)`` in batches of 500.

Baseline and pfdb run ``--repeat`` times (default 3), alternating; each ratio printed is the
median of the ratios of runs taken side by side, with their range (this shared machine's
speed drifts between runs). All three write the same products, categories and images.
Then, in a subprocess, the peak
memory growth (ru_maxrss) of a pfdb import of 1,000,000 rows (``--memory-rows``; skip
with ``--skip-memory``). Not a test: run it by hand.

    python benchmarks/import_benchmark.py [--rows 100000] [--repeat 3] [--backends sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import hashlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pfdb  # noqa: E402
from pfdb import migrations  # noqa: E402
from pfdb.text import slugify  # noqa: E402

PG_URL = os.environ.get("PFDB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 2000
COLUMNS = [
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
    "images",
]


# -- the feed -----------------------------------------------------------------------------------
def gtin13(n: int) -> str:
    body = f"{n:012d}"[-12:]
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return body + str((10 - total % 10) % 10)


def feed_rows(rows: int, changed: bool = False) -> Iterator[list[str]]:
    for i in range(rows):
        cents = 100 + (i * 7919) % 90000
        if changed and i % 10 == 0:  # 10% of the prices change
            cents += 100
        price = f"{cents // 100}.{cents % 100:02d}"
        compare = f"{cents * 12 // 1000}.{cents * 12 // 10 % 100:02d}" if i % 3 == 0 else ""
        description = f'<p>Item {i}: "quoted", with a comma</p>' + ("\n<p>second line</p>" if i % 50 == 0 else "")
        yield [
            f"BENCH-{i:07d}",
            f"Product {i} – Größe {i % 7}",
            description,
            price,
            compare,
            "USD",
            f"Brand {i % 200}",
            gtin13(200000000000 + i),
            str(i % 100),
            f"Dept {i % 10} > Sub {i % 50}",
            f"https://img.example.com/{i}/1.jpg|https://img.example.com/{i}/2.jpg",
        ]


def write_feed(path: Path, rows: int, changed: bool = False) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(feed_rows(rows, changed))
    return path


# -- databases ----------------------------------------------------------------------------------
class Databases:
    """Fresh migrated databases per measurement: a copied SQLite file, or CREATE DATABASE … TEMPLATE."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.sqlite_template = workdir / "template.db"
        pfdb.init_database(f"sqlite:///{self.sqlite_template}")
        migrations.migrate(backup=False)
        pfdb.close_database()
        self.pg_template: str | None = None
        self.pg_created: list[str] = []
        self.pg_admin = None

    def _pg(self):
        if self.pg_admin is None:
            import psycopg2

            self.pg_admin = psycopg2.connect(PG_URL, connect_timeout=5)
            self.pg_admin.autocommit = True
            name = f"pfdb_bench_tmpl_{uuid.uuid4().hex[:8]}"
            self._create(name)
            pfdb.init_database(self.pg_url(name))
            migrations.migrate(backup=False)
            pfdb.close_database()
            self.pg_template = name
        return self.pg_admin

    def _create(self, name: str, template: str | None = None) -> None:
        with self.pg_admin.cursor() as cur:
            cur.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
        self.pg_created.append(name)

    @staticmethod
    def pg_url(name: str) -> str:
        return f"{PG_URL.rpartition('/')[0]}/{name}"

    def fresh(self, backend: str) -> str:
        if backend == "sqlite":
            path = self.workdir / f"bench-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(self.sqlite_template, path)
            return f"sqlite:///{path}"
        self._pg()
        name = f"pfdb_bench_{uuid.uuid4().hex[:8]}"
        self._create(name, self.pg_template)
        return self.pg_url(name)

    def drop_all(self) -> None:
        pfdb.close_database()
        if self.pg_admin is None:
            return
        with self.pg_admin.cursor() as cur:
            for name in reversed(self.pg_created):
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        self.pg_admin.close()


# -- pfdb -------------------------------------------------------------------------------------
def pfdb_import(url: str, feed: Path) -> dict:
    from pfdb.feeds import import_products

    pfdb.init_database(url)
    result = import_products(str(feed))
    pfdb.close_database()
    assert result.rejected == 0, result.rejects[:3]
    return {"created": result.created, "updated": result.updated, "unchanged": result.unchanged}


# -- the hand-written baseline ------------------------------------------------------------------
def _read(feed: Path) -> Iterator[list[str]]:
    with feed.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        yield from reader


class _Categories:
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
            slug = slugify(key)
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


def _product_tuple(row: list[str], category_id: int | None, now: str) -> tuple:
    sku, name, description, price, compare, currency, brand, gtin, qty, _, _ = row
    return (
        now,
        now,
        sku,
        name,
        description or None,
        price or None,
        compare or None,
        currency,
        brand or None,
        gtin or None,
        int(qty or 0),
        "draft",
        category_id,
        "pending",
    )


def baseline_sqlite(url: str, feed: Path) -> dict:
    import sqlite3

    conn = sqlite3.connect(url.split(":///", 1)[1], isolation_level=None)
    for pragma in ("journal_mode = wal", "synchronous = normal", "foreign_keys = 1", "cache_size = -65536"):
        conn.execute(f"PRAGMA {pragma}")
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(" ")
    cats = _Categories(lambda sql, params: conn.execute(sql, params).fetchall(), "?")
    upsert = (
        f"INSERT INTO products ({', '.join(PRODUCT_COLS)}) VALUES ({', '.join('?' * len(PRODUCT_COLS))}) "
        f"ON CONFLICT (sku) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in UPDATE_COLS)}"
    )
    images = (
        f"INSERT INTO product_images ({', '.join(IMAGE_COLS)}) VALUES "
        f"(?, ?, (SELECT id FROM products WHERE sku = ?), ?, ?, ?, ?) ON CONFLICT (product_id, content_hash) "
        f"DO NOTHING"
    )
    products, pictures, count = [], [], 0
    conn.execute("BEGIN")
    for row in _read(feed):
        products.append(_product_tuple(row, cats.id_for(row[9], now), now))
        for position, image in enumerate(row[10].split("|") if row[10] else ()):
            pictures.append(
                (now, now, row[0], image, hashlib.sha256(image.encode()).hexdigest(), position, position == 0)
            )
        if len(products) >= BATCH:
            conn.executemany(upsert, products)
            conn.executemany(images, pictures)
            conn.execute("COMMIT")
            conn.execute("BEGIN")
            count += len(products)
            products, pictures = [], []
    conn.executemany(upsert, products)
    conn.executemany(images, pictures)
    conn.execute("COMMIT")
    conn.close()
    return {"rows": count + len(products)}


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


def baseline_postgres(url: str, feed: Path) -> dict:
    import psycopg2

    conn = psycopg2.connect(url)
    cur = conn.cursor()
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None).isoformat(" ")

    def execute(sql, params):
        cur.execute(sql.replace("?", "%s"), params)
        return cur.fetchall() if cur.description else []

    cats = _Categories(execute, "%s")
    cur.execute(f"CREATE TEMP TABLE stage AS SELECT {', '.join(PRODUCT_COLS)} FROM products WITH NO DATA")
    cur.execute(
        "CREATE TEMP TABLE image_stage (created_at timestamp, updated_at timestamp, sku varchar, "
        "url varchar, content_hash varchar, position int, is_primary boolean)"
    )
    products, pictures = io.StringIO(), io.StringIO()
    count = 0
    for row in _read(feed):
        products.write(_copy_line(_product_tuple(row, cats.id_for(row[9], now), now)))
        for position, image in enumerate(row[10].split("|") if row[10] else ()):
            pictures.write(
                _copy_line(
                    (now, now, row[0], image, hashlib.sha256(image.encode()).hexdigest(), position, position == 0)
                )
            )
        count += 1
    products.seek(0)
    pictures.seek(0)
    cur.copy_expert(f"COPY stage ({', '.join(PRODUCT_COLS)}) FROM STDIN", products)
    cur.execute(
        f"INSERT INTO products ({', '.join(PRODUCT_COLS)}) SELECT {', '.join(PRODUCT_COLS)} FROM stage "
        f"ON CONFLICT (sku) DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in UPDATE_COLS)}"
    )
    cur.copy_expert("COPY image_stage FROM STDIN", pictures)
    cur.execute(
        f"INSERT INTO product_images ({', '.join(IMAGE_COLS)}) SELECT s.created_at, s.updated_at, p.id, "
        "s.url, s.content_hash, s.position, s.is_primary FROM image_stage s JOIN products p ON p.sku = s.sku "
        "ON CONFLICT (product_id, content_hash) DO NOTHING"
    )
    conn.commit()
    conn.close()
    return {"rows": count}


# -- idiomatic peewee ---------------------------------------------------------------------------
def peewee_import(url: str, feed: Path) -> dict:
    from pfdb.categories import CategoryResolver
    from pfdb.models import Product, ProductImage, image_hash
    from pfdb.models.fields import utcnow

    pfdb.init_database(url)
    database = pfdb.get_database()
    resolver = CategoryResolver()
    fields = [
        Product.created_at,
        Product.updated_at,
        Product.sku,
        Product.name,
        Product.description,
        Product.price,
        Product.compare_at_price,
        Product.currency,
        Product.brand,
        Product.gtin,
        Product.inventory_quantity,
        Product.status,
        Product.category,
        Product.shopify_sync_status,
    ]
    preserve = [
        Product.name,
        Product.description,
        Product.price,
        Product.compare_at_price,
        Product.currency,
        Product.brand,
        Product.gtin,
        Product.inventory_quantity,
        Product.category,
        Product.updated_at,
    ]
    count = 0

    def flush(batch):
        with database.atomic():
            for i in range(0, len(batch), 500):
                chunk = batch[i : i + 500]
                (
                    Product.insert_many([p for p, _ in chunk], fields=fields)
                    .on_conflict(conflict_target=[Product.sku], preserve=preserve)
                    .execute()
                )
                ids = dict(
                    Product.select(Product.sku, Product.id).where(Product.sku.in_([p[2] for p, _ in chunk])).tuples()
                )
                images = [
                    (now, now, ids[p[2]], url, image_hash(url), pos, pos == 0)
                    for p, urls in chunk
                    for pos, url in enumerate(urls)
                ]
                if images:
                    (
                        ProductImage.insert_many(
                            images,
                            fields=[
                                ProductImage.created_at,
                                ProductImage.updated_at,
                                ProductImage.product,
                                ProductImage.url,
                                ProductImage.content_hash,
                                ProductImage.position,
                                ProductImage.is_primary,
                            ],
                        )
                        .on_conflict_ignore()
                        .execute()
                    )

    with database.connection_context():
        batch = []
        now = utcnow()
        for row in _read(feed):
            sku, name, description, price, compare, currency, brand, gtin, qty, category, images = row
            with database.atomic():
                category_id = resolver.resolve(category) if category else None
            batch.append(
                (
                    (
                        now,
                        now,
                        sku,
                        name,
                        description or None,
                        price or None,
                        compare or None,
                        currency,
                        brand or None,
                        gtin or None,
                        int(qty or 0),
                        "draft",
                        category_id,
                        "pending",
                    ),
                    images.split("|") if images else [],
                )
            )
            if len(batch) >= BATCH:
                flush(batch)
                count += len(batch)
                batch = []
        flush(batch)
        count += len(batch)
    pfdb.close_database()
    return {"rows": count}


# -- running ------------------------------------------------------------------------------------
def timed(fn: Callable, *args) -> tuple[float, dict]:
    start = time.perf_counter()
    info = fn(*args)
    return time.perf_counter() - start, info


PHASES = ("first load", "10% changed", "unchanged")


def run_backend(backend: str, dbs: Databases, first: Path, changed: Path, rows: int, repeat: int) -> list[dict]:
    """Baseline and pfdb ``repeat`` times each, alternating, then idiomatic peewee once.

    Each figure is the median of its runs, and each ratio the median of the ratios of runs
    taken side by side: on a shared machine the speed drifts between runs, and a pair taken
    together drifts alike.
    """
    baseline = baseline_sqlite if backend == "sqlite" else baseline_postgres
    feeds = {"first load": first, "10% changed": changed, "unchanged": changed}
    runs: dict[str, list[dict[str, float]]] = {"baseline": [], "pfdb": [], "peewee": []}
    plan = [("baseline", baseline), ("pfdb", pfdb_import)] * repeat + [("peewee", peewee_import)]
    for method, fn in plan:
        url = dbs.fresh(backend)
        times = {}
        for phase in PHASES if method != "peewee" else PHASES[:2]:
            times[phase] = timed(fn, url, feeds[phase])[0]
            print(f"  {backend:<10} {method:<9} {phase:<18} {times[phase]:8.2f} s", file=sys.stderr, flush=True)
        runs[method].append(times)
    results = []
    for method, taken in runs.items():
        for phase in taken[0]:
            seconds = statistics.median(t[phase] for t in taken)
            if method == "peewee":
                ratios = [seconds / statistics.median(t[phase] for t in runs["baseline"])]
            else:
                ratios = [t[phase] / b[phase] for t, b in zip(taken, runs["baseline"], strict=True)]
            results.append(
                {
                    "backend": backend,
                    "method": method,
                    "phase": phase,
                    "seconds": seconds,
                    "rows_per_second": rows / seconds,
                    "runs": len(taken),
                    "vs_baseline": statistics.median(ratios),
                    "ratio_range": [min(ratios), max(ratios)],
                }
            )
    return results


MEMORY_CHILD = """
import json, resource, sys, tracemalloc
sys.path.insert(0, {root!r})
import pfdb
from pfdb.feeds import import_products
pfdb.init_database({url!r})
with pfdb.db_session_scope():  # warm up: imports, connection, model metadata
    pass
trace = {trace!r}
if trace:
    tracemalloc.start()
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = import_products({feed!r})
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
peak = tracemalloc.get_traced_memory()[1] if trace else None
print(json.dumps({{"before_kib": before, "after_kib": after, "tracemalloc_peak": peak, "created": result.created,
                  "seconds": result.seconds}}))
"""


def measure_memory(backend: str, dbs: Databases, feed: Path, trace: bool) -> dict:
    url = dbs.fresh(backend)
    code = MEMORY_CHILD.format(root=str(ROOT), url=url, feed=str(feed), trace=trace)
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    data["growth_mib"] = (data["after_kib"] - data["before_kib"]) / 1024
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows in the timed feed (default 100,000)")
    parser.add_argument("--memory-rows", type=int, default=1_000_000, help="rows of the memory run (default 1,000,000)")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory run (it takes minutes)")
    parser.add_argument("--tracemalloc", action="store_true", help="also report tracemalloc's peak (slow)")
    parser.add_argument("--backends", default="sqlite,postgresql", help="comma-separated: sqlite,postgresql")
    parser.add_argument("--repeat", type=int, default=3, help="runs of baseline and pfdb each (default 3)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="pfdb-bench-"))
    dbs = Databases(workdir)
    try:
        first = write_feed(workdir / "feed.csv", args.rows)
        changed = write_feed(workdir / "feed-changed.csv", args.rows, changed=True)
        results = []
        for backend in backends:
            results.extend(run_backend(backend, dbs, first, changed, args.rows, max(1, args.repeat)))
        memory = {}
        if not args.skip_memory:
            big = write_feed(workdir / "feed-memory.csv", args.memory_rows)
            for backend in backends:
                print(f"  {backend:<10} memory run: {args.memory_rows:,} rows …", file=sys.stderr, flush=True)
                memory[backend] = measure_memory(backend, dbs, big, args.tracemalloc)
    finally:
        dbs.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, memory, args)
    return 0


def report(results: list[dict], memory: dict, args) -> None:
    if args.json:
        print(json.dumps({"rows": args.rows, "results": results, "memory": memory}, indent=2, default=str))
        return
    print(
        f"\nfeed: {args.rows:,} rows (pfdb CSV, 2 images and a 2-level category per row); "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}; "
        f"medians of {max(1, args.repeat)} runs (peewee: 1)"
    )
    print(f"{'backend':<11}{'method':<10}{'phase':<14}{'seconds':>9}{'rows/s':>11}{'vs baseline':>13}  range")
    for r in results:
        low, high = r["ratio_range"]
        print(
            f"{r['backend']:<11}{r['method']:<10}{r['phase']:<14}{r['seconds']:>9.2f}{r['rows_per_second']:>11,.0f}"
            f"{r['vs_baseline']:>12.2f}x  {low:.2f}-{high:.2f}x"
        )
    for backend in sorted({r["backend"] for r in results}):
        pf = {r["phase"]: r for r in results if r["backend"] == backend and r["method"] == "pfdb"}
        ratios = {p: pf[p]["vs_baseline"] for p in ("first load", "10% changed")}
        faster = pf["unchanged"]["seconds"] < pf["first load"]["seconds"]
        ok = all(v <= 1.5 for v in ratios.values()) and faster
        print(
            f"targets {backend}: first load {ratios['first load']:.2f}x, 10% changed {ratios['10% changed']:.2f}x "
            f"(<= 1.5x); unchanged {pf['unchanged']['seconds']:.2f} s < first {pf['first load']['seconds']:.2f} s: "
            f"{'met' if ok else 'NOT met'}"
        )
    for backend, m in memory.items():
        line = (
            f"memory {backend}: {args.memory_rows:,} rows in {m['seconds']:.1f} s, peak RSS growth "
            f"{m['growth_mib']:.1f} MiB (target < 100 MB)"
        )
        if m.get("tracemalloc_peak") is not None:
            line += f", tracemalloc peak {m['tracemalloc_peak'] / 2**20:.1f} MiB"
        print(line)
    print(f"(ru_maxrss of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")


if __name__ == "__main__":
    sys.exit(main())
