"""Settings: DATABASE_URL forms, typed variables, .env, and errors that name the variable."""

from __future__ import annotations

import pytest

import pfdb
from pfdb.config import DEFAULT_DATABASE_URL, load_settings, mask_url, parse_database_url
from pfdb.errors import ConfigError


def test_defaults_use_the_embedded_sqlite_file():
    settings = load_settings(environ={})
    assert settings.database_url.raw == DEFAULT_DATABASE_URL == "sqlite:///pfdb.db"
    assert (settings.pool_size, settings.max_overflow, settings.pool_timeout, settings.pool_recycle) == (
        10,
        20,
        30,
        3600,
    )
    assert settings.echo is False and settings.migration_auto_upgrade is False
    assert settings.migration_backup_before_upgrade is True
    assert settings.max_connections == 30


@pytest.mark.parametrize(
    "url, expected",
    [
        ("sqlite:///relative.db", {"backend": "sqlite", "path": "relative.db"}),
        ("sqlite:////abs/path.db", {"backend": "sqlite", "path": "/abs/path.db"}),
        ("sqlite:///:memory:", {"backend": "sqlite", "path": ":memory:"}),
        (
            "postgresql://u:p%40ss@db.example:6543/shop",
            {
                "backend": "postgresql",
                "user": "u",
                "password": "p@ss",
                "host": "db.example",
                "port": 6543,
                "database": "shop",
            },
        ),
        (
            "postgres://u@localhost/shop?sslmode=require&connect_timeout=5",
            {"backend": "postgresql", "database": "shop", "options": {"sslmode": "require", "connect_timeout": "5"}},
        ),
    ],
)
def test_database_url_forms(url, expected):
    parsed = parse_database_url(url)
    for key, value in expected.items():
        assert getattr(parsed, key) == value


@pytest.mark.parametrize(
    "env, message",
    [
        ({"DATABASE_URL": "mysql://u:p@h/db"}, "unsupported scheme 'mysql:'"),
        ({"DATABASE_URL": "sqlite://relative.db"}, "three slashes"),
        ({"DATABASE_URL": "postgresql://u:p@h:5432/"}, "no database name"),
        ({"DATABASE_URL": "postgresql://u:p@h:port/db"}, "malformed"),
        ({"DATABASE_POOL_SIZE": "abc"}, "DATABASE_POOL_SIZE must be a whole number, got 'abc'"),
        ({"DATABASE_POOL_SIZE": "0"}, "DATABASE_POOL_SIZE must be at least 1"),
        ({"DATABASE_POOL_TIMEOUT": "-5"}, "DATABASE_POOL_TIMEOUT must not be negative"),
        ({"DATABASE_POOL_RECYCLE": "soon"}, "DATABASE_POOL_RECYCLE must be a number of seconds"),
        ({"DATABASE_ECHO": "maybe"}, "DATABASE_ECHO must be true or false, got 'maybe'"),
        ({"MIGRATION_AUTO_UPGRADE": "2"}, "MIGRATION_AUTO_UPGRADE must be true or false"),
    ],
)
def test_bad_values_fail_at_once_naming_the_variable(env, message):
    with pytest.raises(ConfigError) as info:
        load_settings(environ=env)
    assert message in str(info.value)
    assert info.value.exit_code == 2


def test_unknown_scheme_lists_the_supported_ones():
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"DATABASE_URL": "oracle://x/y"})
    assert "sqlite:///" in str(info.value) and "postgresql://" in str(info.value)


def test_overrides_win_and_are_validated():
    settings = load_settings("sqlite:///x.db", environ={"DATABASE_POOL_SIZE": "3"}, pool_size=7, echo="yes")
    assert settings.pool_size == 7 and settings.echo is True
    with pytest.raises(ConfigError, match="pool_timeout must not be negative"):
        load_settings(environ={}, pool_timeout=-1)
    with pytest.raises(ConfigError, match="unknown setting 'pool'"):
        load_settings(environ={}, pool=3)


def test_dotenv_is_read_and_the_real_environment_wins(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text("DATABASE_URL=sqlite:///from_dotenv.db\nDATABASE_POOL_SIZE=4\nDATABASE_ECHO=true\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DATABASE_POOL_SIZE", "6")
    settings = load_settings()
    assert settings.database_url.path == "from_dotenv.db"
    assert settings.pool_size == 6  # the environment beats .env
    assert settings.echo is True


def test_password_is_masked_everywhere():
    url = "postgresql://shop:Sup3rS3cret@db:5432/shop"
    settings = load_settings(url, environ={})
    assert mask_url(url) == "postgresql://shop:***@db:5432/shop"
    for text in (repr(settings), str(settings.database_url), repr(settings.database_url), str(settings.as_dict())):
        assert "Sup3rS3cret" not in text
    with pytest.raises(ConfigError) as info:
        load_settings("postgresql://shop:Sup3rS3cret@db:notaport/shop", environ={})
    assert "Sup3rS3cret" not in str(info.value)


def test_missing_sqlite_folder_is_created(tmp_path):
    target = tmp_path / "deep" / "er" / "shop.db"
    pfdb.init_database(f"sqlite:///{target}")
    assert pfdb.database_health_check()["connection_test"] is True  # unmigrated, so not 'healthy'
    assert target.exists()


def test_unwritable_sqlite_folder_is_reported_clearly(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="cannot create the folder"):
        pfdb.init_database(f"sqlite:///{blocker}/sub/shop.db")


def test_importing_pfdb_reads_nothing_and_skips_psycopg2(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, pfdb; "
        "pfdb.init_database('sqlite:///" + str(tmp_path / "x.db") + "'); "
        "pfdb.database_health_check(); "
        "print('psycopg2' in sys.modules, pfdb.db.obj is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.split() == ["False", "True"]
    assert not (tmp_path / "pfdb.db").exists()  # import created no default file


def test_a_drift_check_on_sqlite_does_not_load_psycopg2(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys, pfdb; from pfdb import migrations; "
        f"pfdb.init_database('sqlite:///{tmp_path / 'x.db'}'); migrations.migrate(backup=False); "
        "assert not migrations.check().has_drift; print('psycopg2' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert out.stdout.strip() == "False"
