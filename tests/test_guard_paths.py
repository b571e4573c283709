"""No command writes over the live database, its own input, or a file it reads (issue 10, part 1).

Each case is one of the incidents that destroyed data: ``import bad.csv --rejects shop.db``,
``export shop.db`` and ``import in.csv --rejects in.csv``, by name, through a symlink and
through a hard link. Every refusal exits 2 with one line, and leaves the files byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from feeds_samples import PFDB_CSV, write

import pfdb
from pfdb.errors import UnsafePathError
from pfdb.feeds import export_products, import_products
from pfdb.maintenance import backup, check_backup, restore
from pfdb.models import Product

BAD_CSV = "sku,name,price\nA,Apple,1\nB,Banana,abc\n"


@pytest.fixture
def shop(sqlite_url, tmp_path):
    """A SQLite database holding three products, closed so its file is settled; returns its path."""
    pfdb.init_database(sqlite_url)
    import_products(write(tmp_path, "seed.csv", PFDB_CSV))
    pfdb.close_database()
    return Path(sqlite_url.removeprefix("sqlite:///"))


def link(kind: str, target: Path, where: Path) -> Path:
    where.parent.mkdir(parents=True, exist_ok=True)
    (os.symlink if kind == "symlink" else os.link)(target, where)
    return where


def snapshot(*paths: Path) -> dict[Path, bytes]:
    return {p: p.read_bytes() for p in paths}


def refused(code: int, out: str, err: str) -> bool:
    lines = err.strip().splitlines()
    return code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and "refusing" in lines[0]


def products(url: str) -> int:
    pfdb.init_database(url)
    try:
        return Product.select().count()
    finally:
        pfdb.close_database()


# -- the live database ------------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["name", "symlink", "hardlink", "dotdot", "wal"])
def test_import_rejects_over_the_database_is_refused(shop, sqlite_url, tmp_path, run_cli, how):
    bad = write(tmp_path, "bad.csv", BAD_CSV)
    target = {
        "name": lambda: shop,
        "symlink": lambda: link("symlink", shop, tmp_path / "links" / "rejects.csv"),
        "hardlink": lambda: link("hardlink", shop, tmp_path / "links" / "rejects.csv"),
        "dotdot": lambda: (tmp_path / "sub").mkdir() or tmp_path / "sub" / ".." / shop.name,
        "wal": lambda: Path(f"{shop}-wal"),
    }[how]()
    before = snapshot(shop, bad)
    code, out, err = run_cli("--database-url", sqlite_url, "import", str(bad), "--rejects", str(target))
    assert refused(code, out, err), (code, err)
    assert "is the database itself" in err
    assert snapshot(shop, bad) == before
    assert products(sqlite_url) == 3


@pytest.mark.parametrize("how", ["name", "symlink", "hardlink", "gz-symlink"])
def test_export_over_the_database_is_refused(shop, sqlite_url, tmp_path, run_cli, how):
    target = {
        "name": lambda: shop,
        "symlink": lambda: link("symlink", shop, tmp_path / "out" / "catalogue.csv"),
        "hardlink": lambda: link("hardlink", shop, tmp_path / "out" / "catalogue.csv"),
        "gz-symlink": lambda: link("symlink", shop, tmp_path / "out" / "catalogue.csv.gz"),
    }[how]()
    before = snapshot(shop)
    code, out, err = run_cli("--database-url", sqlite_url, "export", str(target))
    assert refused(code, out, err), (code, err)
    assert snapshot(shop) == before
    assert not list(tmp_path.glob("out/.*.tmp"))  # refused before the temporary file is opened
    assert products(sqlite_url) == 3


def test_python_api_refuses_the_database_too(shop, sqlite_url, tmp_path):
    bad = write(tmp_path, "bad.csv", BAD_CSV)
    before = snapshot(shop)
    pfdb.init_database(sqlite_url)
    with pytest.raises(UnsafePathError, match="is the database itself") as caught:
        import_products(bad, rejects=shop)
    assert caught.value.exit_code == 2
    with pytest.raises(UnsafePathError, match="is the database itself"):
        export_products(link("hardlink", shop, tmp_path / "copy.csv"))
    with pytest.raises(UnsafePathError, match="is the database itself"):
        backup(link("symlink", shop, tmp_path / "nightly.db"))
    pfdb.close_database()
    assert snapshot(shop) == before


def test_restore_refuses_the_live_database_as_its_source(shop, sqlite_url, tmp_path, run_cli):
    before = snapshot(shop)
    pfdb.init_database(sqlite_url)
    with pytest.raises(UnsafePathError, match="is the live database itself"):
        check_backup(shop)
    with pytest.raises(UnsafePathError, match="is the live database itself"):
        restore(link("hardlink", shop, tmp_path / "old.db"))
    pfdb.close_database()
    code, _, err = run_cli("--database-url", sqlite_url, "restore", str(shop), "--yes")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert snapshot(shop) == before
    assert not (shop.parent / "backups").exists()  # refused before the safety backup


def test_other_files_beside_the_database_are_fine(shop, sqlite_url, tmp_path, run_cli):
    """A file that does not exist yet, in the database's folder, is not the database."""
    bad = write(tmp_path, "bad.csv", BAD_CSV)
    rejects = shop.parent / f"{shop.name}.rejects.csv"
    code, out, err = run_cli("--database-url", sqlite_url, "import", str(bad), "--rejects", str(rejects))
    assert code == 1 and "1 rejected" in out, err
    assert rejects.read_text(encoding="utf-8").startswith("sku,name,price,reject_line,reject_reason")
    code, out, err = run_cli("--database-url", sqlite_url, "export", str(shop.parent / "pfdb.csv"))
    assert code == 0, err


# -- the command's own input (both backends) --------------------------------------------------------
@pytest.mark.parametrize("how", ["name", "symlink", "hardlink"])
def test_import_rejects_over_its_own_feed_is_refused(db, database_url, tmp_path, run_cli, how):
    feed = write(tmp_path, "in.csv", BAD_CSV)
    target = {
        "name": lambda: feed,
        "symlink": lambda: link("symlink", feed, tmp_path / "r" / "rejects.csv"),
        "hardlink": lambda: link("hardlink", feed, tmp_path / "r" / "rejects.csv"),
    }[how]()
    before = snapshot(feed)
    code, out, err = run_cli("--database-url", database_url, "import", str(feed), "--rejects", str(target))
    assert refused(code, out, err), (code, err)
    assert "is the feed being imported" in err
    assert snapshot(feed) == before
    assert Product.select().count() == 0


def test_import_from_stdin_redirected_from_the_rejects_file(db, database_url, tmp_path, run_cli, monkeypatch):
    """`pfdb import - --rejects in.csv < in.csv`: standard input is that very file."""
    feed = write(tmp_path, "in.csv", BAD_CSV)
    before = snapshot(feed)
    with feed.open("r", encoding="utf-8") as handle:
        monkeypatch.setattr("sys.stdin", handle)
        code, out, err = run_cli("--database-url", database_url, "import", "-", "--rejects", str(feed))
    assert refused(code, out, err), (code, err)
    assert "standard input" in err
    assert snapshot(feed) == before


def test_import_rejects_over_its_mapping_file_is_refused(db, tmp_path):
    feed = write(tmp_path, "in.csv", "code,title\nA,Apple\n")
    mapping = write(tmp_path, "map.json", '{"columns": {"code": "sku", "title": "name"}}')
    before = snapshot(feed, mapping)
    with pytest.raises(UnsafePathError, match="is the mapping file"):
        import_products(feed, mapping=mapping, rejects=mapping)
    assert snapshot(feed, mapping) == before


def test_python_import_refuses_its_own_feed(db, tmp_path):
    feed = write(tmp_path, "in.csv", BAD_CSV)
    before = snapshot(feed)
    with pytest.raises(UnsafePathError, match="is the feed being imported"):
        import_products(str(feed), rejects=str(link("symlink", feed, tmp_path / "r.csv")))
    with feed.open("rb") as handle, pytest.raises(UnsafePathError, match="is the feed being imported"):
        import_products(handle, rejects=feed)  # an open file is compared by its inode
    assert snapshot(feed) == before and Product.select().count() == 0


# -- bin/pfdb itself, with a real standard input that is no terminal --------------------------------
def test_bin_pfdb_refuses_with_exit_2_and_one_line(shop, sqlite_url, tmp_path):
    import sys

    import processes

    bin_pfdb = Path(__file__).resolve().parent.parent / "bin" / "pfdb"
    bad = write(tmp_path, "bad.csv", BAD_CSV)
    before = snapshot(shop, bad)
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    for argv in (
        ["export", str(shop)],
        ["import", str(bad), "--rejects", str(shop)],
        ["import", str(bad), "--rejects", str(bad)],
        ["rollback", "zero"],
    ):
        proc = processes.run(
            [sys.executable, str(bin_pfdb), "--database-url", sqlite_url, *argv],
            stdin=processes.DEVNULL,
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), (argv, proc.stderr)
    assert snapshot(shop, bad) == before
    assert products(sqlite_url) == 3
