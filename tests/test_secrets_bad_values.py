"""Every bad setting or option value is one line naming it and what it accepts, exit 2;
from Python the same typed error (``ConfigError`` or ``UsageError``)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, pg_url

from pfdb.config import debug_enabled, load_settings, parse_database_url
from pfdb.errors import ConfigError, UsageError

FEED = "sku,name,price\nA-1,Apple,1.00\n"

# (environment, argv after the URL, words the one line must hold)
CASES = {
    "pool timeout nan": ({"DATABASE_POOL_TIMEOUT": "nan"}, ["status"], ["DATABASE_POOL_TIMEOUT", "seconds"]),
    "pool timeout inf": ({"DATABASE_POOL_TIMEOUT": "inf"}, ["status"], ["DATABASE_POOL_TIMEOUT", "seconds"]),
    "pool timeout 1e308": ({"DATABASE_POOL_TIMEOUT": "1e308"}, ["status"], ["DATABASE_POOL_TIMEOUT", "2147483"]),
    "pool recycle -inf": ({"DATABASE_POOL_RECYCLE": "-inf"}, ["status"], ["DATABASE_POOL_RECYCLE", "negative"]),
    "pool size huge": (
        {"DATABASE_POOL_SIZE": "99999999999999999999"},
        ["status"],
        ["DATABASE_POOL_SIZE", "at most 262143"],
    ),
    "max overflow huge": ({"DATABASE_MAX_OVERFLOW": "1e9"}, ["status"], ["DATABASE_MAX_OVERFLOW", "whole number"]),
    "debug banana": ({"PFDB_DEBUG": "banana"}, ["status"], ["PFDB_DEBUG", "true or false"]),
    "url option": (
        {},
        ["--database-url", pg_url("postgres") + "?foo=bar", "status"],
        ["DATABASE_URL", "'foo'", "sslmode"],
    ),
    "url folder": ({}, ["--database-url", "sqlite:///./dir/", "status"], ["DATABASE_URL", "folder"]),
    "batch size abc": ({}, ["import", "{feed}", "--batch-size=abc"], ["--batch-size", "whole number"]),
    "batch size 0": ({}, ["import", "{feed}", "--batch-size", "0"], ["batch size", "at least 1"]),
    "encoding nope": ({}, ["import", "{feed}", "--encoding=nope"], ["encoding 'nope'", "utf-8"]),
    "import format xml": ({}, ["import", "{feed}", "--format=xml"], ["format 'xml'", "shopify"]),
    "export format xml": ({}, ["export", "{out}", "--format=xml"], ["format 'xml'", "csv"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_bad_value_is_one_line_and_exit_2(case, sqlite_url, tmp_path, run_cli, monkeypatch):
    env, argv, words = CASES[case]
    feed = tmp_path / "feed.csv"
    feed.write_text(FEED, encoding="utf-8")
    argv = [a.format(feed=feed, out=tmp_path / "out.csv") for a in argv]
    if argv[0] != "--database-url":
        argv = ["--database-url", sqlite_url, *argv]
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(*argv, env=env)
    assert code == 2, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for word in words:
        assert word in lines[0], lines[0]
    assert "unexpected" not in err and "Traceback" not in err
    assert not (tmp_path / "dir").exists() and not (tmp_path / "out.csv").exists()


def test_the_cli_itself_exits_2_on_a_bad_debug_value(tmp_path):
    """In a real process: PFDB_DEBUG is read before anything else, and bin/pfdb exits 2."""
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bin" / "pfdb"), "status"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PFDB_DEBUG": "banana"},
        timeout=60,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "error: PFDB_DEBUG must be true or false, got 'banana'; use true/false, yes/no, on/off or 1/0"
    )


@pytest.mark.parametrize(
    "environ",
    [
        {"DATABASE_POOL_TIMEOUT": "nan"},
        {"DATABASE_POOL_TIMEOUT": "inf"},
        {"DATABASE_POOL_TIMEOUT": "1e308"},
        {"DATABASE_POOL_SIZE": "9" * 20},
        {"DATABASE_POOL_RECYCLE": "nan"},
    ],
)
def test_python_gets_config_errors_for_the_same_values(environ):
    with pytest.raises(ConfigError) as info:
        load_settings(environ=environ)
    assert next(iter(environ)) in str(info.value) and info.value.exit_code == 2


def test_python_override_values_are_checked_too():
    with pytest.raises(ConfigError, match="pool_timeout must be a finite number"):
        load_settings("sqlite:///x.db", environ={}, pool_timeout=float("inf"))
    assert load_settings("sqlite:///x.db", environ={}, pool_timeout=2147483).pool_timeout == 2147483


def test_debug_is_parsed_in_one_place():
    assert debug_enabled({"PFDB_DEBUG": "on"}) is True
    assert debug_enabled({}) is False
    with pytest.raises(ConfigError, match="PFDB_DEBUG"):
        debug_enabled({"PFDB_DEBUG": "banana"})


def test_url_options_are_checked_by_the_driver_without_connecting():
    # Port 1: nothing listens there, so passing means no connection was tried.
    assert parse_database_url("postgresql://u@127.0.0.1:1/db?sslmode=disable&connect_timeout=1").options == {
        "sslmode": "disable",
        "connect_timeout": "1",
    }
    with pytest.raises(ConfigError, match="'foo'"):
        parse_database_url("postgresql://u:pw@127.0.0.1:1/db?foo=bar")


def test_python_import_gets_usage_errors(db, tmp_path):
    from pfdb.feeds import import_products

    feed = tmp_path / "feed.csv"
    feed.write_text(FEED, encoding="utf-8")
    with pytest.raises(UsageError, match="batch size"):
        import_products(str(feed), batch_size="abc")
    with pytest.raises(UsageError, match="unknown encoding"):
        import_products(str(feed), encoding="nope")
    with pytest.raises(UsageError, match="unknown feed format"):
        import_products(str(feed), format="xml")
    assert import_products(str(feed), batch_size="10").created == 1
