"""What pip users get: the sdist carries a runnable test suite, the wheel finds its migrations,
and the internals pfdb leans on in its pinned dependencies are still there."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import DESELECTED

ROOT = Path(__file__).resolve().parent.parent


def run(args, cwd, env_extra=None, timeout=60):
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "PAGER")}
    env.update(env_extra or {})
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


# What ``python -m build`` does (the sdist, then the wheel built from that unpacked sdist, as pip
# would), in one isolated environment instead of two: making one (a venv, then pip installing
# the build requirements) was half of the build's time.
BUILD = """
import sys, tarfile, tempfile
from pathlib import Path
from build import ProjectBuilder
from build.env import DefaultIsolatedEnv

root, out = Path(sys.argv[1]), Path(sys.argv[2])
with DefaultIsolatedEnv() as env:
    builder = ProjectBuilder.from_isolated_env(env, root)
    env.install(builder.build_system_requires)
    env.install(builder.get_requires_for_build("sdist"))
    sdist = builder.build("sdist", out)
    with tempfile.TemporaryDirectory() as unpacked, tarfile.open(sdist) as archive:
        archive.extractall(unpacked, filter="data")
        builder = ProjectBuilder.from_isolated_env(env, next(Path(unpacked).iterdir()))
        env.install(builder.get_requires_for_build("wheel"))
        builder.build("wheel", out)
"""


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """The sdist, then the wheel built from that sdist (as pip would), in an isolated environment."""
    out = tmp_path_factory.mktemp("dist")
    result = run([sys.executable, "-c", BUILD, str(ROOT), str(out)], out, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert len(list(out.glob("pfdb-*.tar.gz"))) == 1 and len(list(out.glob("pfdb-*.whl"))) == 1
    assert "deprecated" not in (result.stdout + result.stderr).lower(), "the build warns about a deprecated form"
    return out


def test_the_sdist_carries_the_tests_and_what_they_read(dist):
    sdist = next(dist.glob("pfdb-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    wanted = {"LICENSE", "README.md", "pyproject.toml", "bin/pfdb"}
    for folder, pattern in (("tests", "*.py"), ("migrations", "*.py"), ("examples", "*"), ("pfdb", "**/*.py")):
        wanted |= {
            str(p.relative_to(ROOT))
            for p in (ROOT / folder).glob(pattern)
            if p.is_file() and "__pycache__" not in p.parts
        }
    assert not wanted - names, f"missing from the sdist: {sorted(wanted - names)}"


def test_the_unpacked_sdist_collects_its_whole_suite(dist, tmp_path, request):
    sdist = next(dist.glob("pfdb-*.tar.gz"))
    with tarfile.open(sdist) as archive:
        archive.extractall(tmp_path, filter="data")
    unpacked = next(tmp_path.glob("pfdb-*"))
    # Without assertion rewriting, which collecting does not need (a third of the cost).
    collect = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "--assert=plain"]
    theirs = run(collect, unpacked, {"PYTHONPATH": str(unpacked)})
    assert theirs.returncode == 0, theirs.stdout[-2000:] + theirs.stderr[-2000:]
    if collected_the_whole_suite(request.session):
        mine = {item.nodeid for item in request.session.items}  # this run's own collection, at no cost
    else:  # some tests only (-k, a file): collect the checkout's whole suite to compare with
        result = run(collect, ROOT)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        mine = collected_ids(result.stdout)
    assert len(mine) > 100 and collected_ids(theirs.stdout) == mine, sorted(mine ^ collected_ids(theirs.stdout))[:10]


def collected_ids(output: str) -> set[str]:
    return {line for line in output.splitlines() if "::" in line}


def collected_the_whole_suite(session) -> bool:
    """This run collected every test module of the checkout and deselected nothing (tests/conftest.py counts)."""
    modules = {str(path.relative_to(ROOT)) for path in (ROOT / "tests").glob("test_*.py")}
    seen = {item.nodeid.split("::", 1)[0] for item in session.items}
    return seen == modules and not session.config.stash.get(DESELECTED, 0)


def test_the_wheel_declares_its_license_and_pins(dist):
    import zipfile

    wheel = next(dist.glob("pfdb-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(next(n for n in archive.namelist() if n.endswith("METADATA"))).decode()
        assert any(n.endswith("licenses/LICENSE") for n in archive.namelist())
    assert "License-Expression: MIT" in metadata
    assert "Requires-Python: >=3.11" in metadata  # what peewee-migrate 2.3 needs; the README says so too
    assert "Classifier: Topic :: Database" in metadata
    assert "Requires-Dist: fire<0.8,>=0.7.1" in metadata
    assert "Requires-Dist: peewee-migrate<2.4,>=2.3.0" in metadata


def test_installed_wheel_finds_its_migrations_from_any_folder(dist, tmp_path):
    """pip install (not editable), then `pfdb migrate` from an unrelated working directory."""
    site = tmp_path / "site"
    wheel = next(dist.glob("pfdb-*.whl"))
    result = run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {"PYTHONPATH": str(site), "DATABASE_URL": f"sqlite:///{elsewhere / 'shop.db'}"}
    probe = run([sys.executable, "-c", "import pfdb.migrations as m; print(m.migrations_dir())"], elsewhere, env)
    assert probe.stdout.strip() == str(site / "pfdb" / "_migrations")
    result = run([sys.executable, str(site / "bin" / "pfdb"), "migrate"], elsewhere, env)
    assert result.returncode == 0, result.stderr
    assert "applied: 001_initial" in result.stdout


# -- the internals pfdb relies on ----------------------------------------------------------------
# pfdb pins peewee-migrate and Fire to the releases the suite runs because it uses parts of them
# that are not promised to stay. Each test names one such part: when a release moves it, the test
# says what to revisit instead of pfdb failing somewhere deep.


def test_peewee_migrate_internals_pfdb_uses():
    from peewee_migrate import Migrator, auto
    from peewee_migrate.models import MigrateHistory

    from pfdb._peewee import peewee

    assert peewee.DecimalField in auto.FIELD_TO_PARAMS  # patched: it writes an unquoted rounding
    assert callable(auto.model_to_code) and "INDENT" in vars(auto)  # patched: legacy index names
    assert callable(auto.diff_many)  # the model diff behind check / create-migration
    assert {"name", "migrated_at"} <= set(MigrateHistory._meta.fields)  # pfdb reads the history itself
    for operation in ("drop_index", "__get_model__", "orm", "__ops__"):
        assert hasattr(Migrator, operation) or operation in Migrator.__init__.__code__.co_names, operation


def test_fire_internals_pfdb_uses():
    import inspect

    from fire import core

    assert "command" in inspect.signature(core.Fire).parameters  # pfdb passes the parsed command
    # Per-call argument parsers: pfdb sets FIRE_METADATA the way fire.decorators.SetParseFns does.
    from fire import decorators

    assert decorators.FIRE_METADATA == "FIRE_METADATA" and decorators.FIRE_PARSE_FNS == "FIRE_PARSE_FNS"
    assert decorators.ACCEPTS_POSITIONAL_ARGS == "ACCEPTS_POSITIONAL_ARGS"
