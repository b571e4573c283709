"""Feed import speed and memory: the whole ``pfdb import`` process against hand-written raw-driver code.

Generates a deterministic pfdb CSV feed (default 100,000 rows, two images and a two-level
category each) and the same feed without its images column (products only), and times, on
SQLite (a temporary file) and on PostgreSQL (a temporary database, created and dropped
here; server from PFDB_BENCH_POSTGRES_URL), each phase: a first load, a re-import with 10%
of the prices changed, an unchanged re-import.

* pfdb: the whole ``python -m pfdb import FEED`` process (start-up, Job and SyncHistory included);
* raw: ``benchmarks/raw_import.py``, the code a careful engineer writes by hand, also its own
  process: ``csv`` and ``sqlite3.executemany`` of one prepared ``INSERT … ON CONFLICT`` on
  SQLite; psycopg2 ``COPY`` into a temporary table and one ``INSERT … SELECT … ON CONFLICT``
  on PostgreSQL. It validates nothing and rewrites every row.

Raw and pfdb run ``--repeat`` times (default 3) on their own database each, phase by phase
side by side (raw, then pfdb, then the next phase); each ratio printed is the median of the
ratios of the pairs, with their range (this shared machine's speed drifts between runs, a
pair drifts alike). ``--peewee`` adds idiomatic peewee (``insert_many().on_conflict()`` in
batches of 500, in process) once. Then, in a subprocess, the peak memory growth
(ru_maxrss) of a pfdb import of 1,000,000 rows (``--memory-rows``; skip with
``--skip-memory``). ``--quick``: 10,000 rows, one run, no memory run (a smoke run). Not a
test: run it by hand.

    python benchmarks/import_benchmark.py [--rows 100000] [--repeat 3] [--backends sqlite,postgresql]
    python benchmarks/import_benchmark.py --quick
"""

from __future__ import annotations

import argparse
import csv
import json
import os
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
RAW = ROOT / "benchmarks" / "raw_import.py"
sys.path.insert(0, str(ROOT))

import pfdb  # noqa: E402
from pfdb import migrations  # noqa: E402

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


def write_feed(path: Path, rows: int, changed: bool = False, images: bool = True) -> Path:
    """The feed; ``images=False``: the products-only case, the same rows without their images column."""
    width = len(COLUMNS) if images else len(COLUMNS) - 1
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS[:width])
        writer.writerows(row[:width] for row in feed_rows(rows, changed))
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


# -- the two processes -------------------------------------------------------------------------
def _env(url: str) -> dict:
    env = dict(os.environ, DATABASE_URL=url, PYTHONPATH=str(ROOT))
    env.pop("MIGRATION_AUTO_UPGRADE", None)
    # pfdb as installed: pip writes bytecode; without it every process compiles pfdb's modules
    # again (0.15-0.2 s here). ``warm_up`` writes it before the first timed run.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def warm_up(url: str) -> None:
    """Write pfdb's bytecode (as pip install does), so the timed runs start as an installed pfdb does."""
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(ROOT / "pfdb")], env=_env(url), capture_output=True, check=False
    )


def pfdb_process(url: str, feed: Path) -> dict:
    """``pfdb import FEED --json`` as its own process; its counts."""
    out = subprocess.run(
        [sys.executable, "-m", "pfdb", "import", str(feed), "--json"],
        env=_env(url),
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"pfdb import failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    result = json.loads(out.stdout)
    assert result["rejected"] == 0, result["rejects"][:3]
    return {k: result[k] for k in ("created", "updated", "unchanged")}


def raw_process(url: str, feed: Path) -> dict:
    """``benchmarks/raw_import.py URL FEED`` as its own process."""
    out = subprocess.run([sys.executable, str(RAW), url, str(feed)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"raw import failed ({out.returncode}): {out.stderr.strip()[-500:]}")
    return {"rows": int(out.stdout.strip())}


def _read(feed: Path) -> Iterator[list[str]]:
    with feed.open(encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        next(reader)
        yield from reader


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
CASES = ("products only", "with images")
EXPECTED = {"first load": "created", "10% changed": "updated", "unchanged": "unchanged"}


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "low": min(values), "high": max(values)}


def run_case(backend: str, case: str, dbs: Databases, feeds: dict, rows: int, repeat: int) -> list[dict]:
    """Raw and pfdb ``repeat`` times, each on its own fresh database, phase by phase side by side."""
    runs: dict[str, dict[str, list[float]]] = {m: {p: [] for p in PHASES} for m in ("raw", "pfdb")}
    warm_up(dbs.fresh(backend))
    for _ in range(repeat):
        urls = {"raw": dbs.fresh(backend), "pfdb": dbs.fresh(backend)}
        for phase in PHASES:
            for method, fn in (("raw", raw_process), ("pfdb", pfdb_process)):
                seconds, info = timed(fn, urls[method], feeds[phase])
                if method == "pfdb" and phase != "first load":
                    changed = info["updated"]
                    assert changed == (rows // 10 if phase == "10% changed" else 0), info
                runs[method][phase].append(seconds)
                print(
                    f"  {backend:<10} {case:<13} {method:<5} {phase:<12} {seconds:7.2f} s  load {os.getloadavg()[0]:.1f}",
                    file=sys.stderr,
                    flush=True,
                )
    results = []
    for phase in PHASES:
        raw, pf = runs["raw"][phase], runs["pfdb"][phase]
        results.append(
            {
                "backend": backend,
                "case": case,
                "phase": phase,
                "runs": len(pf),
                "raw": _spread(raw),
                "pfdb": _spread(pf),
                "pfdb_rows_per_second": rows / statistics.median(pf),
                "ratio": _spread([p / r for p, r in zip(pf, raw, strict=True)]),
            }
        )
    return results


def run_peewee(backend: str, dbs: Databases, feeds: dict) -> dict:
    """Idiomatic peewee, in process, once: first load and 10% changed (for scale, not for pairing)."""
    url = dbs.fresh(backend)
    return {phase: timed(peewee_import, url, feeds[phase])[0] for phase in PHASES[:2]}


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
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if out.returncode != 0:  # reported beside the timings, which are not lost with it
        return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1][:300]}
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
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated: products only,with images")
    parser.add_argument("--repeat", type=int, default=3, help="runs of raw and pfdb each (default 3)")
    parser.add_argument("--peewee", action="store_true", help="also time idiomatic peewee once")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 10,000 rows, one run, no memory run")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.repeat, args.skip_memory = 10_000, 1, True
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    workdir = Path(tempfile.mkdtemp(prefix="pfdb-bench-"))
    dbs = Databases(workdir)
    load_before = os.getloadavg()
    try:
        feeds = {}
        for case in cases:
            images = case == "with images"
            first = write_feed(workdir / f"feed-{images}.csv", args.rows, images=images)
            changed = write_feed(workdir / f"feed-{images}-changed.csv", args.rows, changed=True, images=images)
            feeds[case] = {"first load": first, "10% changed": changed, "unchanged": changed}
        results, peewee = [], {}
        for backend in backends:
            for case in cases:
                results.extend(run_case(backend, case, dbs, feeds[case], args.rows, max(1, args.repeat)))
            if args.peewee and "with images" in feeds:
                peewee[backend] = run_peewee(backend, dbs, feeds["with images"])
        memory = {}
        if not args.skip_memory:
            big = write_feed(workdir / "feed-memory.csv", args.memory_rows)
            for backend in backends:
                print(f"  {backend:<10} memory run: {args.memory_rows:,} rows …", file=sys.stderr, flush=True)
                memory[backend] = measure_memory(backend, dbs, big, args.tracemalloc)
    finally:
        dbs.drop_all()
        shutil.rmtree(workdir, ignore_errors=True)
    report(results, peewee, memory, args, (load_before, os.getloadavg()))
    return 0


TARGET = 1.2  # pfdb at most this many times the raw path, every phase


def report(results: list[dict], peewee: dict, memory: dict, args, loads: tuple) -> None:
    if args.json:
        print(
            json.dumps(
                {"rows": args.rows, "results": results, "peewee": peewee, "memory": memory, "load": loads},
                indent=2,
                default=str,
            )
        )
        return
    print(
        f"\nfeed: {args.rows:,} rows of pfdb CSV (a 2-level category each; 'with images': 2 images each); "
        f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {loads[0][0]:.1f} before, "
        f"{loads[1][0]:.1f} after; whole processes, medians of {max(1, args.repeat)} paired runs (range)"
    )
    print(f"{'backend':<11}{'case':<15}{'phase':<13}{'raw s':>16}{'pfdb s':>18}{'pfdb/raw':>20}")

    def cell(s: dict, fmt: str) -> str:
        return f"{s['median']:{fmt}} ({s['low']:{fmt}}-{s['high']:{fmt}})"

    for r in results:
        print(
            f"{r['backend']:<11}{r['case']:<15}{r['phase']:<13}{cell(r['raw'], '.2f'):>16}{cell(r['pfdb'], '.2f'):>18}"
            f"{cell(r['ratio'], '.2f'):>19}x"
        )
    for backend, times in peewee.items():
        print(f"peewee {backend} (with images, once): " + ", ".join(f"{p} {s:.2f} s" for p, s in times.items()))
    met = [r for r in results if r["ratio"]["median"] <= TARGET]
    print(f"target (every phase within {TARGET}x of raw, by the median ratio): {len(met)} of {len(results)} met")
    for r in results:
        if r["ratio"]["median"] > TARGET:
            print(f"  not met: {r['backend']} {r['case']} {r['phase']} {r['ratio']['median']:.2f}x")
    for backend in sorted({r["backend"] for r in results}):
        for case in sorted({r["case"] for r in results}):
            pf = {r["phase"]: r["pfdb"]["median"] for r in results if r["backend"] == backend and r["case"] == case}
            if pf:
                faster = pf["unchanged"] < pf["first load"]
                print(
                    f"{backend} {case}: unchanged {pf['unchanged']:.2f} s vs first load {pf['first load']:.2f} s: "
                    f"{'faster' if faster else 'NOT faster'}"
                )
    for backend, m in memory.items():
        if "error" in m:
            print(f"memory {backend}: the run failed: {m['error']}")
            continue
        line = (
            f"memory {backend}: {args.memory_rows:,} rows in {m['seconds']:.1f} s, peak RSS growth "
            f"{m['growth_mib']:.1f} MiB (target < 100 MB)"
        )
        if m.get("tracemalloc_peak") is not None:
            line += f", tracemalloc peak {m['tracemalloc_peak'] / 2**20:.1f} MiB"
        print(line)


if __name__ == "__main__":
    sys.exit(main())
