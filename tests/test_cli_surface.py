"""The command line says what it does: help, parser and completion come from one definition.

Every option a command's --help shows is called here, against a real database, and the
parser accepts nothing the help does not show.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from pfdb import cli, cli_spec, migrations
from pfdb.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent
FEED = "sku,name,price,currency,category\nSKU-1,Shirt,19.90,EUR,Apparel > Shirts\nSKU-2,Hat,5.00,EUR,Apparel > Hats\n"
MAPPING = '{"columns": {"Code": "sku", "Title": "name", "Cost": "price"}, "defaults": {"currency": "EUR"}}'


def help_arguments(text: str) -> tuple[list[str], list[tuple[str, str | None]]]:
    """(positionals, [(flag, metavar)]) as the help text shows them."""
    section = None
    positionals: list[str] = []
    options: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            section = line[:-1]
            continue
        match = re.match(r"^  (\S+)(?: ([A-Z_]+))?(?:\s{2,}|$)", line)
        if not match:
            continue
        if section == "arguments":
            positionals.append(match[1])
        elif section == "options":
            options.append((match[1], match[2]))
    return positionals, options


def documented_json_keys() -> dict[str, list[str]]:
    """``pfdb NAME`` -> the keys docs/commands.md promises for its --json output."""
    keys: dict[str, list[str]] = {}
    command = None
    for line in (ROOT / "docs" / "commands.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("## pfdb "):
            command = line[len("## pfdb ") :].strip()
        elif line.startswith("JSON keys: ") and command:
            keys[command] = re.findall(r"`([a-z_]+)`", line)
    return keys


def test_every_command_is_defined_once_with_an_example():
    specs = cli.command_specs()
    assert "import" in specs and "import-products" not in specs and "completion" in specs
    for name, spec in specs.items():
        assert spec.example.startswith(f"pfdb {name}")
        assert spec.summary and not spec.summary.endswith(":")


@pytest.mark.parametrize("name", list(cli.command_specs()))
def test_help_shows_exactly_what_the_parser_accepts(run_cli, name):
    spec = cli.command_specs()[name]
    code, out, _ = run_cli(name, "--help")
    assert code == 0 and out.startswith(f"usage: pfdb {name}")
    positionals, options = help_arguments(out)
    assert positionals == [a.shown for a in spec.positionals]
    assert options == [(a.flag, a.metavar) for a in spec.options]
    assert "_" not in " ".join(flag for flag, _ in options)  # dashes, as people type them
    for flag in ("--database-url URL", "--tenant NAME", "--debug", "--version", "-h, --help"):
        assert flag in out  # the global options are part of every command's surface
    assert f"Example: {spec.example}" in out


@pytest.fixture
def workspace(tmp_path, monkeypatch, database_url):
    """Files the commands read, and a migrations folder create-migration may write into."""
    (tmp_path / "feed.csv").write_text(FEED, encoding="utf-8")
    (tmp_path / "other.csv").write_text("Code,Title,Cost\nX-1,Mug,3.50\n", encoding="utf-8")
    (tmp_path / "mapping.json").write_text(MAPPING, encoding="utf-8")
    (tmp_path / "taxonomy.txt").write_text("1 - Apparel\n2 - Apparel > Shirts\n", encoding="utf-8")
    migrations = tmp_path / "migrations"
    shutil.copytree(ROOT / "migrations", migrations, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setenv("PFDB_MIGRATIONS_DIR", str(migrations))
    monkeypatch.chdir(tmp_path)
    return tmp_path


_ADMINS = itertools.count()


def base_call(
    name: str, ws: Path, run_cli, url: str, flag: str = "", tenants: list[str] | None = None
) -> tuple[list[str], str | None]:
    """The command's required arguments (and stdin) for a call with ``flag`` that succeeds.

    ``tenants``: the tenants the calls made so far; a drop takes the newest of them (each
    tenant is a migrated schema, and a drop a backup: one made only to drop it cost both).
    """
    tenants = [] if tenants is None else tenants
    if name == "tenant":  # each action takes its own options
        if flag in ("--yes", "--backup-path"):
            if tenants:
                tenant = tenants.pop()
            else:
                tenant = f"t{next(_ADMINS)}"
                code, _, err = run_cli("--database-url", url, "tenant", "create", tenant)
                assert code == 0, err
            return ["drop", tenant, *(["--yes"] if flag == "--backup-path" else [])], None
        if flag in ("--server", "--role", "--json"):
            tenants.append(f"t{next(_ADMINS)}")
            return ["create", tenants[-1]], None
        return ["list"], None
    if (name, flag) == ("migrate", "--parallel"):
        return ["--all-tenants"], None
    if name == "restore":
        code, out, err = run_cli("--database-url", url, "backup", "--backup-path", str(ws / "b"), "--json")
        assert code == 0, err
        return [json.loads(out)["path"], "--yes"], None
    if name == "health":  # create-migration --empty left a migration pending, which is unhealthy
        code, _, err = run_cli("--database-url", url, "migrate")
        assert code == 0, err
    return {
        "rollback": ([migrations.migration_names()[-1]], None),  # nothing to undo
        "create-migration": (["describe the change"], None),
        "create-admin": ([f"boss-{next(_ADMINS)}@example.com", "--password-stdin"], "Correct-horse-9\n"),
        "import-categories": ([str(ws / "taxonomy.txt")], None),
        "import": ([str(ws / "feed.csv")], None),
        "export": ([str(ws / "out.csv")], None),
        "completion": (["bash"], None),
        "copy": ([url, f"sqlite:///{ws / f'copy-{next(_ADMINS)}.db'}"], None),
    }.get(name, ([], None))


SAMPLE = {  # a value for each metavar that makes the call succeed
    ("migrate", "--target"): "001",
    ("import", "--format"): "pfdb",
    ("import", "--encoding"): "utf-8",
    ("import", "--batch-size"): "10",
    ("export", "--format"): "csv",
    ("export", "--category"): "apparel",
    ("export", "--changed-since"): "24h",
    ("logs", "--level"): "ERROR",
    ("logs", "--limit"): "5",
    ("import", "--currency"): "EUR",
    ("lint", "--only"): "002,003",
    ("migrate", "--parallel"): "2",
    ("tenant", "--server"): "default",
}


@pytest.mark.fresh_database  # restore replaces the tables: a database of its own
def test_every_documented_option_is_accepted_and_works(run_cli, workspace, database_url):
    code, _, err = run_cli("--database-url", database_url, "import", str(workspace / "feed.csv"))
    assert code == 0, err  # categories and products for export --category and the rest
    calls = 0
    tenants: list[str] = []
    documented = documented_json_keys()
    for name in cli.command_specs():
        _, out, _ = run_cli(name, "--help")
        _, options = help_arguments(out)
        for flag, metavar in options:
            if (name, flag) == ("tenant", "--to"):
                continue  # a move needs a second server: tests/test_tenant_servers.py
            if (name, flag) == ("tenant", "--role") and database_url.startswith("sqlite"):
                continue  # roles are PostgreSQL's (refused on SQLite: tests/test_tenants.py)
            args, stdin = base_call(name, workspace, run_cli, database_url, flag, tenants)
            if flag in args:
                continue
            if metavar is None:
                extra = [flag]
            elif flag == "--mapping":
                args, extra = [str(workspace / "other.csv")], [flag, str(workspace / "mapping.json")]
            elif metavar in ("FILE", "PATH"):
                extra = [flag, str(workspace / f"{name}-{flag.strip('-')}.out")]
            elif metavar == "SECONDS":
                extra = [flag, "5"]
            else:
                extra = [flag, SAMPLE[(name, flag)]]
            if (name, flag) == ("create-admin", "--password-stdin"):
                continue
            code, out, err = run_cli("--database-url", database_url, name, *args, *extra, stdin=stdin)
            assert code == 0, (name, extra, err)
            if flag == "--json":
                assert len(out.strip().splitlines()) == 1 and isinstance(json.loads(out), dict), (name, out)
                assert list(json.loads(out)) == documented[name], f"pfdb {name} --json keys differ from the docs"
            calls += 1
    assert calls > 40
    # Tenants' roles belong to the whole server, not to this test's database: drop them with their tenants.
    code, out, _ = run_cli("--database-url", database_url, "tenant", "list", "--json")
    for tenant in json.loads(out)["tenants"]:
        assert run_cli("--database-url", database_url, "tenant", "drop", tenant["name"], "--yes")[0] == 0


@pytest.mark.parametrize("name", list(cli.command_specs()))
def test_an_unknown_option_is_a_usage_error_with_a_suggestion(run_cli, name):
    spec = cli.command_specs()[name]
    code, out, err = run_cli(name, *(["x"] * len([a for a in spec.positionals if a.required])), "--jsn")
    assert code == 2 and out == ""
    assert err.startswith(f"error: pfdb {name}: unknown option --jsn") and len(err.strip().splitlines()) == 1
    if any(a.flag == "--json" for a in spec.options):
        assert "did you mean --json?" in err


def test_positional_arguments_are_not_options(run_cli, database_url):
    code, out, _ = run_cli("--database-url", database_url, "rollback", "--version", "001")
    assert code == 0 and out.startswith("pfdb ")  # the global --version, never rollback's VERSION
    code, _, err = run_cli("--database-url", database_url, "export", "--output", "x.csv")
    assert code == 2 and "unknown option --output" in err
    code, _, err = run_cli("--database-url", database_url, "status", "--json=yes")
    assert code == 2 and "--json takes no value" in err
    code, _, err = run_cli("--database-url", database_url, "migrate", "--lock-timeout", "abc")
    assert code == 2 and "--lock-timeout must be a number of seconds, got 'abc'" in err
    code, _, err = run_cli("--database-url", database_url, "wait", "--timeout", "nan")
    assert code == 2 and "finite" in err


def test_version_and_did_you_mean(run_cli):
    from pfdb import __version__

    for argv in (["--version"], ["status", "--version"]):
        code, out, _ = run_cli(*argv)
        assert code == 0 and out.strip() == f"pfdb {__version__}"
    code, _, err = run_cli("stauts")
    assert code == 2 and "unknown command 'stauts' (did you mean status?)" in err
    code, _, err = run_cli("--jsn")
    assert code == 2 and "unknown option '--jsn'" in err


def test_usage_errors_exit_2_and_operation_failures_exit_1(run_cli, database_url, tmp_path):
    code, _, err = run_cli("--database-url", database_url, "logs", "--level", "bogus")
    assert code == 2 and "--level must be one of" in err
    code, _, err = run_cli("--database-url", database_url, "logs", "--limit", "0")
    assert code == 2 and "--limit must be at least 1" in err
    code, _, err = run_cli("--database-url", database_url, "import", "--batch-size", "abc", "feed.csv")
    assert code == 2 and "--batch-size must be a whole number" in err
    code, _, err = run_cli("--database-url", database_url, "restore", str(tmp_path / "missing.db"), "--yes")
    assert code == 1 and "does not exist" in err
    code, _, _ = run_cli("--database-url", database_url, "rollback", "--json", migrations.migration_names()[-1])
    assert code == 0


def test_the_command_table_rejects_a_method_whose_help_disagrees():
    def documented(self, path: str, fast: bool = False, limit: int = 5):
        """Do a thing.

        Args:
            PATH: where
            --fast: quickly
            --limit N: how many

        Example: pfdb documented x
        """

    spec = cli_spec.command_from_method("documented", documented)
    assert cli_spec.parse(spec, ["x", "--limit=7", "--fast"]) == {"path": "x", "limit": 7, "fast": True}
    with pytest.raises(UsageError, match="--limit must be a whole number"):
        cli_spec.parse(spec, ["x", "--limit", "many"])

    def undocumented(self, path: str, fast: bool = False):
        """Do a thing.

        Args:
            PATH: where

        Example: pfdb undocumented x
        """

    with pytest.raises(ValueError, match="fast is not documented"):
        cli_spec.command_from_method("undocumented", undocumented)

    def misspelt(self, drift: bool = True):
        """Do a thing.

        Args:
            --drift: compare

        Example: pfdb misspelt
        """

    with pytest.raises(ValueError, match="--no-drift"):
        cli_spec.command_from_method("misspelt", misspelt)


def complete(script: str, words: list[str]) -> list[str]:
    line = " ".join(words)
    program = f'{script}\nCOMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _pfdb\nprintf "%s\\n" "${{COMPREPLY[@]}}"\n'
    result = subprocess.run(["bash", "-c", program], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_bash_completion_completes_commands_and_their_options(run_cli):
    code, script, _ = run_cli("completion", "bash")
    assert code == 0 and "complete -o default -F _pfdb pfdb" in script
    assert "create-migration" in complete(script, ["pfdb", "cr"])
    assert complete(script, ["pfdb", "--database-url", "sqlite:///x.db", "status", "--no"]) == ["--no-drift"]
    assert complete(script, ["pfdb", "import", "feed.csv", "--re"]) == ["--rejects"]
    assert "--json" in complete(script, ["pfdb", "rollback", "--"])


def test_zsh_completion_is_valid_zsh(run_cli):
    code, script, _ = run_cli("completion", "zsh")
    assert code == 0 and "bashcompinit" in script and "_pfdb" in script
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed here: the script's syntax is checked where it is")
    result = subprocess.run(["zsh", "-n", "-c", script], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr


def test_completion_for_an_unknown_shell(run_cli):
    code, _, err = run_cli("completion", "fsh")
    assert code == 2 and "no completion for shell 'fsh'" in err and "use bash or zsh" in err
