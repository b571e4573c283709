"""The documentation is tested: every command is documented as the parser defines it, every
example marked runnable runs, and every local link leads somewhere.

Mark a code block runnable by adding ``run`` to its fence: three backticks, then ``python run``
or ``sh run``. It then runs in an empty folder (``examples/`` linked in), with this checkout's
``pfdb`` first on PATH and no DATABASE_URL: what a newcomer's fresh folder looks like.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pfdb import cli

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "benchmarks" / "README.md"]
FENCE = re.compile(r"^```(?P<info>[^\n]*)\n(?P<body>.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def sections(text: str, level: str = "## ") -> dict[str, str]:
    """Heading -> its text, for one heading level (outside code blocks)."""
    out: dict[str, str] = {}
    current = None
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if not fence and line.startswith(level):
            current = line[len(level) :].strip()
            out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out


def runnable_blocks() -> list[tuple[str, str, str]]:
    blocks = []
    for page in PAGES:
        for n, match in enumerate(FENCE.finditer(page.read_text(encoding="utf-8"))):
            words = match["info"].split()
            if len(words) >= 2 and words[1] == "run":
                blocks.append((f"{page.relative_to(ROOT)}#{n}", words[0], match["body"]))
    return blocks


def test_the_readme_is_short_and_keeps_its_two_command_quick_start():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 200
    quick = sections(text)["Quick start"]
    commands = [line for line in quick.splitlines() if line.startswith("python3 -m venv")]
    assert len(commands) == 2
    assert "pip install ." in commands[0] and "pfdb init" in commands[0] and "pfdb import" in commands[0]
    assert 'pip install ".[test]"' in commands[1] and commands[1].endswith("pytest")


def test_ci_runs_the_test_command_the_readme_gives():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python -m pytest" in ci.splitlines()[-1] or ci.rstrip().endswith("python -m pytest")


@pytest.mark.parametrize("name", list(cli.command_specs()))
def test_every_command_has_a_section_with_its_usage_and_an_example(name):
    spec = cli.command_specs()[name]
    text = sections((ROOT / "docs" / "commands.md").read_text(encoding="utf-8")).get(f"pfdb {name}")
    assert text is not None, f"docs/commands.md has no '## pfdb {name}' section"
    assert f"usage: {spec.usage()}\n" in text, f"the usage line of pfdb {name} in docs/commands.md is stale"
    examples = [m["body"] for m in FENCE.finditer(text) if m["info"].split()[:1] in (["console"], ["sh"])]
    assert any(f"pfdb {name}" in body for body in examples), f"pfdb {name} has no example"
    if any(a.flag == "--json" for a in spec.options):
        assert "JSON keys: `" in text, f"pfdb {name} does not list its JSON keys"


def test_runnable_examples_exist():
    kinds = {kind for _, kind, _ in runnable_blocks()}
    assert {"python", "sh"} <= kinds


@pytest.mark.parametrize("where,kind,body", runnable_blocks(), ids=[b[0] for b in runnable_blocks()])
def test_runnable_example(where, kind, body, tmp_path):
    bin_dir = tmp_path / ".bin"
    bin_dir.mkdir()
    shim = bin_dir / "pfdb"
    shim.write_text(f'#!/bin/sh\nexec {sys.executable} {ROOT / "bin" / "pfdb"} "$@"\n')
    shim.chmod(0o755)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "MIGRATION_", "PFDB_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT)
    command = [sys.executable, "-c", body] if kind == "python" else ["bash", "-e", "-c", body]
    result = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    assert result.returncode == 0, f"{where} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr


def test_local_links_lead_somewhere():
    broken = []
    for page in PAGES:
        text = FENCE.sub("", page.read_text(encoding="utf-8"))
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            if "://" in target or target.startswith("mailto:"):
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken, broken
