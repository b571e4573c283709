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
import itertools
import json
import os
import stat
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import FeedError

DEFAULT_ENCODING = "utf-8-sig"  # "utf-8" that also drops a leading byte order mark
STDIN = "-"
_GZIP_MAGIC = b"\x1f\x8b"
# Delimiters a header line is sniffed for, in order of preference on a tie.
_DELIMITERS = (",", "\t", ";")
# HTML descriptions easily pass csv's default 128 KiB cell limit.
_FIELD_SIZE_LIMIT = 64 * 1024 * 1024


@dataclass
class FeedInput:
    """An opened feed: what it is and the text lines it holds, header first."""

    name: str  # the path as given, or "<stdin>"
    kind: str  # "csv" or "jsonl"
    lines: Iterator[str]
    delimiter: str = ","
    header: list[str] = field(default_factory=list)  # CSV columns as written in the file
    first_object: dict[str, Any] | None = None  # JSON Lines: the first record, for format detection
    size: int | None = None  # bytes on disk (compressed size for .gz); None for a stream or a pipe
    position: Callable[[], int] | None = None  # bytes consumed from disk so far

    def csv_rows(self) -> Iterator[tuple[int, list[str]]]:
        """``(line, cells)`` for every data row; blank lines are skipped."""
        reader = csv.reader(self.lines, delimiter=self.delimiter)
        next(reader, None)  # the header, already parsed
        line = reader.line_num + 1
        for cells in reader:
            if len(cells) > 1 or (cells and cells[0].strip()):
                yield line, cells
            line = reader.line_num + 1

    def json_rows(self) -> Iterator[tuple[int, Any]]:
        """``(line, object)`` for every non-blank line; a line that is not JSON raises ``FeedError``."""
        for number, text in enumerate(self.lines, start=1):
            if not text.strip():
                continue
            try:
                yield number, json.loads(text)
            except json.JSONDecodeError as exc:
                raise FeedError(
                    f"{self.name} line {number}: not valid JSON ({exc.msg} at column {exc.colno})",
                    hint="JSON Lines holds one complete JSON object per line",
                ) from None


def _binary_source(source: Any) -> tuple[IO[bytes] | None, IO[str] | None, str, bool]:
    """(binary stream, or text stream when only text is available, display name, we own it)."""
    if isinstance(source, (str, os.PathLike)) and str(source) == STDIN:
        buffer = getattr(sys.stdin, "buffer", None)
        return (buffer, None if buffer is not None else sys.stdin, "<stdin>", False)
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        try:
            return path.open("rb"), None, str(source), True
        except FileNotFoundError:
            raise FeedError(f"feed file {source} does not exist", hint="check the path (use - for standard input)") from None
        except IsADirectoryError:
            raise FeedError(f"{source} is a folder, not a feed file") from None
        except OSError as exc:
            raise FeedError(f"cannot open feed file {source}: {exc.strerror}") from None
    name = str(getattr(source, "name", "<stream>"))
    if isinstance(source, io.TextIOBase) or "b" not in getattr(source, "mode", "b"):
        return None, source, name, False
    return source, None, name, False


def _peek(stream: IO[bytes], n: int) -> tuple[bytes, IO[bytes]]:
    """The first ``n`` bytes without consuming them (wrapping the stream if it cannot peek)."""
    if hasattr(stream, "peek"):
        return stream.peek(n)[:n], stream
    if stream.seekable():
        start = stream.tell()
        head = stream.read(n)
        stream.seek(start)
        return head, stream
    buffered = io.BufferedReader(stream)  # type: ignore[arg-type]
    return buffered.peek(n)[:n], buffered


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
    binary, text, name, owned = _binary_source(source)
    closers: list[IO[Any]] = []
    detach: list[io.TextIOWrapper] = []
    if owned and binary is not None:
        closers.append(binary)
    try:
        size = position = None
        if binary is not None:
            head, binary = _peek(binary, 2)
            raw = binary
            if head == _GZIP_MAGIC:
                binary = gzip.GzipFile(fileobj=binary, mode="rb")  # type: ignore[assignment]
                closers.insert(0, binary)
            if owned:
                try:
                    info = os.fstat(raw.fileno())
                    if stat.S_ISREG(info.st_mode):  # not a named pipe or a device
                        size, position = info.st_size, raw.tell
                except (OSError, AttributeError, io.UnsupportedOperation):
                    size = position = None
            wrapper = io.TextIOWrapper(binary, encoding=encoding, newline="")
            text = wrapper
            if not owned:  # never close a stream we were handed (standard input, a caller's file)
                detach.append(wrapper)
            else:
                closers.insert(0, wrapper)
        assert text is not None
        csv.field_size_limit(max(csv.field_size_limit(), _FIELD_SIZE_LIMIT))
        try:
            first = text.readline()
            while first and not first.strip():
                first = text.readline()
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError, OSError) as exc:
            raise unreadable(name, exc, encoding, 1) from None
        first = first.lstrip("\ufeff")  # a BOM the codec did not remove (text streams, other codecs)
        if not first:
            raise FeedError(f"feed {name} is empty", hint="a feed starts with a header line or a JSON object")
        lines = itertools.chain((first,), text)
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
        for wrapper in detach:
            try:
                wrapper.detach()
            except Exception:
                pass
        for stream in closers:
            try:
                stream.close()
            except Exception:  # closing a half-read gzip can complain; nothing to save then
                pass


def unreadable(name: str, exc: BaseException, encoding: str, line: int | None = None) -> FeedError:
    """The ``FeedError`` for bytes that cannot be decoded (or a broken gzip stream)."""
    where = f"{name} line {line}" if line else name
    if isinstance(exc, UnicodeDecodeError):
        return FeedError(
            f"{where}: not valid {encoding.replace('-sig', '')} text ({exc.reason} at byte {exc.start})",
            hint="save the file as UTF-8, or pass --encoding (e.g. --encoding cp1252)",
        )
    return FeedError(f"{where}: cannot read the file ({exc})", hint="check that the file is complete")
