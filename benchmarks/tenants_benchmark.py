"""``pfdb migrate --all-tenants``: how its time grows with the number of tenants.

For each count of empty tenants (default 10, 100 and 500; ``--quick``: 5, 20 and 50), on
each backend, a new main database is made and that many tenants created
(``pfdb.tenants.create``), then ``pfdb.tenants.migrate_all`` (what ``pfdb migrate
--all-tenants`` calls) is timed twice:

* **up to date**: nothing pending, every tenant checked (its history read under its lock);
* **one pending**: a copy of the migrations with a ``005`` that adds a table, applied to the
  main database and every tenant (backups off, as for empty tenants they hold nothing).

Prints seconds and milliseconds per tenant for each, and each per-tenant time as a ratio to
the smallest count's, measured in this one run (the machine is shared and noisy). Also the
time to create one tenant. ``--parallel N`` also times the pending run with N workers.
Not a test: run it by hand.

    python benchmarks/tenants_benchmark.py [--quick] [--backend sqlite|postgresql|both] [--parallel 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pfdb  # noqa: E402
from pfdb import migrations, tenants  # noqa: E402

PG_URL = os.environ.get("PFDB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
PENDING = """
def migrate(migrator, database, *, fake=False):
    migrator.sql("CREATE TABLE bench_added (id integer)")


def rollback(migrator, database, *, fake=False):
    migrator.sql("DROP TABLE bench_added")
"""


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def run(backend: str, count: int, folder: Path, parallel: int) -> dict[str, float]:
    os.environ.pop("PFDB_MIGRATIONS_DIR", None)
    name = f"pfdb_bench_tenants_{uuid.uuid4().hex[:8]}"
    if backend == "sqlite":
        url = f"sqlite:///{folder / name}.db"
    else:
        _admin(f"CREATE DATABASE {name}")
        url = PG_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        migrations.init(url)
        pfdb.init_database(url, migration_backup_before_upgrade=False)
        start = time.perf_counter()
        for i in range(count):
            tenants.create(f"t{i:04d}")
        created = time.perf_counter() - start
        start = time.perf_counter()
        result = tenants.migrate_all()
        up_to_date = time.perf_counter() - start
        assert result.ok and all(not o.applied for o in result.outcomes)
        pending_dir = folder / f"migrations-{name}"
        shutil.copytree(ROOT / "migrations", pending_dir, ignore=shutil.ignore_patterns("__pycache__"))
        (pending_dir / "005_bench_added.py").write_text(PENDING)
        os.environ["PFDB_MIGRATIONS_DIR"] = str(pending_dir)
        start = time.perf_counter()
        result = tenants.migrate_all(backup=False)
        pending = time.perf_counter() - start
        assert result.ok and all(o.applied == ("005_bench_added",) for o in result.outcomes), result.failed
        figures = {"create": created, "up_to_date": up_to_date, "pending": pending}
        if parallel > 1:
            for outcome in result.outcomes:  # roll every tenant back to time the same work again
                with pfdb.tenant(outcome.name) if outcome.name != "(main)" else _nothing():
                    migrations.rollback("004", backup=False, destructive_ok=True)
            start = time.perf_counter()
            result = tenants.migrate_all(backup=False, parallel=parallel)
            figures["pending_parallel"] = time.perf_counter() - start
            assert result.ok
        return figures
    finally:
        pfdb.close_database()
        os.environ.pop("PFDB_MIGRATIONS_DIR", None)
        if backend == "postgresql":
            _admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5, 20 and 50 tenants")
    parser.add_argument("--counts", default="", help="comma-separated tenant counts (default 10,100,500)")
    parser.add_argument("--backend", default="both", choices=("sqlite", "postgresql", "both"))
    parser.add_argument("--parallel", type=int, default=1, help="also time the pending run with N workers")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c] or ([5, 20, 50] if args.quick else [10, 100, 500])
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    folder = Path(tempfile.mkdtemp(prefix="pfdb-bench-tenants-"))
    try:
        for backend in backends:
            print(f"\n{backend}: migrate --all-tenants, empty tenants")
            header = f"{'tenants':>8} {'create/tenant':>14} {'up to date':>11} {'per tenant':>11} {'ratio':>6} "
            header += f"{'1 pending':>10} {'per tenant':>11} {'ratio':>6}"
            if args.parallel > 1:
                header += f" {'parallel ' + str(args.parallel):>11} {'speed-up':>9}"
            print(header)
            base = None
            for count in counts:
                f = run(backend, count, folder, args.parallel)
                n = count + 1  # the main database is migrated too
                per = (f["up_to_date"] / n * 1000, f["pending"] / n * 1000)
                base = base or per
                line = (
                    f"{count:>8} {f['create'] / count * 1000:>11.1f} ms {f['up_to_date']:>9.2f} s "
                    f"{per[0]:>8.1f} ms {per[0] / base[0]:>5.2f}x {f['pending']:>8.2f} s {per[1]:>8.1f} ms "
                    f"{per[1] / base[1]:>5.2f}x"
                )
                if args.parallel > 1:
                    line += f" {f['pending_parallel']:>9.2f} s {f['pending'] / f['pending_parallel']:>8.2f}x"
                print(line, flush=True)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
