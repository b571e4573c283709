"""Racing processes converge: concurrent imports, category resolutions and ``pfdb init`` (issue 10, §8).

Every race here is run by real processes started together through a gate file (each
imports pfdb first, then waits for the gate), against the real servers, and checked
against what is in the database afterwards, never against what the processes claim.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import processes
import pytest

import pfdb
from pfdb import Category, MigrationError, Product, migrations

ROOT = Path(__file__).resolve().parent.parent

# A child that loads pfdb, waits for the gate file, then runs the CLI in-process (as bin/pfdb does).
GATED_CLI = textwrap.dedent("""
    import os, sys, time
    from pfdb.cli import main
    gate = sys.argv[1]
    while not os.path.exists(gate):
        time.sleep(0.002)
    sys.exit(main(sys.argv[2:]))
""")

GATED_RESOLVE = textwrap.dedent("""
    import json, os, sys, time
    import pfdb
    from pfdb.categories import CategoryResolver
    pfdb.init_database(sys.argv[2])
    pfdb.db.connect()
    pfdb.db.execute_sql("SELECT 1")  # connected and warm before the gate opens
    resolver = CategoryResolver()
    gate = sys.argv[1]
    while not os.path.exists(gate):
        time.sleep(0.0005)
    # SQLite serialises writers: take the write lock up front, as a writing scope must there
    # (a deferred transaction that reads first cannot wait for the lock, see issue 10 §2).
    sqlite = pfdb.database.backend() == "sqlite"
    leaves = []
    for path in sys.argv[3:]:
        with pfdb.db.atomic("IMMEDIATE") if sqlite else pfdb.db_session_scope():
            leaves.append(resolver.resolve(path))
    print(json.dumps({"leaves": leaves, "created": len(resolver.created)}))
""")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT)  # this checkout's pfdb, also in the children
    env.pop("PFDB_DEBUG", None)
    return env


def race(
    tmp_path: Path, script: str, argvs: list[list[str]], timeout: float = 240
) -> list[subprocess.CompletedProcess]:
    """Start one process per argv, open the gate once all are up, and collect them all."""
    gate = tmp_path / f"gate-{uuid.uuid4().hex[:6]}"
    children = [
        processes.Popen(
            [sys.executable, "-c", script, str(gate), *argv],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for argv in argvs
    ]
    try:
        gate.touch()
        results = []
        for child in children:
            out, err = child.communicate(timeout=timeout)
            results.append(subprocess.CompletedProcess(child.args, child.returncode, out, err))
        return results
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


def sibling_duplicates() -> list[tuple]:
    rows = Category.select(Category.parent, Category.name).tuples()
    seen: dict[tuple, int] = {}
    for key in rows:
        seen[key] = seen.get(key, 0) + 1
    return [key for key, n in seen.items() if n > 1]


# -- two imports of one feed ------------------------------------------------------------------
ROWS = 3000
TOPS, SUBS = 6, 5


def write_feed(path: Path) -> set[str]:
    """A feed of ROWS products over TOPS x SUBS two-level category paths; returns the paths' nodes."""
    nodes: set[str] = set()
    lines = ["sku,name,price,category"]
    for i in range(ROWS):
        top, sub = f"cat{i % TOPS}", f"sub{(i // TOPS) % SUBS}"
        nodes |= {top, f"{top} > {sub}"}
        lines.append(f"R-{i:05d},Product {i},{i % 97}.50,{top} > {sub}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return nodes


def test_two_imports_of_one_feed_at_once_build_one_tree_and_count_the_truth(database_url, tmp_path):
    feed = tmp_path / "feed.csv"
    nodes = write_feed(feed)
    argv = ["--database-url", database_url, "import", str(feed), "--batch-size", "250", "--json"]
    results = race(tmp_path, GATED_CLI, [argv, argv])
    for result in results:
        assert result.returncode == 0, result.stderr
    reports = [json.loads(r.stdout) for r in results]

    pfdb.init_database(database_url)
    assert Product.select().count() == ROWS
    assert Category.select().count() == len(nodes) == TOPS * (SUBS + 1)
    assert sibling_duplicates() == []
    assert not Category.select().where(Category.slug.endswith("-2")).exists()  # no second tree
    # each product sits in its own path's leaf, in the one tree
    leaf = {c.id: c.breadcrumb() for c in Category.select()}
    placed = {p.sku: leaf[p.category_id] for p in Product.select(Product.sku, Product.category)}
    assert placed["R-00007"] == "cat1 > sub1"
    # what each process says it created adds up to what exists
    assert sum(r["created"] for r in reports) == ROWS
    assert sum(r["categories_created"] for r in reports) == len(nodes)
    for r in reports:
        assert r["created"] + r["updated"] + r["unchanged"] + r["rejected"] == ROWS


# -- eight resolutions of one new path --------------------------------------------------------
def test_eight_processes_resolving_one_new_path_build_one_tree(database_url, tmp_path):
    # The same new path, then nine more sharing its root: each is a fresh race for all eight.
    paths = ["Racing > Apparel > Clothing > Shirts", *(f"Racing > Apparel > Clothing{k} > Shirts" for k in range(9))]
    results = race(tmp_path, GATED_RESOLVE, [[database_url, *paths]] * 8)
    for result in results:
        assert result.returncode == 0, result.stderr
        assert "Error" not in result.stderr
    answers = [json.loads(r.stdout) for r in results]
    assert all(a["leaves"] == answers[0]["leaves"] for a in answers)  # all eight got the same categories

    pfdb.init_database(database_url)
    expected = 2 + 2 * len(paths)  # Racing, Apparel, then a Clothing and a Shirts per path
    assert Category.select().count() == expected
    assert sum(a["created"] for a in answers) == expected
    assert sibling_duplicates() == []
    shirts = Category.get_by_id(answers[0]["leaves"][0])
    assert shirts.breadcrumb() == paths[0] and shirts.level == 3
    assert shirts.path == "/" + "/".join(str(c.id) for c in [*shirts.ancestors(), shirts]) + "/"


def test_two_taxonomy_imports_at_once_build_one_tree(database_url, tmp_path):
    taxonomy = tmp_path / "taxonomy.txt"
    lines = [f"{100 + i} - Top{i % 4} > Mid{i}" for i in range(40)]
    taxonomy.write_text("\n".join([f"{i} - Top{i}" for i in range(4)] + lines) + "\n", encoding="utf-8")
    argv = ["--database-url", database_url, "import-categories", str(taxonomy), "--json"]
    results = race(tmp_path, GATED_CLI, [argv, argv])
    for result in results:
        assert result.returncode == 0, result.stderr
    reports = [json.loads(r.stdout) for r in results]
    assert sorted(r["created"] for r in reports) == [0, 44]  # the second found the first's tree
    pfdb.init_database(database_url)
    assert Category.select().count() == 44 and sibling_duplicates() == []


# -- the rule itself --------------------------------------------------------------------------
def test_same_named_siblings_are_refused_roots_included(db):
    from pfdb.categories import CategoryResolver

    shirts = Category.create(name="Shirts")
    with (
        pytest.raises(pfdb.DuplicateError, match="a Category named 'Shirts' already exists at the root"),
        pfdb.db_session_scope(),
    ):
        Category.create(name="Shirts", slug="shirts-again")  # a second root of that name
    Category.create(name="Shirts", slug="kids-shirts", parent=Category.create(name="Kids"))  # another parent: fine
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        assert resolver.resolve("Shirts") == shirts.id
    assert resolver.created == []


def test_migration_002_refuses_existing_duplicates_naming_them(empty_url):
    pfdb.init_database(empty_url)
    migrations.migrate("001", backup=False)
    with pfdb.db_session_scope():
        for slug in ("cat0", "cat0-2", "cat0-3"):
            Category.create(name="cat0", slug=slug)
        Category.create(name="only", slug="only")
    with pytest.raises(
        MigrationError,
        match=r"categories share a parent and a name \(1 group\): 'cat0' under the "
        r"root \(ids 1, 2, 3\)",
    ):
        migrations.migrate(backup=False)
    assert [m.name for m in migrations.status().applied] == ["001_initial"]
    # merged, it applies; rolled back, the rule is gone again
    from pfdb.categories import merge_duplicate_categories

    assert merge_duplicate_categories().merged == 2
    assert migrations.migrate(backup=False).applied == (
        "002_unique_category_names",
        "003_postgres_jsonb_timestamptz",
        "004_tenant_registry",
    )
    assert "categories_parent_id_name" in {i.name for i in pfdb.db.get_indexes("categories")}
    migrations.rollback("001")
    assert "categories_parent_id_name" not in {i.name for i in pfdb.db.get_indexes("categories")}
    assert not migrations.check().has_drift


def test_merging_twin_trees_keeps_every_product_in_one_tree(empty_url):
    """What two racing imports left before migration 002: cat0 > sub0 twice, products in both."""
    from pfdb.categories import merge_duplicate_categories

    pfdb.init_database(empty_url)
    migrations.migrate("001", backup=False)
    with pfdb.db_session_scope():
        first, second = Category.create(name="cat0"), Category.create(name="cat0", slug="cat0-2")
        subs = [Category.create(name="sub0", slug=f"sub0-{c.id}", parent=c) for c in (first, second)]
        Category.create(name="only-in-second", parent=second)
        for i, sub in enumerate(subs):
            Product.create(sku=f"T-{i}", name="twin", category=sub)
    result = merge_duplicate_categories()
    assert (result.merged, result.products_moved) == (2, 1)
    assert sibling_duplicates() == [] and Category.select().count() == 3
    keeper = Category.get(Category.name == "sub0")
    assert keeper.id == subs[0].id and keeper.path == f"/{first.id}/{keeper.id}/"
    assert {p.category_id for p in Product.select()} == {keeper.id}
    assert Category.get(Category.name == "only-in-second").breadcrumb() == "cat0 > only-in-second"
    assert merge_duplicate_categories().merged == 0
    migrations.migrate(backup=False)


# -- pfdb init on a missing PostgreSQL database ------------------------------------------------
@pytest.mark.postgres
def test_four_inits_at_once_on_a_missing_postgres_database_all_succeed(pg_server, tmp_path):
    from conftest import pg_url

    name = f"pfdb_test_init_{uuid.uuid4().hex[:10]}"
    url = pg_url(name)
    try:
        results = race(tmp_path, GATED_CLI, [["--database-url", url, "init", "--json"]] * 4)
        for result in results:
            assert result.returncode == 0, result.stderr
            assert result.stderr == ""
        reports = [json.loads(r.stdout) for r in results]
        assert sum(r["created"] for r in reports) == 1  # exactly one of them created it
        pfdb.init_database(url)
        assert [m.name for m in migrations.status().applied] == list(migrations.migration_names())
    finally:
        pfdb.close_database()
        pg_server.release(name)  # dropped in the background: a DROP waits for a checkpoint
