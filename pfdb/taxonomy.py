"""Reading category-tree files: the Google product taxonomy format and plain ``A > B > C`` paths.

Pure parsing, no database: ``read_taxonomy()`` turns a file (a path, ``.gz``, or an open
binary or text stream) into ``TaxonomyNode``s ordered parents first, or raises one
``FeedError`` naming the file and the line. The whole file is checked before the caller
writes anything, so a bad line at the end cannot leave half a tree behind.
"""

from __future__ import annotations

import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ._input import Opened, open_input
from .category_paths import MAX_NAME as MAX_NAME  # names and paths: pfdb.category_paths
from .category_paths import SEPARATOR, clean_name, join_names, name_problem
from .errors import FeedError

# "1604 - Apparel & Accessories > Clothing": spaces around the dash, so "2-in-1 Laptops" is a name.
_WITH_ID = re.compile(r"^(\d+)\s+-\s+(.*)$")
_ID_ONLY = re.compile(r"^(\d+)(\s+-)?$")
MAX_EXTERNAL_ID = 100


@dataclass(frozen=True)
class TaxonomyNode:
    """One category of the file: its names from the root, its id (if the file gives one), its line.

    ``line`` is the line that names it, or for an ancestor only implied by a deeper path
    (``A > B`` with no ``A`` line), the first line that implies it.
    """

    names: tuple[str, ...]
    external_id: str | None
    line: int

    @property
    def depth(self) -> int:
        return len(self.names) - 1

    @property
    def path(self) -> str:
        return join_names(self.names)


def source_name(source: Any) -> str:
    if isinstance(source, (str, os.PathLike)):
        return str(source)
    name = getattr(source, "name", None)
    return name if isinstance(name, str) and name else "<stream>"


def _open(source: Any) -> Opened:
    """The file by ``pfdb._input``'s one rule (gzip by its bytes, not its name); a path error is a ``FeedError``."""
    try:
        return open_input(source, stdin=False)
    except IsADirectoryError:
        raise FeedError(f"cannot read {source}: it is a folder", hint="give the taxonomy file itself") from None
    except OSError as exc:
        raise FeedError(f"cannot read {source}: {exc.strerror or exc}", hint="check the path") from None


def iter_lines(source: Any) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` without the line ending; UTF-8 with or without BOM, LF or CRLF."""
    name = source_name(source)
    opened = _open(source)
    stream = opened.binary if opened.binary is not None else opened.text
    number = 0
    try:
        for number, raw in enumerate(stream, start=1):  # noqa: B007  (number is read after the loop)
            if isinstance(raw, bytes):
                if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                    raw = raw[3:]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as exc:
                    raise FeedError(
                        f"{name} line {number}: not UTF-8 text ({exc.reason} at byte {exc.start})",
                        hint="save the file as UTF-8",
                    ) from None
            else:
                text = raw[1:] if number == 1 and raw.startswith("\ufeff") else raw
            yield number, text.rstrip("\r\n")
    except UnicodeDecodeError as exc:  # from a text stream the caller opened
        raise FeedError(
            f"{name} line {number + 1}: not UTF-8 text ({exc.reason})", hint="save the file as UTF-8"
        ) from None
    except (OSError, EOFError, zlib.error) as exc:
        raise FeedError(f"cannot read {name} after line {number}: {exc}", hint="check the file is complete") from None
    finally:
        opened.close()


def _bad(name: str, number: int, text: str, why: str) -> FeedError:
    shown = text if len(text) <= 60 else text[:57] + "..."
    return FeedError(
        f"{name} line {number}: {shown!r} is not a taxonomy line ({why})",
        hint="use 'id - A > B > C' or 'A > B > C', one category per line; '#' starts a comment",
    )


def parse_line(name: str, number: int, text: str) -> TaxonomyNode | None:
    """One line as a node; ``None`` for blank and ``#`` comment lines."""
    line = text.strip()
    if not line or line.startswith("#"):
        return None
    if _ID_ONLY.match(line):
        raise _bad(name, number, text, "an id without a category name")
    external_id = None
    match = _WITH_ID.match(line)
    if match:
        external_id, line = match.group(1), match.group(2)
        if len(external_id) > MAX_EXTERNAL_ID:
            raise _bad(name, number, text, f"the id is longer than {MAX_EXTERNAL_ID} digits")
    names = []
    for part in line.split(SEPARATOR):
        problem = name_problem(part)
        if problem:
            raise _bad(name, number, text, problem)
        names.append(clean_name(part))
    return TaxonomyNode(tuple(names), external_id, number)


def read_taxonomy(source: Any) -> list[TaxonomyNode]:
    """Every category of the file once, parents before children (by depth, then file order).

    Ancestors that have no line of their own are added (without an id). A path given two
    different ids, or an id given to two paths, is an error naming both lines.
    """
    name = source_name(source)
    by_path: dict[tuple[str, ...], TaxonomyNode] = {}
    by_id: dict[str, TaxonomyNode] = {}
    for number, text in iter_lines(source):
        node = parse_line(name, number, text)
        if node is None:
            continue
        seen = by_path.get(node.names)
        if node.external_id is not None:
            other = by_id.get(node.external_id)
            if other is not None and other.names != node.names:
                raise FeedError(
                    f"{name} line {number}: id {node.external_id} is already used on line {other.line} "
                    f"for {other.path!r}",
                    hint="each id names one category",
                )
            if seen is not None and seen.external_id not in (None, node.external_id):
                raise FeedError(
                    f"{name} line {number}: {node.path!r} has id {node.external_id} here but "
                    f"{seen.external_id} on line {seen.line}",
                    hint="give each category one id",
                )
            by_id[node.external_id] = node
        if seen is None or (seen.external_id is None and node.external_id is not None):
            by_path[node.names] = node if seen is None else TaxonomyNode(node.names, node.external_id, seen.line)
    for node in list(by_path.values()):
        for depth in range(1, len(node.names)):
            prefix = node.names[:depth]
            if prefix not in by_path:
                by_path[prefix] = TaxonomyNode(prefix, None, node.line)
    return sorted(by_path.values(), key=lambda n: (n.depth, n.line))
