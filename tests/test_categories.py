"""Category trees: the resolver, taxonomy import, moves, deletes and the nested tree, on both backends."""

from __future__ import annotations

import pytest

import pfdb
from pfdb.categories import CategoryResolver, slug_candidates, split_path
from pfdb.errors import ValidationError
from pfdb.models import Category


class QueryLog:
    """Records every SQL statement the bound database executes (peewee's own hook point)."""

    def __init__(self, database):
        self.statements: list[str] = []
        self._database = database
        self._original = database.execute_sql

    def __enter__(self):
        def record(sql, params=None, *args, **kwargs):
            self.statements.append(sql)
            return self._original(sql, params, *args, **kwargs)

        self._database.execute_sql = record
        return self

    def __exit__(self, *exc):
        self._database.execute_sql = self._original

    def count(self, prefix: str = "") -> int:
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(prefix.upper()))


def node(slug: str) -> Category:
    return Category.get(Category.slug == slug)


# -- resolver ------------------------------------------------------------------------------
def test_split_path_accepts_strings_and_lists():
    assert split_path("Apparel > Clothing >  Shirts ") == ("Apparel", "Clothing", "Shirts")
    assert split_path(["Apparel", " Clothing"]) == ("Apparel", "Clothing")
    for bad in ("", "A >  > B", "> A", "A >", []):
        with pytest.raises(ValidationError):
            split_path(bad)


def test_slug_candidates_order():
    it = slug_candidates("Accessories", "clothing", "166")
    assert [next(it) for _ in range(5)] == [
        "accessories",
        "clothing-accessories",
        "clothing-accessories-166",
        "clothing-accessories-2",
        "clothing-accessories-3",
    ]
    assert next(slug_candidates("!!!")) == "category"


def test_resolver_creates_levels_with_paths_and_unique_slugs(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        leaf = resolver.resolve("Apparel > Clothing > Accessories")
        other = resolver.resolve(["Apparel", "Accessories"])
    shirt = Category.get_by_id(leaf)
    assert shirt.breadcrumb() == "Apparel > Clothing > Accessories"
    assert shirt.level == 2
    apparel, clothing = shirt.ancestors()
    assert shirt.path == f"/{apparel.id}/{clothing.id}/{shirt.id}/"
    assert shirt.slug == "accessories"
    assert Category.get_by_id(other).slug == "apparel-accessories"
    assert len(resolver.created) == 4


def test_resolver_finds_existing_and_caches(db):
    with pfdb.db_session_scope():
        first = CategoryResolver().resolve("Apparel > Clothing > Shirts")
    resolver = CategoryResolver()
    with QueryLog(pfdb.db.obj) as log:
        assert resolver.resolve("Apparel > Clothing > Shirts") == first
        assert log.count() == 1  # one SELECT for the whole uncached path
        for _ in range(50):
            assert resolver.resolve(["Apparel", "Clothing", "Shirts"]) == first
            resolver.resolve("Apparel > Clothing")
        assert log.count() == 1  # cached: no further query
    assert resolver.created == []
    assert Category.select().count() == 3


def test_resolver_one_select_for_an_existing_prefix_then_creates(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        resolver.resolve("A > B")
        with QueryLog(pfdb.db.obj) as log:
            resolver.resolve("A > B > C")
    # prefix cached: a lookup, a slug check, the INSERT and the path UPDATE (+ savepoint statements)
    assert log.count("SELECT") == 2
    assert log.count("INSERT") == 1
    assert log.count("UPDATE") == 1


def test_resolve_slug_or_path(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        shirts = resolver.resolve("Apparel > Shirts")
        assert resolver.resolve_slug_or_path("shirts") == shirts
        assert resolver.resolve_slug_or_path("Apparel > Shirts") == shirts
        assert resolver.resolve_slug_or_path("Apparel>Shirts") == shirts
        hats = resolver.resolve_slug_or_path("Hats")  # no such slug: a one-level path
    assert Category.get_by_id(hats).parent_id is None
    assert Category.get_by_id(hats).slug == "hats"


def test_resolver_inside_a_rolled_back_transaction_leaves_nothing(db):
    resolver = CategoryResolver()
    with pytest.raises(RuntimeError):
        with pfdb.db_session_scope():
            resolver.resolve("Apparel > Clothing")
            raise RuntimeError("the caller's batch failed")
    assert Category.select().count() == 0


def test_resolver_within_a_caller_transaction_with_other_writes(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        from pfdb.models import Product

        for i in range(5):
            Product.create(sku=f"S{i}", name="shirt", category=resolver.resolve("Apparel > Shirts"))
    assert Category.select().count() == 2
    assert {p.category.slug for p in Product.select()} == {"shirts"}


def test_resolver_normalises_names(db):
    resolver = CategoryResolver()
    with pfdb.db_session_scope():
        a = resolver.resolve("Boutonnie\u0300re  Pins")  # decomposed accent, double space
        b = CategoryResolver().resolve("Boutonnière Pins")
    assert a == b
    assert Category.get_by_id(a).slug == "boutonniere-pins"


def test_resolver_rejects_bad_names(db):
    resolver = CategoryResolver()
    for bad, why in (
        ("Apparel >  > Shirts", "empty name"),
        ("Apparel > Sh\x00irts", "control character"),
        ("A > " + "x" * 256, "longer than 255"),
        ("", "empty name"),
    ):
        with pytest.raises(ValidationError, match=why):
            resolver.resolve(bad)
    with pytest.raises(ValidationError, match="no name at all"):
        resolver.resolve([])
    assert Category.select().count() == 0


def test_resolver_clear_forgets_ids_after_a_rollback(db):
    resolver = CategoryResolver()
    with pytest.raises(RuntimeError):
        with pfdb.db_session_scope():
            resolver.resolve("A > B")
            raise RuntimeError
    resolver.clear()
    with pfdb.db_session_scope():
        leaf = resolver.resolve("A > B")
    assert Category.get_by_id(leaf).breadcrumb() == "A > B"


# -- import-categories ---------------------------------------------------------------------
from pfdb.categories import (  # noqa: E402
    category_tree,
    delete_category,
    import_categories,
    move_category,
)
from pfdb.errors import FeedError, NotFoundError  # noqa: E402
from pfdb.models import Product  # noqa: E402

WITH_IDS = """\
# Google_Product_Taxonomy_Version: 2019-07-10
1 - Apparel & Accessories
2 - Apparel & Accessories > Clothing
3 - Apparel & Accessories > Clothing > Accessories
4 - Apparel & Accessories > Jewelry
5 - Apparel & Accessories > Jewelry > Accessories
6 - Apparel & Accessories > Clothing > Outerwear
7 - Apparel & Accessories > Clothing > Outerwear > Coats & Jackets
70000 - Apparel & Accessories > Jewelry > Boutonnières

# a comment between lines
8 - Electronics
9 - Electronics > Accessories
"""

PLAIN = """\
# plain paths, ancestors implied
Home & Garden > Kitchen > 2-in-1 Tools
Home & Garden > Décor
Home & Garden > Kitchen
"""


def write(tmp_path, text: str, name: str = "taxonomy.txt", *, bom: bool = False, crlf: bool = False):
    data = text.replace("\n", "\r\n") if crlf else text
    raw = ("\ufeff" if bom else "").encode() + data.encode("utf-8")
    path = tmp_path / name
    path.write_bytes(raw)
    return path


def tree_rows() -> dict[str, tuple]:
    """breadcrumb -> (external_id, level, path, slug, updated_at) for every category."""
    rows = {}
    for c in Category.select():
        rows[c.breadcrumb()] = (c.external_id, c.level, c.path, c.slug, c.updated_at)
    return rows


def check_tree_invariants():
    """Every path is the parent's path plus the own id; every level is the parent's plus one."""
    cats = {c.id: c for c in Category.select()}
    for c in cats.values():
        if c.parent_id is None:
            assert (c.path, c.level) == (f"/{c.id}/", 0), c
        else:
            parent = cats[c.parent_id]
            assert (c.path, c.level) == (f"{parent.path}{c.id}/", parent.level + 1), c


@pytest.mark.parametrize("bom,crlf", [(False, False), (True, True)])
def test_import_google_format_builds_the_tree(db, tmp_path, bom, crlf):
    result = import_categories(write(tmp_path, WITH_IDS, bom=bom, crlf=crlf))
    assert result.as_dict() == {"created": 10, "updated": 0, "unchanged": 0, "total": 10, "dry_run": False}
    check_tree_invariants()
    coats = Category.get(Category.external_id == "7")
    assert coats.breadcrumb() == "Apparel & Accessories > Clothing > Outerwear > Coats & Jackets"
    assert coats.level == 3
    assert Category.get(Category.external_id == "70000").name == "Boutonnières"
    # three "Accessories", three different slugs, each from the rule
    slugs = {c.breadcrumb(): c.slug for c in Category.select().where(Category.name == "Accessories")}
    assert slugs == {
        "Apparel & Accessories > Clothing > Accessories": "accessories",
        "Apparel & Accessories > Jewelry > Accessories": "jewelry-accessories",
        "Electronics > Accessories": "electronics-accessories",
    }
    assert Category.get(Category.external_id == "70000").slug == "boutonnieres"
    assert Category.get(Category.external_id == "1").slug == "apparel-accessories"


def test_import_plain_paths_with_implied_ancestors(db, tmp_path):
    result = import_categories(write(tmp_path, PLAIN))
    assert (result.created, result.total) == (4, 4)
    check_tree_invariants()
    tool = Category.get(Category.name == "2-in-1 Tools")
    assert tool.breadcrumb() == "Home & Garden > Kitchen > 2-in-1 Tools"
    assert tool.external_id is None
    assert Category.get(Category.name == "Décor").slug == "decor"


def test_reimport_changes_nothing(db, tmp_path):
    path = write(tmp_path, WITH_IDS)
    import_categories(path)
    before = tree_rows()
    with QueryLog(pfdb.db.obj) as log:
        result = import_categories(path)
    assert result.as_dict() == {"created": 0, "updated": 0, "unchanged": 10, "total": 10, "dry_run": False}
    assert tree_rows() == before  # no updated_at bump, no slug change
    assert not [s for s in log.statements if s.lstrip().upper().startswith(("INSERT", "UPDATE", "DELETE"))]


def test_plain_file_matches_ids_file_and_ids_are_adopted(db, tmp_path):
    plain = "\n".join(line.split(" - ", 1)[1] for line in WITH_IDS.splitlines() if " - " in line)
    assert import_categories(write(tmp_path, plain, "plain.txt")).created == 10
    result = import_categories(write(tmp_path, WITH_IDS))
    assert (result.created, result.updated, result.unchanged) == (0, 10, 0)  # each gained its id
    assert Category.get(Category.external_id == "5").breadcrumb() == "Apparel & Accessories > Jewelry > Accessories"
    assert import_categories(write(tmp_path, plain, "plain.txt")).unchanged == 10


def test_rename_and_move_by_external_id_subtree_follows(db, tmp_path):
    import_categories(write(tmp_path, WITH_IDS))
    slugs = {c.external_id: c.slug for c in Category.select()}
    moved = WITH_IDS.replace(
        "6 - Apparel & Accessories > Clothing > Outerwear\n7 - Apparel & Accessories > Clothing > Outerwear > Coats & Jackets",
        "6 - Apparel & Accessories > Jewelry > Outer Wear\n7 - Apparel & Accessories > Jewelry > Outer Wear > Coats & Jackets",
    )
    result = import_categories(write(tmp_path, moved, "v2.txt"))
    assert (result.created, result.updated, result.unchanged) == (0, 1, 9)
    check_tree_invariants()
    outer = Category.get(Category.external_id == "6")
    assert outer.breadcrumb() == "Apparel & Accessories > Jewelry > Outer Wear"
    assert Category.get(Category.external_id == "7").parent_id == outer.id
    assert {c.external_id: c.slug for c in Category.select()} == slugs  # slugs never change
    assert import_categories(write(tmp_path, moved, "v2.txt")).unchanged == 10


def test_rename_in_place_touches_only_the_renamed(db, tmp_path):
    import_categories(write(tmp_path, WITH_IDS))
    before = tree_rows()
    renamed = (
        WITH_IDS.replace("8 - Electronics\n", "8 - Consumer Electronics\n")
        .replace("9 - Electronics > Accessories", "9 - Consumer Electronics > Add-ons")
        .replace("Jewelry > Accessories", "Jewelry > Trinkets")
        + "10 - Consumer Electronics > Cables\n"
    )
    result = import_categories(write(tmp_path, renamed, "v2.txt"))
    assert (result.created, result.updated, result.unchanged) == (1, 3, 7)
    after = tree_rows()
    assert after["Consumer Electronics > Add-ons"][:4] == before["Electronics > Accessories"][:4]  # id path, slug
    assert after["Consumer Electronics > Add-ons"][4] > before["Electronics > Accessories"][4]  # updated_at
    assert after["Apparel & Accessories > Jewelry > Trinkets"][3] == "jewelry-accessories"
    unchanged = [k for k in before if k in after]
    assert len(unchanged) == 7 and all(before[k] == after[k] for k in unchanged)
    check_tree_invariants()


def test_move_of_a_node_to_a_new_parent_and_to_the_root(db, tmp_path):
    import_categories(write(tmp_path, WITH_IDS))
    moved = (
        WITH_IDS.replace("9 - Electronics > Accessories", "9 - Gadgets > Accessories")
        .replace("2 - Apparel & Accessories > Clothing\n", "2 - Clothing\n")
        .replace("Apparel & Accessories > Clothing >", "Clothing >")
    )
    result = import_categories(write(tmp_path, moved, "v2.txt"))
    assert (result.created, result.updated) == (1, 2)  # "Gadgets" is new; Clothing and 9 moved
    check_tree_invariants()
    assert Category.get(Category.external_id == "2").level == 0
    assert Category.get(Category.external_id == "7").breadcrumb() == "Clothing > Outerwear > Coats & Jackets"
    assert Category.get(Category.external_id == "9").breadcrumb() == "Gadgets > Accessories"


def test_existing_slugs_are_kept_and_new_ones_avoid_them(db, tmp_path):
    Category.create(name="Accessories Shop", slug="accessories")  # made by hand, not in the file
    Category.create(name="Jewelry Accessories", slug="jewelry-accessories")
    import_categories(write(tmp_path, WITH_IDS))
    assert Category.get(Category.external_id == "3").slug == "clothing-accessories"
    assert Category.get(Category.external_id == "5").slug == "jewelry-accessories-5"  # then the external id
    assert Category.select().where(Category.slug == "accessories").get().name == "Accessories Shop"


def test_numeric_suffix_when_prefixed_slug_is_taken(db, tmp_path):
    text = "A X\nX\nA > X\nX Y\nY\nX > Y\nX > Y > Z\n"  # no ids: numeric suffixes
    import_categories(write(tmp_path, text))
    slugs = {c.breadcrumb(): c.slug for c in Category.select()}
    assert slugs == {
        "A X": "a-x",
        "X": "x",
        "A": "a",
        "A > X": "a-x-2",
        "X Y": "x-y",
        "Y": "y",
        "X > Y": "x-y-2",
        "X > Y > Z": "z",
    }
    assert len({c.slug for c in Category.select()}) == Category.select().count()


def test_import_reads_gzip_and_streams(db, tmp_path):
    import gzip
    import io

    path = tmp_path / "taxonomy.txt.gz"
    path.write_bytes(gzip.compress(WITH_IDS.encode()))
    assert import_categories(path).created == 10
    assert import_categories(io.BytesIO(("\ufeff" + WITH_IDS).encode())).unchanged == 10
    assert import_categories(io.StringIO(PLAIN)).created == 4
    gz_stream = io.BufferedReader(io.BytesIO(gzip.compress(PLAIN.encode())))
    assert import_categories(gz_stream).unchanged == 4


def test_dry_run_writes_nothing(db, tmp_path):
    result = import_categories(write(tmp_path, WITH_IDS), dry_run=True)
    assert (result.created, result.total, result.dry_run) == (10, 10, True)
    assert Category.select().count() == 0


BAD_LINES = [
    ("A\nA >  > B\n", 2, "empty name"),
    ("1 - A\n1604 -\n", 2, "an id without a category name"),
    ("A\n> B\n", 2, "empty name"),
    ("# c\nA\nB >\n", 3, "empty name"),
    ("A\nB\x00C\n", 2, "control character"),
    ("A\n" + "x" * 300 + "\n", 2, "longer than 255"),
    ("1 - A\n2 - B\n1 - C\n", 3, "id 1 is already used on line 2"),
    ("1 - A\n2 - A\n", 2, "has id 2 here but 1 on line 2"),
]


def test_bad_lines_are_errors_with_the_line_number(db, tmp_path):
    for text, line, fragment in BAD_LINES:  # one database for all cases: parsing fails before any write
        with pytest.raises(FeedError) as excinfo:
            import_categories(write(tmp_path, "Z\n" + text))  # "Z" shifts every line by one
        message = str(excinfo.value)
        assert f"taxonomy.txt line {line + 1}: " in message and fragment in message, message
        assert "\n" not in message
    assert Category.select().count() == 0  # the good lines before the bad one were not written


def test_invalid_utf8_and_unreadable_files(db, tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("A\nB > Caf\u00e9\n".encode("latin-1"))
    with pytest.raises(FeedError, match="line 2: not UTF-8"):
        import_categories(path)
    with pytest.raises(FeedError, match="cannot read .*missing.txt: No such file"):
        import_categories(tmp_path / "missing.txt")
    with pytest.raises(FeedError, match="it is a folder"):
        import_categories(tmp_path)
    import gzip

    broken = tmp_path / "broken.txt.gz"
    broken.write_bytes(gzip.compress(WITH_IDS.encode())[:-12])
    with pytest.raises(FeedError, match="cannot read .*broken.txt.gz"):
        import_categories(broken)
    assert Category.select().count() == 0


def test_conflicting_external_id_at_an_existing_path(db, tmp_path):
    import_categories(write(tmp_path, "1 - A\n2 - A > B\n"))
    with pytest.raises(FeedError, match=r"line 2: 'A > B' already exists with id 2, the file gives it id 3"):
        import_categories(write(tmp_path, "1 - A\n3 - A > B\n", "v2.txt"))


def test_failure_while_writing_leaves_nothing(db, tmp_path, monkeypatch):
    from pfdb import categories

    calls = []
    original = categories._insert_rows

    def failing(rows):
        calls.append(len(rows))
        if len(calls) == 2:  # the second level
            raise RuntimeError("disk full")
        original(rows)

    monkeypatch.setattr(categories, "_insert_rows", failing)
    with pytest.raises(RuntimeError):
        import_categories(write(tmp_path, WITH_IDS))
    assert Category.select().count() == 0


def test_import_inside_a_caller_transaction(db, tmp_path):
    with pytest.raises(RuntimeError):
        with pfdb.db_session_scope():
            assert import_categories(write(tmp_path, PLAIN)).created == 4
            assert Category.select().count() == 4
            raise RuntimeError("caller fails")
    assert Category.select().count() == 0


# -- move, delete, tree --------------------------------------------------------------------
def build_chain(db_tmp, width: int) -> tuple[Category, Category, Category]:
    """Root R with children A and B; A has ``width`` children, each with one child."""
    lines = ["R", "R > A", "R > B"]
    for i in range(width):
        lines += [f"R > A > N{i}", f"R > A > N{i} > M{i}"]
    import_categories(write(db_tmp, "\n".join(lines) + "\n", f"chain{width}.txt"))
    root = Category.get(Category.name == "R")
    a = Category.get((Category.name == "A") & (Category.parent == root.id))
    b = Category.get((Category.name == "B") & (Category.parent == root.id))
    return root, a, b


def test_move_category_rewrites_the_subtree_in_one_update(db, tmp_path):
    _, a, b = build_chain(tmp_path, 20)
    with QueryLog(pfdb.db.obj) as log:
        moved = move_category(a, b)
    check_tree_invariants()
    assert moved.parent_id == b.id and moved.level == 2
    for c in a.descendants():
        assert c.path.startswith(f"{b.path}{a.id}/")
        assert c.level == (3 if c.name.startswith("N") else 4)
    subtree_updates = [s for s in log.statements if s.lstrip().upper().startswith("UPDATE") and "SUBSTR" in s.upper()]
    assert len(subtree_updates) == 1
    assert log.count("UPDATE") == 2  # the subtree, then the row's own parent/updated_at
    assert log.count("SELECT") <= 2
    assert len(log.statements) < 10  # does not grow with the subtree (41 nodes here)


def test_move_by_id_to_root_and_noop(db, tmp_path):
    root, a, _ = build_chain(tmp_path, 2)
    before = Category.get_by_id(a.id).updated_at
    with QueryLog(pfdb.db.obj) as log:
        move_category(a.id, root.id)  # already there
    assert log.count("UPDATE") == 0
    assert Category.get_by_id(a.id).updated_at == before
    move_category(a.id, None)
    check_tree_invariants()
    assert Category.get_by_id(a.id).path == f"/{a.id}/"
    with pytest.raises(NotFoundError):
        move_category(99999, None)


def test_move_refuses_a_cycle(db, tmp_path):
    root, a, _ = build_chain(tmp_path, 2)
    child = Category.get(Category.name == "N0")
    before = tree_rows()
    for target in (a, child, Category.get(Category.name == "M0")):
        with pytest.raises(ValidationError, match="own ancestor"):
            move_category(a.id, target)
    with pytest.raises(ValidationError, match="own ancestor"):
        move_category(a, child)
    assert a.parent_id == root.id  # the refused instance is unchanged
    with pytest.raises(ValidationError, match="does not exist"):
        move_category(a, 99999)
    with pytest.raises(ValidationError, match="own ancestor"):
        move_category(root.id, child.id)
    assert tree_rows() == before


def test_delete_refuses_with_children_or_products(db, tmp_path):
    root, a, b = build_chain(tmp_path, 1)
    with pytest.raises(ValidationError, match=r"'A' .* has 1 subcategories and 0 products; nothing was deleted"):
        delete_category(a)
    Product.create(sku="P1", name="p", category=b)
    with pytest.raises(ValidationError, match="0 subcategories and 1 products"):
        delete_category(b.id)
    leaf = Category.get(Category.name == "M0")
    result = delete_category(leaf)
    assert result.as_dict() == {
        "category_id": leaf.id,
        "name": "M0",
        "policy": "refuse",
        "new_parent_id": leaf.parent_id,
        "children_reassigned": 0,
        "products_reassigned": 0,
    }
    assert Category.get_or_none(Category.id == leaf.id) is None
    with pytest.raises(ValidationError, match="policy"):
        delete_category(a, policy="cascade")
    with pytest.raises(NotFoundError):
        delete_category(leaf.id)


def test_delete_reassigns_children_and_products_to_the_parent(db, tmp_path):
    root, a, b = build_chain(tmp_path, 10)
    p1 = Product.create(sku="P1", name="p", category=a)
    p2 = Product.create(sku="P2", name="q", category=Category.get(Category.name == "N0"))
    with QueryLog(pfdb.db.obj) as log:
        result = delete_category(a, policy="reassign")
    assert (result.children_reassigned, result.products_reassigned, result.new_parent_id) == (10, 1, root.id)
    assert log.count("UPDATE") == 3  # subtree paths/levels, children's parent, products
    check_tree_invariants()
    assert Category.get(Category.name == "M3").breadcrumb() == "R > N3 > M3"
    assert Product.get_by_id(p1.id).category_id == root.id
    assert Product.get_by_id(p2.id).category.name == "N0"


def test_delete_root_with_reassign_makes_children_roots(db, tmp_path):
    root, a, b = build_chain(tmp_path, 1)
    product = Product.create(sku="P1", name="p", category=root)
    delete_category(root.id, policy="reassign")
    check_tree_invariants()
    assert {c.name for c in Category.roots()} == {"A", "B"}
    assert Product.get_by_id(product.id).category_id is None


def test_category_tree_is_nested_from_one_query(db, tmp_path):
    import_categories(write(tmp_path, WITH_IDS))
    with QueryLog(pfdb.db.obj) as log:
        tree = category_tree()
    assert log.count() == 1
    assert [t["name"] for t in tree] == ["Apparel & Accessories", "Electronics"]
    apparel = tree[0]
    assert [c["name"] for c in apparel["children"]] == ["Clothing", "Jewelry"]
    clothing = apparel["children"][0]
    assert [c["slug"] for c in clothing["children"]] == ["accessories", "outerwear"]
    coats = clothing["children"][1]["children"][0]
    assert coats == {
        "id": Category.get(Category.external_id == "7").id,
        "name": "Coats & Jackets",
        "slug": "coats-jackets",
        "level": 3,
        "children": [],
    }
    jewelry = Category.get(Category.external_id == "4")
    with QueryLog(pfdb.db.obj) as log:
        sub = category_tree(jewelry.id)
    assert log.count() == 1
    assert [(t["name"], [c["name"] for c in t["children"]]) for t in sub] == [
        ("Jewelry", ["Accessories", "Boutonnières"])
    ]
    assert category_tree(jewelry) == sub
    with pytest.raises(NotFoundError):
        category_tree(99999)


# -- CLI -----------------------------------------------------------------------------------
def test_cli_import_categories(database_url, tmp_path, run_cli):
    path = write(tmp_path, WITH_IDS)
    code, out, err = run_cli("--database-url", database_url, "import-categories", str(path))
    assert (code, err) == (0, "")
    assert out.strip() == "imported 10 categories: 10 created, 0 updated, 0 unchanged"
    code, out, _ = run_cli("--database-url", database_url, "import-categories", str(path), "--json")
    assert code == 0
    import json

    assert json.loads(out) == {"created": 0, "updated": 0, "unchanged": 10, "total": 10, "dry_run": False}
    code, out, _ = run_cli("--database-url", database_url, "import-categories", "-", "--dry-run", stdin=PLAIN)
    assert code == 0 and "would import 4 categories: 4 created" in out and "nothing written" in out
    code, out, _ = run_cli("--database-url", database_url, "import-categories", "-", stdin=PLAIN)
    assert code == 0 and "4 created" in out


def test_cli_import_categories_errors(database_url, tmp_path, run_cli):
    code, out, err = run_cli("--database-url", database_url, "import-categories", str(write(tmp_path, "A\nA >> B\n")))
    assert code == 1 and out == ""
    assert err.startswith("error: ") and "line 2:" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli("--database-url", database_url, "import-categories", str(tmp_path / "nope.txt"))
    assert code == 1 and "cannot read" in err
    code, _, err = run_cli("--database-url", database_url, "import-categories")
    assert code == 2 and "missing argument FILE" in err
    code, _, err = run_cli("--database-url", database_url, "import-categories", "a.txt", "--force")
    assert code == 2 and "unknown option --force" in err
