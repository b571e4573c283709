"""Before the workers start, the run compiles the test modules a fresh checkout has no bytecode for, once."""

from __future__ import annotations

import os
import time
from pathlib import Path

import bytecode_cache


def test_the_modules_without_bytecode_are_compiled_once_before_the_workers(tmp_path):
    tests = tmp_path / "tests"
    tests.mkdir()
    for name in ("test_one", "test_two", "test_three"):
        (tests / f"{name}.py").write_text("def test_it():\n    assert 1 + 1 == 2\n")
    (tests / "helpers.py").write_text("X = 1\n")  # not a test module: not pytest's to rewrite
    prefix = str(tmp_path / "pycache")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"} | {"PYTHONPYCACHEPREFIX": prefix}

    assert [p.name for p in bytecode_cache.not_cached(tests, prefix)] == ["test_one.py", "test_three.py", "test_two.py"]
    filled = bytecode_cache.fill(tests, env)
    assert sorted(p.name for p in filled) == ["test_one.py", "test_three.py", "test_two.py"]
    assert bytecode_cache.not_cached(tests, prefix) == []
    compiled = bytecode_cache.cache_dir(tests, prefix) / f"test_one.{bytecode_cache.PYTEST_TAG}.pyc"
    assert compiled.stat().st_size > 0

    before = compiled.stat().st_mtime_ns
    time.sleep(0.01)
    assert bytecode_cache.fill(tests, env) == []  # a warm cache: nothing runs
    assert compiled.stat().st_mtime_ns == before


def test_without_a_prefix_the_cache_is_the_folder_s_own(tmp_path):
    assert bytecode_cache.cache_dir(tmp_path, None) == tmp_path / "__pycache__"
    assert bytecode_cache.cache_dir(tmp_path, "/p") == Path("/p", *tmp_path.resolve().parts[1:])
