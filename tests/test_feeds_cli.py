"""``pfdb import`` and ``pfdb export`` on both backends: the mapping to the API, output, exit codes, stdin."""

from __future__ import annotations

import json

from feeds_samples import PFDB_CSV, SHOPIFY_CSV, product, write

from pfdb.models import Job, Product


def test_import_from_stdin_prints_a_summary(db, database_url, run_cli):
    code, out, err = run_cli("--database-url", database_url, "import", "-", stdin=PFDB_CSV)
    assert code == 0, err
    assert "imported <stdin> (pfdb): 3 rows, 3 created, 0 updated, 0 unchanged, 0 rejected" in out
    assert "categories: 4 created" in out
    assert product("P-1").gtin == "7350177880121"


def test_import_json_result_and_generated_skus(db, database_url, tmp_path, run_cli):
    path = write(tmp_path, "shopify.csv", SHOPIFY_CSV)
    code, out, err = run_cli("--database-url", database_url, "import", str(path), "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["format"], result["created"], result["generated_skus"]) == ("shopify", 4, 3)
    assert result["job_id"] == str(Job.get().job_id)
    code, out, err = run_cli("--database-url", database_url, "import", str(path))
    assert code == 0 and "0 created, 0 updated, 4 unchanged" in out and "generated SKUs: 3" in out


def test_rejected_rows_exit_1_and_go_to_the_rejects_file(db, database_url, tmp_path, run_cli):
    path = write(tmp_path, "bad.csv", "sku,name,price\nA,Apple,1\nB,Banana,abc\n")
    rejects = tmp_path / "rejects.csv"
    code, out, err = run_cli("--database-url", database_url, "import", str(path), "--rejects", str(rejects))
    assert code == 1
    assert "1 created" in out and "1 rejected" in out and f"rejected rows written to {rejects}" in out
    assert "rejected line 3 (B): price: 'abc' is not a number" in err
    assert rejects.read_text(encoding="utf-8").splitlines()[1] == "B,Banana,abc,3,price: 'abc' is not a number"


def test_dry_run_and_strict_flags(db, database_url, tmp_path, run_cli):
    path = write(tmp_path, "bad.csv", "sku,name,price\nA,Apple,1\nB,Banana,abc\n")
    code, out, _ = run_cli("--database-url", database_url, "import", str(path), "--dry-run")
    assert code == 1 and "checked" in out and "nothing was written: dry run" in out
    code, out, _ = run_cli("--database-url", database_url, "import", str(path), "--strict")
    assert code == 1 and "nothing was written: --strict" in out
    assert Product.select().count() == 0


def test_format_and_mapping_flags(db, database_url, tmp_path, run_cli):
    path = write(tmp_path, "odd.csv", "Code;Title;Cost\nZ-1;Zebra;3.50\n")
    code, _, err = run_cli("--database-url", database_url, "import", str(path))
    assert code == 1 and "cannot tell the format" in err and "--mapping" in err
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"columns": {"Code": "sku", "Title": "name", "Cost": "price"}}))
    code, out, err = run_cli("--database-url", database_url, "import", str(path), "--mapping", str(mapping))
    assert code == 0, err
    assert "(mapping): 1 rows, 1 created" in out
    code, _, err = run_cli("--database-url", database_url, "import", str(path), "--format", "shopify")
    assert code == 1 and "no Handle column" in err


def test_usage_errors_and_help(db, database_url, run_cli):
    code, _, err = run_cli("--database-url", database_url, "import")
    assert code == 2 and "missing argument FILE" in err
    code, _, err = run_cli("--database-url", database_url, "import", "a.csv", "b.csv")
    assert code == 2 and "unexpected argument" in err
    code, _, err = run_cli("--database-url", database_url, "import", "missing.csv")
    assert code == 1 and err.startswith("error: feed file missing.csv does not exist")
    code, out, _ = run_cli("--help")
    assert code == 0 and "\n  import  " in out and "\n  export  " in out and "import-products" not in out
    code, out, _ = run_cli("import", "--help")
    assert code == 0 and "Example: pfdb import" in out
    code, _, err = run_cli("imprt")
    assert code == 2 and " import," in err and "import-products" not in err
