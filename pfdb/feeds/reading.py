"""Opening feed files: a path or standard input, plain or gzip, UTF-8 with or without a BOM.

``open_feed`` peeks at the first bytes and the first line only, so a feed of any size
streams: the header decides CSV or JSON Lines and the CSV delimiter, and the rows come
from an iterator over the rest. Line numbers are physical lines of the file (a quoted
newline inside a CSV cell makes a record span several), which is what a person sees
in an editor.
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Any

from .._input import STDIN as STDIN  # "-": the name callers have imported from here
from .._input import open_input
from ..errors import FeedError

DEFAULT_ENCODING = "utf-8-sig"  # "utf-8" that also drops a leading byte order mark
# Delimiters a header line is sniffed for, in order of preference on a tie.
_DELIMITERS = (",", "\t", ";")
#: The longest CSV cell, in characters. HTML descriptions easily pass csv's default 128 KiB;
#: a longer cell rejects its row. The csv module holds a cell at 4 bytes a character.
FIELD_SIZE_LIMIT = 8 * 1024 * 1024
#: The longest physical line read at once, in characters: a longer one is read in pieces,
#: dropped, and rejects its row, so memory stays bounded whatever the file holds.
LINE_LIMIT = 2 * FIELD_SIZE_LIMIT
_CHUNK = 1024 * 1024  # pieces an over-long line is dropped in
# Served once after the last line of a CSV feed: a record that ends with it was still inside
# a quoted cell when the file ended (the csv module would silently end the cell there).
_END = "\x00pfdb: end of feed\x00"


class LineTooLong(Exception):
    """A physical line longer than ``LINE_LIMIT``; it has been read and dropped."""

    def __init__(self, line: int, quotes: int):
        super().__init__(f"line {line} is longer than {LINE_LIMIT:,} characters")
        self.line = line
        self.quotes = quotes  # '"' characters in it, for where the next record starts


class FeedLines:
    """The feed's text lines, header first, each read with a bound (iterating a file reads any length).

    A line over ``LINE_LIMIT`` is read on in pieces and dropped, and ``LineTooLong`` is
    raised in its place: a csv reader passes the exception on and starts a fresh record
    at the next line. A class, not a generator: it goes on after raising.
    """

    def __init__(self, text: IO[str], first: str, skipped: int = 0):
        """``first``: the first line with text, already read; ``skipped``: the blank lines before it."""
        self._readline = text.readline
        self._first: str | None = first
        self.number = skipped  # the line number of the last line served
        self.last = ""  # the last line served (a cell over the limit is judged by its quotes)
        self.end_marker = False  # CSV: serve ``_END`` once when the file ends
        self.ended = False  # ``_END`` was served

    def __iter__(self) -> FeedLines:
        return self

    def __next__(self) -> str:
        if self._first is not None:
            line, self._first = self._first, None
        else:
            line = self._readline(LINE_LIMIT + 1)
        if not line:
            if self.end_marker and not self.ended:
                self.ended = True
                return _END
            raise StopIteration
        self.number += 1
        if len(line) > LINE_LIMIT and line[-1] not in "\r\n":
            raise LineTooLong(self.number, line.count('"') + self._drop_rest())
        self.last = line
        return line

    def _drop_rest(self) -> int:
        """Read past the rest of an over-long line; the quotes in it."""
        quotes = 0
        while True:
            piece = self._readline(_CHUNK)
            quotes += piece.count('"')
            if not piece or piece[-1] in "\r\n":
                return quotes

    def skip_quoted(self) -> tuple[int, bool]:
        """Read past the lines up to the one that closes an open quote: (its line number, whether one did)."""
        while True:
            try:
                line = next(self)
            except StopIteration:
                return self.number, False
            except LineTooLong as exc:
                quotes = exc.quotes
            else:
                if line is _END:
                    self.ended = False  # the csv reader is to see the end of the file too
                    return self.number, False
                quotes = line.count('"')
            if quotes % 2:
                return self.number, True


@dataclass(frozen=True)
class BrokenRow:
    """A row the reader could not make cells of (over a limit, an unclosed quote): rejected whole."""

    line: int
    message: str
    raw: Any  # what the rejects file gets for it


@dataclass
class FeedInput:
    """An opened feed: what it is and the text lines it holds, header first."""

    name: str  # the path as given, or "<stdin>"
    kind: str  # "csv" or "jsonl"
    lines: FeedLines
    delimiter: str = ","
    header: list[str] = field(default_factory=list)  # CSV columns as written in the file
    first_object: dict[str, Any] | None = None  # JSON Lines: the first record, for format detection
    size: int | None = None  # bytes on disk (compressed size for .gz); None for a stream or a pipe
    position: Callable[[], int] | None = None  # bytes consumed from disk so far
    #: rows the reader rejected whole, in file order; the importer takes them out as it goes
    broken: list[BrokenRow] = field(default_factory=list)

    def csv_rows(self) -> Iterator[tuple[int, list[str]]]:
        """``(line, cells)`` for every data row; blank lines are skipped.

        A row over a limit, or one whose quote is still open when the file ends, goes to
        ``broken`` instead, and reading goes on with the next record.
        """
        lines = self.lines
        reader = csv.reader(lines, delimiter=self.delimiter)
        next(reader, None)  # the header, already parsed
        lines.end_marker = True
        line = lines.number + 1  # where the next record starts (csv's line_num skips dropped lines)
        while True:
            try:
                for cells in reader:
                    if lines.ended:  # the record that took the end marker: the last one
                        if cells != [_END]:
                            self._unclosed_quote(line, cells)
                        return
                    if len(cells) > 1 or (cells and cells[0].strip()):
                        yield line, cells
                    line = lines.number + 1
                return
            except LineTooLong as exc:
                # Before the long line the record was inside quotes if it began on an earlier line.
                inside = (exc.line > line) != bool(exc.quotes % 2)
                end, closed = lines.skip_quoted() if inside else (exc.line, True)
                where = "the line" if exc.line == line else f"line {exc.line} of the row"
                reason = f"{where} is longer than {LINE_LIMIT:,} characters, the limit for one line"
            except csv.Error as exc:
                end = lines.number
                inside = (end > line) != bool(lines.last.count('"') % 2)
                closed = True
                if inside:
                    end, closed = lines.skip_quoted()
                reason = (
                    f"a cell is longer than {csv.field_size_limit():,} characters, the limit for one cell"
                    if "field larger than field limit" in str(exc)
                    else f"not valid CSV ({exc})"
                )
            if end > line:
                reason += f" (the row runs to line {end}"
                reason += (
                    ")" if closed else f"; the quote opened in it is never closed: is one missing on line {line}?)"
                )
            self.broken.append(BrokenRow(line, reason, [""] * len(self.header)))
            line = lines.number + 1

    def _unclosed_quote(self, line: int, cells: list[str]) -> None:
        """The last record was still inside a quoted cell when the file ended: one rejected row."""
        cells[-1] = cells[-1][: -len(_END)]
        opened = line + sum(cell.count("\n") for cell in cells[:-1])  # the last cell holds the open quote
        end = self.lines.number
        rest = f"line {opened}" if end == opened else f"lines {opened}-{end}"
        self.broken.append(
            BrokenRow(
                line,
                f"the quote opened on line {opened} is never closed, so the rest of the file ({rest}) "
                "was read as one cell; close it and import again",
                cells,
            )
        )

    def json_rows(self) -> Iterator[tuple[int, Any]]:
        """``(line, object)`` for every non-blank line; a line that is not JSON raises ``FeedError``.

        A line over ``LINE_LIMIT`` goes to ``broken``.
        """
        lines = self.lines
        while True:
            try:
                text = next(lines)
            except StopIteration:
                return
            except LineTooLong as exc:
                self.broken.append(
                    BrokenRow(
                        exc.line, f"the line is longer than {LINE_LIMIT:,} characters, the limit for one line", {}
                    )
                )
                continue
            number = lines.number
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                raise FeedError(
                    f"{self.name} line {number}: not valid JSON ({exc.msg} at column {exc.colno})",
                    hint="JSON Lines holds one complete JSON object per line",
                ) from None


def sniff_delimiter(header_line: str) -> str:
    """The delimiter the header line uses most (comma on a tie or when none appears)."""
    counts = {d: header_line.count(d) for d in _DELIMITERS}
    best = max(_DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


@contextmanager
def open_feed(source: Any, *, encoding: str = DEFAULT_ENCODING, delimiter: str | None = None) -> Iterator[FeedInput]:
    """Open ``source`` (a path, ``"-"`` for standard input, or a file object) as a feed.

    Gzip is recognised by its magic bytes, whatever the file is called. Raises
    ``FeedError`` for a missing, empty or undecodable file.
    """
    try:
        opened = open_input(source)
    except FileNotFoundError:
        raise FeedError(
            f"feed file {source} does not exist", hint="check the path (use - for standard input)"
        ) from None
    except IsADirectoryError:
        raise FeedError(f"{source} is a folder, not a feed file") from None
    except OSError as exc:
        raise FeedError(f"cannot open feed file {source}: {exc.strerror}") from None
    binary, text, name, owned = opened.binary, opened.text, opened.name, opened.owned
    wrapper: io.TextIOWrapper | None = None
    try:
        size = position = None
        if binary is not None:
            if owned:
                try:
                    info = os.fstat(opened.raw.fileno())
                    if stat.S_ISREG(info.st_mode):  # not a named pipe or a device
                        size, position = info.st_size, opened.raw.tell
                except (OSError, AttributeError, io.UnsupportedOperation):
                    size = position = None
            text = wrapper = io.TextIOWrapper(binary, encoding=encoding, newline="")
        assert text is not None
        csv.field_size_limit(max(csv.field_size_limit(), FIELD_SIZE_LIMIT))  # a process-wide setting
        skipped = 0
        try:
            first = text.readline(LINE_LIMIT + 1)
            while first and not first.strip():
                skipped += 1
                first = text.readline(LINE_LIMIT + 1)
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, OSError) as exc:
            raise unreadable(name, exc, encoding, skipped + 1) from None
        if len(first) > LINE_LIMIT and first[-1] not in "\r\n":
            raise FeedError(
                f"{name} line {skipped + 1} is longer than {LINE_LIMIT:,} characters",
                hint="a feed starts with a header line or a JSON object",
            )
        first = first.lstrip("\ufeff")  # a BOM the codec did not remove (text streams, other codecs)
        if not first:
            raise FeedError(f"feed {name} is empty", hint="a feed starts with a header line or a JSON object")
        lines = FeedLines(text, first, skipped)
        stripped = first.lstrip()
        if stripped.startswith("["):
            raise FeedError(
                f"{name} is a JSON array, not JSON Lines",
                hint="write one object per line, e.g. jq -c '.[]' feed.json > feed.jsonl",
            )
        if stripped.startswith("{"):
            try:
                first_object = json.loads(first)
            except json.JSONDecodeError as exc:
                raise FeedError(f"{name} line 1: not valid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(first_object, dict):
                raise FeedError(f"{name} line 1: a JSON Lines feed holds one object per line")
            yield FeedInput(name, "jsonl", lines, first_object=first_object, size=size, position=position)
            return
        delim = delimiter or sniff_delimiter(first)
        header = next(csv.reader([first], delimiter=delim))
        yield FeedInput(name, "csv", lines, delimiter=delim, header=header, size=size, position=position)
    finally:
        if wrapper is not None:
            try:  # never close a stream we were handed (standard input, a caller's file)
                wrapper.close() if owned else wrapper.detach()
            except Exception:  # closing a half-read gzip can complain; nothing to save then
                pass
        opened.close()


def unreadable(name: str, exc: BaseException, encoding: str, line: int | None = None) -> FeedError:
    """The ``FeedError`` for bytes that cannot be decoded (or a broken gzip stream)."""
    where = f"{name} line {line}" if line else name
    if isinstance(exc, UnicodeDecodeError):
        return FeedError(
            f"{where}: not valid {encoding.replace('-sig', '')} text ({exc.reason} at byte {exc.start})",
            hint="save the file as UTF-8, or pass --encoding (e.g. --encoding cp1252)",
        )
    return FeedError(f"{where}: cannot read the file ({exc})", hint="check that the file is complete")
