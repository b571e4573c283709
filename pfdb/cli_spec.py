"""The command line's surface: which arguments each command takes, its help, completion scripts.

One definition serves the parser, ``--help`` and completion, so help cannot promise an option
the parser refuses, nor hide one it accepts. The definition is the command method itself: its
signature gives the names, defaults and types; its docstring's ``Args:`` block spells each
argument the way a person types it::

    def rollback(self, version: str | None = None, yes: bool = False, lock_timeout: float = 600.0):
        '''Undo the last migration, everything after VERSION, or all of them (zero).

        Args:
            VERSION: the last migration to keep (001, 001_initial), or zero
            --yes: do not ask before dropping tables or columns
            --lock-timeout SECONDS: wait this long for another migration's lock

        Example: pfdb rollback 001
        '''

Upper-case names are positional, ``--name VALUE`` takes a value, ``--name`` alone is a flag
(``--no-name`` for a flag that is on by default). ``build()`` checks that every parameter is
spelled exactly once, so a new command cannot drift from its help. Nothing here imports Fire.
"""

from __future__ import annotations

import inspect
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from .errors import UsageError

PROG = "pfdb"

GLOBAL_OPTIONS = (
    ("--database-url URL", "the database (default: $DATABASE_URL, else sqlite:///pfdb.db)"),
    ("--tenant NAME", "work on one tenant (default: $PFDB_TENANT, else the main database)"),
    ("--debug", "show a traceback with errors (also PFDB_DEBUG=1)"),
    ("--version", "print pfdb's version and exit"),
    ("-h, --help", "show help: pfdb --help, or pfdb COMMAND --help"),
)

_ENTRY = re.compile(r"^(?P<spelling>[A-Z][A-Z0-9_]*|--[a-z][a-z0-9-]*(?: [A-Z][A-Z0-9_]*)?):\s+(?P<help>.+)$")


@dataclass(frozen=True)
class Argument:
    """One argument of one command, as typed and as the method receives it."""

    param: str  # the method's parameter name
    flag: str | None  # "--lock-timeout", "--no-drift"; None for a positional
    metavar: str | None  # "SECONDS", "VERSION"; None for a flag without a value
    help: str
    default: Any
    required: bool
    convert: Callable[[str, str], Any]  # (shown name, text) -> value

    @property
    def positional(self) -> bool:
        return self.flag is None

    @property
    def is_switch(self) -> bool:
        return self.flag is not None and self.metavar is None

    @property
    def shown(self) -> str:
        if self.positional:
            return self.metavar or self.param.upper()
        return f"{self.flag} {self.metavar}" if self.metavar else str(self.flag)


@dataclass(frozen=True)
class Command:
    name: str  # as typed: "create-migration", "import"
    method: str  # PfdbCLI method: "create_migration", "import_products"
    summary: str
    description: str
    example: str
    arguments: tuple[Argument, ...]

    @property
    def positionals(self) -> tuple[Argument, ...]:
        return tuple(a for a in self.arguments if a.positional)

    @property
    def options(self) -> tuple[Argument, ...]:
        return tuple(a for a in self.arguments if not a.positional)

    def usage(self) -> str:
        parts = [PROG, self.name]
        for a in self.positionals:
            parts.append(a.shown if a.required else f"[{a.shown}]")
        parts.extend(f"[{a.shown}]" for a in self.options)
        return " ".join(parts)


# -- values ------------------------------------------------------------------------------------
def _text(name: str, value: str) -> str:
    return value


def _whole_number(name: str, value: str) -> int:
    try:
        return int(str(value).strip())
    except ValueError:
        raise UsageError(f"{name} must be a whole number, got {value!r}") from None


def _seconds(name: str, value: str) -> float:
    try:
        result = float(str(value).strip())
    except ValueError:
        raise UsageError(f"{name} must be a number of seconds, got {value!r}") from None
    if not math.isfinite(result) or result < 0:
        raise UsageError(f"{name} must be a finite, non-negative number of seconds, got {value!r}")
    return result


def _converter(annotation: Any, default: Any) -> Callable[[str, str], Any]:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    kind = kind.replace(" ", "")
    if kind == "int" or (type(default) is int):
        return _whole_number
    if kind == "float" or isinstance(default, float):
        return _seconds
    return _text


# -- building the definition ---------------------------------------------------------------------
def _split_docstring(doc: str) -> tuple[str, str, list[str], str]:
    """(summary, description, Args lines, example) of a command's docstring."""
    lines = inspect.cleandoc(doc or "").splitlines()
    summary = lines[0].strip() if lines else ""
    body: list[str] = []
    args: list[str] = []
    example = ""
    section = "body"
    for line in lines[1:]:
        stripped = line.strip()
        if stripped == "Args:":
            section = "args"
            continue
        if stripped.startswith("Example:"):
            example = stripped.removeprefix("Example:").strip()
            section = "done"
            continue
        if section == "args":
            if not stripped:
                section = "after"
                continue
            if line.startswith((" ", "\t")) and _ENTRY.match(stripped):
                args.append(stripped)
            elif args:  # a wrapped help line continues the entry before it
                args[-1] += " " + stripped
            continue
        if section in ("body", "after"):
            body.append(line)
    return summary, "\n".join(body).strip(), args, example


def command_from_method(name: str, fn: Callable[..., Any]) -> Command:
    """The ``Command`` of a PfdbCLI method; raises ``ValueError`` where help and signature disagree."""
    summary, description, entries, example = _split_docstring(fn.__doc__ or "")
    params = {p.name: p for p in inspect.signature(fn).parameters.values() if p.name != "self"}
    arguments: list[Argument] = []
    seen: set[str] = set()
    for entry in entries:
        match = _ENTRY.match(entry)
        assert match is not None
        spelling, help_text = match["spelling"], match["help"].strip()
        if spelling.startswith("--"):
            flag, _, metavar = spelling.partition(" ")
            param_name = flag[2:].replace("-", "_")
            if param_name not in params and param_name.startswith("no_"):
                param_name = param_name[3:]
            param = params.get(param_name)
            if param is None:
                raise ValueError(f"{name}: {flag} is documented but the method has no parameter {param_name}")
            is_bool = isinstance(param.default, bool)
            if is_bool and metavar:
                raise ValueError(f"{name}: {flag} is a switch and takes no value")
            if not is_bool and not metavar:
                raise ValueError(f"{name}: {flag} takes a value: write it as '{flag} NAME'")
            if is_bool and (flag.startswith("--no-") != (param.default is True)):
                raise ValueError(
                    f"{name}: {flag} must be spelled --no-{param_name.replace('_', '-')} "
                    f"when it is on by default, --{param_name.replace('_', '-')} otherwise"
                )
            arguments.append(
                Argument(
                    param_name,
                    flag,
                    metavar or None,
                    help_text,
                    param.default,
                    False,
                    _converter(param.annotation, param.default),
                )
            )
        else:
            param_name = spelling.lower()
            param = params.get(param_name)
            if param is None:
                raise ValueError(f"{name}: {spelling} is documented but the method has no parameter {param_name}")
            required = param.default is inspect.Parameter.empty
            if not required and param.default is not None:
                raise ValueError(f"{name}: positional {spelling} must be required or default to None")
            arguments.append(
                Argument(
                    param_name,
                    None,
                    spelling,
                    help_text,
                    None if required else param.default,
                    required,
                    _converter(param.annotation, param.default),
                )
            )
        if param_name in seen:
            raise ValueError(f"{name}: {param_name} is documented twice")
        seen.add(param_name)
    missing = [p for p in params if p not in seen]
    if missing:
        raise ValueError(f"{name}: parameter {missing[0]} is not documented in its Args: block")
    if not example.startswith(f"{PROG} {name}"):
        raise ValueError(f"{name}: the docstring must end with 'Example: {PROG} {name} …'")
    return Command(name, fn.__name__, summary, description, example, tuple(arguments))


# -- parsing -----------------------------------------------------------------------------------
def suggest(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean X?)' for a close match, else ''."""
    import difflib

    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def parse(command: Command, args: list[str]) -> dict[str, Any]:
    """The method's keyword arguments for ``args``, or a ``UsageError`` naming what is wrong."""
    by_flag = {a.flag: a for a in command.options}
    positionals = list(command.positionals)
    values: dict[str, Any] = {}
    where = f"{PROG} {command.name}"
    i = 0
    only_positionals = False
    while i < len(args):
        arg = args[i]
        if not only_positionals and arg == "--":
            only_positionals = True
            i += 1
            continue
        if not only_positionals and arg.startswith("-") and arg != "-" and not _is_number(arg):
            flag, has_value, value = arg.partition("=")
            option = by_flag.get(flag)
            if option is None:
                known = [a.flag for a in command.options if a.flag]
                raise UsageError(f"{where}: unknown option {flag}{suggest(flag, known)}", hint=f"see {where} --help")
            if option.param in values:
                raise UsageError(f"{where}: option {flag} is given twice")
            if option.is_switch:
                if has_value:
                    raise UsageError(f"{where}: option {flag} takes no value")
                values[option.param] = not option.flag.startswith("--no-")
            else:
                if not has_value:
                    if i + 1 >= len(args):
                        raise UsageError(f"{where}: option {flag} needs a value ({option.metavar})")
                    i += 1
                    value = args[i]
                values[option.param] = option.convert(flag, value)
            i += 1
            continue
        remaining = [a for a in positionals if a.param not in values]
        if not remaining:
            raise UsageError(f"{where}: unexpected argument {arg!r}", hint=f"see {where} --help")
        values[remaining[0].param] = remaining[0].convert(remaining[0].shown, arg)
        i += 1
    missing = [a for a in positionals if a.required and a.param not in values]
    if missing:
        raise UsageError(f"{where}: missing argument {missing[0].shown}", hint=f"see {where} --help")
    return values


def _is_number(arg: str) -> bool:
    """``-1`` or ``-0.5`` is a value, not an option."""
    try:
        float(arg)
        return True
    except ValueError:
        return False


# -- help --------------------------------------------------------------------------------------
def _table(rows: list[tuple[str, str]], indent: int = 2) -> list[str]:
    width = min(max((len(left) for left, _ in rows), default=0), 28)
    out = []
    for left, right in rows:
        if len(left) > width:
            out.append(" " * indent + left)
            out.append(" " * (indent + width + 2) + right)
        else:
            out.append(" " * indent + f"{left:<{width}}  {right}")
    return out


def _default_note(argument: Argument) -> str:
    if argument.positional or argument.is_switch or argument.default in (None, ""):
        return ""
    default = argument.default
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    return f" (default: {default})"


def command_help(command: Command) -> str:
    lines = [f"usage: {command.usage()}", "", command.summary]
    if command.description:
        lines += ["", command.description]
    if command.positionals:
        lines += ["", "arguments:"]
        lines += _table([(a.shown, a.help) for a in command.positionals])
    if command.options:
        lines += ["", "options:"]
        lines += _table([(a.shown, a.help + _default_note(a)) for a in command.options])
    lines += ["", "global options:"]
    lines += _table(list(GLOBAL_OPTIONS))
    lines += ["", f"Example: {command.example}"]
    return "\n".join(lines)


def main_help(summary: str, commands: list[Command]) -> str:
    lines = [
        f"usage: {PROG} [--database-url URL] [--tenant NAME] [--debug] COMMAND [ARGUMENTS] [OPTIONS]",
        "",
        summary,
        "",
        "commands:",
    ]
    lines += _table([(c.name, c.summary) for c in commands])
    lines += ["", "global options:"]
    lines += _table(list(GLOBAL_OPTIONS))
    lines += [
        "",
        f"Run '{PROG} COMMAND --help' for a command's arguments and options; every command is a "
        "Python function too (docs/commands.md).",
    ]
    return "\n".join(lines)


# -- completion --------------------------------------------------------------------------------
_GLOBAL_FLAGS = ("--database-url", "--tenant", "--debug", "--version", "--help")


def completion_script(shell: str, commands: list[Command]) -> str:
    """A bash or zsh completion script for ``commands`` (zsh loads it through bashcompinit)."""
    names = " ".join(c.name for c in commands)
    cases = []
    for c in commands:
        flags = " ".join([*(a.flag for a in c.options if a.flag), "--help"])
        files = "1" if any(a.metavar in ("FILE", "PATH", "OUTPUT") for a in c.positionals) else "0"
        cases.append(f'        {c.name}) opts="{flags}"; files={files} ;;')
    body = "\n".join(cases)
    bash = f"""# {PROG} completion for bash: eval "$({PROG} completion bash)" (or save it under
# /etc/bash_completion.d/{PROG}).
_{PROG}() {{
    local cur command i opts files
    cur="${{COMP_WORDS[COMP_CWORD]}}"
    command=""
    for ((i = 1; i < COMP_CWORD; i++)); do
        case "${{COMP_WORDS[i]}}" in
            --database-url|--tenant) ((i++)) ;;
            -*) ;;
            *) command="${{COMP_WORDS[i]}}"; break ;;
        esac
    done
    if [[ "${{COMP_WORDS[COMP_CWORD-1]}}" == --database-url || "${{COMP_WORDS[COMP_CWORD-1]}}" == --tenant ]]; then
        COMPREPLY=()
        return 0
    fi
    if [[ -z "$command" ]]; then
        COMPREPLY=($(compgen -W "{names} {" ".join(_GLOBAL_FLAGS)}" -- "$cur"))
        return 0
    fi
    opts="--help"; files=0
    case "$command" in
{body}
    esac
    if [[ "$cur" == -* || "$files" == 0 ]]; then
        COMPREPLY=($(compgen -W "$opts" -- "$cur"))
    else
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    return 0
}}
complete -o default -F _{PROG} {PROG}
"""
    if shell == "bash":
        return bash
    if shell == "zsh":
        return (
            f'# {PROG} completion for zsh: eval "$({PROG} completion zsh)" in ~/.zshrc\n'
            "autoload -U +X compinit && compinit\nautoload -U +X bashcompinit && bashcompinit\n" + bash
        )
    raise UsageError(f"no completion for shell {shell!r}{suggest(shell, ('bash', 'zsh'))}", hint="use bash or zsh")
