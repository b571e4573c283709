"""Benchmark: import a 5,600-node taxonomy, import it again, and move a 1,000-node subtree.

Generates a deterministic Google-format taxonomy (ids up to ~73,000, depth 7, repeated
names such as "Accessories", a few non-ASCII ones) and times, on a temporary SQLite file
and a temporary PostgreSQL database (both created and removed here):

- the first import (everything created),
- an unchanged re-import (best of 3; it must write nothing),
- moving a subtree of 1,000 categories to another parent (best of 3; one UPDATE).

PostgreSQL comes from PFDB_BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/postgres,
used only to create and drop the benchmark database); it is skipped with a message when
unreachable. Run: python benchmarks/taxonomy_benchmark.py
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pfdb  # noqa: E402
from pfdb import migrations  # noqa: E402
from pfdb.categories import import_categories, move_category  # noqa: E402
from pfdb.config import mask_url  # noqa: E402
from pfdb.models import Category  # noqa: E402

PG_URL = os.environ.get("PFDB_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
TOTAL = 5600
SUBTREE = 1000  # nodes in the moved subtree, its root included
MAX_DEPTH = 7
WORDS = (
    "Accessories",
    "Parts",
    "Supplies",
    "Tools",
    "Kits",
    "Care",
    "Décor",
    "Boutonnières",
    "Sets",
    "Other",
    "Cases",
    "Covers",
    "Lights",
    "Storage",
    "Cleaning",
    "Bags",
    "Mounts",
    "Cables",
    "Toys",
    "Gear",
)


def generate_taxonomy(seed: int = 2019) -> tuple[list[str], str]:
    """Google-format lines, parents first, and the path of the 1,000-node subtree."""
    rng = random.Random(seed)
    lines: list[str] = ["# Google_Product_Taxonomy_Version: benchmark"]
    counter = iter(range(10**6))

    def add(path: tuple[str, ...]) -> tuple[str, ...]:
        lines.append(f"{1000 + next(counter) * 13} - {' > '.join(path)}")
        return path

    # The subtree to move: 1 + 9 + 90 + 900 = 1,000 nodes under the first root.
    first = add(("Root 00",))
    big = add((*first, "Big Subtree"))
    for i in range(9):
        a = add((*big, f"{WORDS[i]} {i}"))
        for j in range(10):
            b = add((*a, f"{WORDS[j]} {j}"))
            for k in range(10):
                add((*b, WORDS[(i + j + k) % len(WORDS)] + ("" if k < len(WORDS) else f" {k}")))
    # The rest: random widths, narrowing with depth, until TOTAL; one chain guarantees depth 7.
    chain = add(("Root 01",))
    for depth in range(1, MAX_DEPTH):
        chain = add((*chain, f"Level {depth}"))
    frontier = [(f"Root {r:02d}",) for r in range(2, 40)]
    for root in frontier:
        add(root)
    taken: dict[tuple[str, ...], set[str]] = {}
    while len(lines) - 1 < TOTAL:
        parent = frontier.pop(0) if rng.random() < 0.35 else rng.choice(frontier)
        if len(parent) >= MAX_DEPTH:
            continue
        used = taken.setdefault(parent, set())
        for _ in range(rng.randint(1, 6)):
            if len(lines) - 1 >= TOTAL:
                break
            name = rng.choice(WORDS) if rng.random() < 0.6 else f"{rng.choice(WORDS)} {rng.randint(1, 99)}"
            if name in used:
                continue
            used.add(name)
            frontier.append(add((*parent, name)))
    return lines, " > ".join(big)


def run(url: str, taxonomy: Path, subtree_path: str) -> dict[str, float]:
    pfdb.init_database(url)
    try:
        migrations.migrate(backup=False)
        start = time.perf_counter()
        first = import_categories(taxonomy)
        first_s = time.perf_counter() - start
        assert first.created == TOTAL, first
        again_s = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            again = import_categories(taxonomy)
            again_s = min(again_s, time.perf_counter() - start)
            assert (again.created, again.updated, again.unchanged) == (0, 0, TOTAL), again
        names = subtree_path.split(" > ")
        big = Category.get((Category.name == names[-1]) & (Category.level == len(names) - 1))
        assert big.descendants(include_self=True).count() == SUBTREE
        old_parent = big.parent_id
        new_parent = Category.get((Category.name == "Level 3") & (Category.level == 3))
        move_s = float("inf")
        updates = []
        database = pfdb.get_database()
        original = database.execute_sql

        def record(sql, params=None, *args, **kwargs):
            if sql.lstrip().upper().startswith("UPDATE"):
                updates.append(sql)
            return original(sql, params, *args, **kwargs)

        database.execute_sql = record
        try:
            for target in (new_parent.id, old_parent, new_parent.id):
                updates.clear()
                start = time.perf_counter()
                move_category(big.id, target)
                move_s = min(move_s, time.perf_counter() - start)
        finally:
            database.execute_sql = original
        moved = Category.get_by_id(big.id)
        deepest = moved.descendants().order_by(Category.level.desc()).first()
        assert deepest.level == moved.level + 3 and deepest.path.startswith(moved.path)
        return {
            "first import": first_s,
            "unchanged re-import": again_s,
            "move 1,000-node subtree": move_s,
            "UPDATE statements per move": len(updates),
        }
    finally:
        pfdb.close_database()


def postgres_database():
    """(url, drop) for a new, empty PostgreSQL database, or (None, reason)."""
    try:
        import psycopg2

        admin = psycopg2.connect(PG_URL, connect_timeout=3)
    except Exception as exc:  # no server: skip this backend
        return None, f"PostgreSQL skipped: {mask_url(PG_URL)} is unreachable ({str(exc).strip().splitlines()[0]})"
    admin.autocommit = True
    name = f"pfdb_bench_{uuid.uuid4().hex[:10]}"
    with admin.cursor() as cur:
        cur.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with admin.cursor() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()

    return (f"{PG_URL.rpartition('/')[0]}/{name}", drop), None


def main() -> int:
    lines, subtree_path = generate_taxonomy()
    results: dict[str, dict[str, float] | str] = {}
    with tempfile.TemporaryDirectory(prefix="pfdb-bench-") as tmp:
        taxonomy = Path(tmp) / "taxonomy.txt"
        taxonomy.write_text("\n".join(lines) + "\n", encoding="utf-8")
        depth = max(line.count(" > ") for line in lines[1:]) + 1
        print(f"taxonomy: {len(lines) - 1} categories, depth {depth}, subtree of {SUBTREE} to move")
        results["sqlite"] = run(f"sqlite:///{Path(tmp) / 'bench.db'}", taxonomy, subtree_path)
        pg, reason = postgres_database()
        if pg is None:
            results["postgresql"] = reason
        else:
            url, drop = pg
            try:
                results["postgresql"] = run(url, taxonomy, subtree_path)
            finally:
                drop()
    for backend, figures in results.items():
        if isinstance(figures, str):
            print(f"{backend:<11} {figures}")
            continue
        shown = ", ".join(f"{k} {v:.3f} s" if isinstance(v, float) else f"{k} {v}" for k, v in figures.items())
        print(f"{backend:<11} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
