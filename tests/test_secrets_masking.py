"""Secrets never show: a password in the URL's query (``?password=``) is masked wherever the
userinfo password is, and configuration keys that say they are secret are sensitive by default."""

from __future__ import annotations

import json

import pytest
from conftest import PG_ADMIN_URL, pg_url

import pfdb
from pfdb import _pg_tools
from pfdb.config import is_secret_name, load_settings, mask_secrets, mask_url, parse_database_url
from pfdb.errors import DatabaseUnavailableError
from pfdb.models import Configuration

SECRET = "Qu3ryS3cret"


def _query_url(dbname: str, port: int | None = None) -> str:
    """The test server's URL for ``dbname`` with the password given as a query option.

    The server trusts local connections, so the password is carried (and could leak)
    without being needed.
    """
    url = pg_url(dbname)
    if port is not None:
        url = url.replace(":5432/", f":{port}/")
    return f"{url}?password={SECRET}&application_name=pfdb-test"


@pytest.mark.parametrize(
    "url, masked",
    [
        ("postgresql://app@h/db?password=p%23w&sslmode=require", "postgresql://app@h/db?password=***&sslmode=require"),
        (
            "postgresql://app:pw@h:5/db?sslpassword=x&connect_timeout=3",
            "postgresql://app:***@h:5/db?sslpassword=***&connect_timeout=3",
        ),
        (
            "postgresql://h/db?api_token=t&shop_secret=s&x_api_key=k&keywords=a",
            "postgresql://h/db?api_token=***&shop_secret=***&x_api_key=***&keywords=a",
        ),
        ("sqlite:///shop.db", "sqlite:///shop.db"),
        ("sqlite:///shop.db?password=x", "sqlite:///shop.db?password=***"),
    ],
)
def test_mask_url_masks_userinfo_and_every_secret_option(url, masked):
    assert mask_url(url) == masked


@pytest.mark.parametrize(
    "name, secret",
    [
        ("password", True),
        ("sslpassword", True),
        ("shopify.api_secret", True),
        ("smtp.password", True),
        ("github_token", True),
        ("tokens.refresh", True),
        ("x.api_key", True),
        ("apikey", True),
        ("sslkey", True),
        ("sslmode", False),
        ("keywords", False),
        ("shop.name", False),
        ("application_name", False),
    ],
)
def test_one_rule_says_which_names_are_secret(name, secret):
    assert is_secret_name(name) is secret


def test_mask_secrets_replaces_decoded_values_and_the_raw_url():
    url = parse_database_url("postgresql://app:u%40ser@h/db?password=p%23w&sslmode=require")
    text = f"FATAL: password p#w or u@ser rejected for {url.raw}"
    masked = mask_secrets(text, url)
    assert "p#w" not in masked and "u@ser" not in masked and "p%23w" not in masked
    assert "postgresql://app:***@h/db?password=***&sslmode=require" in masked
    assert _pg_tools._mask("pg_dump: error: p#w\n", url) == "pg_dump: error: ***"


def test_settings_and_url_never_show_a_query_password():
    settings = load_settings(f"postgresql://app@h/db?password={SECRET}&sslpassword={SECRET}x", environ={})
    for text in (
        repr(settings),
        str(settings),
        str(settings.as_dict()),
        repr(settings.database_url),
        str(settings.database_url),
    ):
        assert SECRET not in text, text
    assert settings.as_dict()["database_url"] == "postgresql://app@h/db?password=***&sslpassword=***"


@pytest.mark.postgres
def test_status_health_info_and_repr_mask_a_query_password(pg_server, pg_template, run_cli):
    name = pg_server.copy_of_template(pg_template)
    try:
        url = _query_url(name)
        outputs = []
        for argv in (
            ("status",),
            ("status", "--json"),
            ("health",),
            ("health", "--json"),
            ("info",),
            ("info", "--json"),
        ):
            code, out, err = run_cli("--database-url", url, *argv)
            assert code == 0, (argv, err)
            outputs.append(out + err)
        assert json.loads(outputs[5])["database"].endswith("?password=***&application_name=pfdb-test")
        database = pfdb.init_database(url)
        outputs += [
            repr(database),
            repr(pfdb.db.obj),
            str(pfdb.database.get_settings().as_dict()),
            str(pfdb.database_health_check()),
        ]
        for text in outputs:
            assert SECRET not in text, text
        assert "password=***" in outputs[0] and "password=***" in outputs[6]
    finally:
        pfdb.close_database()
        pg_server.release(name)


@pytest.mark.postgres
def test_connection_errors_mask_a_query_password(pg_server, run_cli):
    # A port nothing listens on, then a database that does not exist: two driver messages.
    for url in (_query_url("pfdb_missing", port=1), _query_url("pfdb_missing_db_for_secrets")):
        code, out, err = run_cli("--database-url", url, "status")
        assert code == 1
        assert SECRET not in out + err and "password=***" in err, err
        assert len(err.strip().splitlines()) == 1
        code, out, err = run_cli("--database-url", url, "health", "--json")
        assert code == 1 and SECRET not in out + err
        assert "password=***" in json.loads(out)["error"]
        pfdb.init_database(url)
        with pytest.raises(DatabaseUnavailableError) as info:
            with pfdb.db_session_scope():
                pass
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)


@pytest.mark.postgres
def test_a_missing_postgres_database_suggests_pfdb_init(pg_server, run_cli):
    code, out, err = run_cli("--database-url", pg_url("pfdb_missing_db_for_secrets"), "status")
    assert code == 1 and "does not exist" in err and "pfdb init" in err


def test_the_admin_url_of_the_suite_is_masked_too():
    assert "***" in mask_url(f"{PG_ADMIN_URL}?password=x")


# -- configuration values -------------------------------------------------------------------------
@pytest.mark.parametrize("key", ["shopify.api_secret", "smtp.password", "github.access_token", "maps.api_key"])
def test_secret_configuration_keys_are_sensitive_by_default(db, key):
    row = Configuration.set(key, "s3cr3t-value")
    assert row.is_sensitive is True
    stored = Configuration.get(Configuration.key == key)
    assert stored.is_sensitive is True and stored.display_value == "********"
    assert "s3cr3t-value" not in repr(stored) and "s3cr3t-value" not in str(stored)
    assert Configuration.get_value(key) == "s3cr3t-value"  # the program still reads the value
    created = Configuration.create(key=f"{key}.2", value="x")
    assert Configuration.get_by_id(created.id).is_sensitive is True


def test_ordinary_keys_stay_visible_and_an_explicit_choice_wins(db):
    assert Configuration.set("shop.name", "Acme").display_value == "Acme"
    assert Configuration.set("shop.token_count", 3).is_sensitive is True  # the name says token: masked
    assert Configuration.set("feature.keywords", "a,b").display_value == "a,b"
    row = Configuration.set("public.api_key", "pk_live", is_sensitive=False)
    assert Configuration.get(Configuration.key == "public.api_key").display_value == "pk_live" and not row.is_sensitive
    # Updating a value keeps the stored flag.
    Configuration.set("public.api_key", "pk_live_2")
    assert Configuration.get(Configuration.key == "public.api_key").is_sensitive is False
