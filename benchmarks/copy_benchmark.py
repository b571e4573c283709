"""``pfdb copy`` against pgloader: the same SQLite database into PostgreSQL, side by side.

Builds a pfdb SQLite database by importing the import benchmark's deterministic feed
(default 100,000 products, two images and a two-level category each), then copies it into
a new PostgreSQL database ``--repeat`` times with each tool, alternating:

* ``pfdb copy`` (``pfdb.transfer.copy_database``): creates and migrates the target, copies
  every table in one transaction (foreign keys and secondary indexes built after the load),
  verifies every table's count and checksum, commits;
* ``pgloader`` (Debian's package: ``apt-get install pgloader``), its defaults for a SQLite
  source: create the tables, load the data, create the indexes, reset the sequences. It
  verifies nothing and knows nothing of pfdb's schema versions.

Prints each run's seconds, the medians, and the median of the paired ratios with their
range (this shared machine drifts between runs; a pair drifts alike). Then, in a
subprocess, the peak memory growth (ru_maxrss) of a ``pfdb copy`` of ``--memory-rows``
products (default 1,000,000; ``--skip-memory`` to skip: building that source takes minutes).
Not a test: run it by hand.

    python benchmarks/copy_benchmark.py [--rows 100000] [--repeat 3] [--skip-memory]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import pfdb  # noqa: E402
from pfdb import migrations  # noqa: E402
from pfdb.transfer import copy_database  # noqa: E402

PG_URL = os.environ.get("PFDB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _import_benchmark():
    spec = importlib.util.spec_from_file_location("import_benchmark", ROOT / "benchmarks" / "import_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def build_source(folder: Path, rows: int) -> str:
    """A pfdb SQLite database holding ``rows`` products (with images and categories)."""
    feed = _import_benchmark().write_feed(folder / f"feed-{rows}.csv", rows)
    url = f"sqlite:///{folder / f'source-{rows}.db'}"
    migrations.init(url)
    from pfdb.feeds import import_products

    import_products(str(feed), batch_size=5000)
    pfdb.close_database()
    feed.unlink()
    return url


def _admin():
    import psycopg2

    conn = psycopg2.connect(PG_URL)
    conn.autocommit = True
    return conn


def new_pg_database(admin) -> tuple[str, str]:
    name = f"pfdb_copy_bench_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')
    base, _, _ = PG_URL.rpartition("/")
    return name, f"{base}/{name}"


def drop(admin, name: str) -> None:
    with admin.cursor() as cur:
        cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_pfdb(source: str, target: str) -> float:
    start = time.perf_counter()
    result = copy_database(source, target)
    seconds = time.perf_counter() - start
    assert all(t.ok for t in result.tables)
    return seconds


def run_pgloader(source: str, target: str) -> float:
    path = source.removeprefix("sqlite:///")
    start = time.perf_counter()
    done = subprocess.run(["pgloader", "--quiet", f"sqlite://{path}", target], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pgloader failed: {done.stderr.strip()[-500:]}")
    return seconds


def memory(source_rows: int, folder: Path, admin) -> dict:
    source = build_source(folder, source_rows)
    name, target = new_pg_database(admin)
    # VmHWM (the peak resident set of this process) rather than ru_maxrss, which Linux carries
    # over from the parent across exec and so would report the benchmark's own peak.
    code = (
        f"import sys; sys.path.insert(0, {str(ROOT)!r}); from pfdb.transfer import copy_database\n"
        "def hwm():\n"
        "    return int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])\n"
        "before = hwm(); copy_database(sys.argv[1], sys.argv[2]); print(before, hwm())"
    )
    try:
        out = subprocess.run([sys.executable, "-c", code, source, target], capture_output=True, text=True, check=True)
    finally:
        drop(admin, name)
    before, after = (int(v) for v in out.stdout.split())
    return {"rows": source_rows, "growth_mib": (after - before) / 1024, "peak_mib": after / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=100_000, help="products in the source (default 100,000)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tool (default 3)")
    parser.add_argument("--memory-rows", type=int, default=1_000_000, help="products of the memory run")
    parser.add_argument("--skip-memory", action="store_true", help="skip the memory run")
    args = parser.parse_args(argv)
    if shutil.which("pgloader") is None:
        print("pgloader is not installed: apt-get install pgloader", file=sys.stderr)
        return 2
    folder = Path(tempfile.mkdtemp(prefix="pfdb-copy-bench-"))
    admin = _admin()
    try:
        source = build_source(folder, args.rows)
        size = Path(source.removeprefix("sqlite:///")).stat().st_size
        print(f"source: {args.rows:,} products, {size / 2**20:.1f} MiB SQLite file; load {os.getloadavg()[0]:.1f}")
        times: dict[str, list[float]] = {"pfdb copy": [], "pgloader": []}
        ratios = []
        for n in range(args.repeat):
            order = ["pfdb copy", "pgloader"] if n % 2 == 0 else ["pgloader", "pfdb copy"]
            pair = {}
            for tool in order:
                name, target = new_pg_database(admin)
                try:
                    pair[tool] = (run_pfdb if tool == "pfdb copy" else run_pgloader)(source, target)
                finally:
                    drop(admin, name)
                times[tool].append(pair[tool])
            ratios.append(pair["pfdb copy"] / pair["pgloader"])
            print(
                f"run {n + 1}: pfdb copy {pair['pfdb copy']:.2f} s, pgloader {pair['pgloader']:.2f} s, "
                f"ratio {ratios[-1]:.2f}x; load {os.getloadavg()[0]:.1f}"
            )
        for tool, values in times.items():
            print(
                f"{tool:>10}: median {statistics.median(values):.2f} s "
                f"(range {min(values):.2f}-{max(values):.2f}; {args.rows / statistics.median(values):,.0f} products/s)"
            )
        print(
            f"pfdb copy vs pgloader: {statistics.median(ratios):.2f}x (range {min(ratios):.2f}-{max(ratios):.2f}); "
            "below 1 is faster; pfdb's figure includes its verification"
        )
        if not args.skip_memory:
            m = memory(args.memory_rows, folder, admin)
            print(
                f"memory: a copy of {m['rows']:,} products grew the peak RSS by {m['growth_mib']:.0f} MiB "
                f"(peak {m['peak_mib']:.0f} MiB)"
            )
    finally:
        admin.close()
        shutil.rmtree(folder, ignore_errors=True)
    print(f"(ru_maxrss of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
