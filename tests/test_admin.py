"""create-admin: the API on both backends, and the CLI's three ways to get a password."""

from __future__ import annotations

import io
import json
import sys

import pytest

from pfdb import DuplicateError, User, ValidationError
from pfdb.admin import MIN_PASSWORD_LENGTH, create_admin

GOOD = "correct horse#1e3"  # a '#' and a number-like tail: Fire would have mangled it


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_create_admin_then_update(db):
    result = create_admin(" Admin@Example.com ", GOOD)
    assert result.created and result.email == "admin@example.com"
    user = User.get_by_email("admin@example.com")
    assert user.is_admin and user.check_password(GOOD) and GOOD not in user.password_hash
    assert GOOD not in json.dumps(result.as_dict())

    with pytest.raises(DuplicateError, match="admin@example.com") as caught:
        create_admin("admin@example.com", "another password")
    assert "--update" in str(caught.value)
    assert User.get_by_email("admin@example.com").check_password(GOOD)

    User.update(is_admin=False).execute()
    again = create_admin("admin@example.com", "another password", update=True)
    user = User.get_by_email("admin@example.com")
    assert not again.created and again.id == result.id
    assert user.is_admin and user.check_password("another password") and not user.check_password(GOOD)


def test_short_password_and_bad_email_are_refused(db):
    with pytest.raises(ValidationError, match=f"at least {MIN_PASSWORD_LENGTH} characters"):
        create_admin("a@example.com", "x" * (MIN_PASSWORD_LENGTH - 1))
    with pytest.raises(ValidationError, match="email"):
        create_admin("not-an-email", GOOD)
    assert User.select().count() == 0


def test_cli_password_from_stdin(run_cli, database_url):
    code, out, err = run_cli(
        "--database-url", database_url, "create-admin", "a@example.com", "--password-stdin", stdin=GOOD + "\n"
    )
    assert code == 0, err
    assert out == "created administrator a@example.com (id 1)\n" and err == ""
    code, out, err = run_cli(
        "--database-url", database_url, "create-admin", "a@example.com", "--password-stdin", stdin="new password 2\n"
    )
    assert code == 1 and "already exists" in err and "--update" in err
    code, out, err = run_cli(
        "--database-url",
        database_url,
        "create-admin",
        "a@example.com",
        "--password-stdin",
        "--update",
        "--json",
        stdin="new password 2\n",
    )
    assert code == 0 and json.loads(out) == {"id": 1, "email": "a@example.com", "created": False, "is_admin": True}
    assert User.get_by_email("a@example.com").check_password("new password 2")


def test_cli_password_from_the_prompt(run_cli, database_url, monkeypatch):
    answers = iter([GOOD, GOOD])
    prompts = []

    def fake_getpass(prompt: str = "Password: ") -> str:
        prompts.append(prompt)
        return next(answers)

    monkeypatch.setattr("getpass.getpass", fake_getpass)
    monkeypatch.setattr(sys, "stdin", Terminal())
    code, out, err = run_cli("--database-url", database_url, "create-admin", "p@example.com")
    assert code == 0, err
    assert len(prompts) == 2 and "created administrator p@example.com" in out
    assert GOOD not in out + err
    assert User.get_by_email("p@example.com").check_password(GOOD)

    answers = iter([GOOD, GOOD + "x"])
    code, out, err = run_cli("--database-url", database_url, "create-admin", "q@example.com")
    assert code == 2 and "the two passwords differ" in err
    assert User.get_by_email("q@example.com") is None


def test_cli_positional_password_warns_and_is_kept_verbatim(run_cli, database_url):
    code, out, err = run_cli("--database-url", database_url, "create-admin", "c@example.com", GOOD)
    assert code == 0 and "warning: a password on the command line stays in the shell history" in err
    assert GOOD not in out + err
    assert User.get_by_email("c@example.com").check_password(GOOD)
    code, _, err = run_cli("--database-url", database_url, "create-admin", "d@example.com", "12345678")
    assert code == 0 and User.get_by_email("d@example.com").check_password("12345678")


def test_cli_errors(run_cli, database_url):
    code, out, err = run_cli("--database-url", database_url, "create-admin", "e@example.com", stdin="")
    assert code == 2 and "no password given and standard input is not a terminal" in err and "--password-stdin" in err
    code, out, err = run_cli(
        "--database-url", database_url, "create-admin", "e@example.com", "--password-stdin", stdin="short\n"
    )
    assert code == 1 and "at least 8 characters" in err and "short" not in err.replace("at least", "")
    code, out, err = run_cli(
        "--database-url", database_url, "create-admin", "e@example.com", "--password-stdin", stdin="\n"
    )
    assert code == 2 and "read no password" in err
    code, out, err = run_cli(
        "--database-url", database_url, "create-admin", "e@example.com", GOOD, "--password-stdin", stdin=GOOD + "\n"
    )
    assert code == 2 and "not both" in err
    code, out, err = run_cli("--database-url", database_url, "create-admin")
    assert code == 2 and "missing argument EMAIL" in err
    assert User.get_by_email("e@example.com") is None
