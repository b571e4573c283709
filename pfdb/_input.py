"""Opening an input file the one way pfdb does: a path, ``-`` for standard input, or a file object; gzip by its bytes.

The feed reader (``pfdb.feeds.reading``) and the taxonomy reader (``pfdb.taxonomy``) both
start here, so a ``.gz`` file, a gzip stream on standard input and a file object that
cannot peek are recognised alike. Decoding (UTF-8, a byte order mark) stays with each
reader: one reads records, the other numbered lines. Errors opening a path are left as
``OSError`` for the caller to word (a feed file, a taxonomy file).
"""

from __future__ import annotations

import gzip
import io
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

GZIP_MAGIC = b"\x1f\x8b"
STDIN = "-"


@dataclass
class Opened:
    """An input ready to read; ``close()`` closes only what ``open_input`` opened."""

    #: The bytes, decompressed; ``None`` when the caller handed in a text stream.
    binary: IO[bytes] | None
    #: The text stream the caller handed in, when there are no bytes to read.
    text: IO[str] | None
    name: str
    #: The file as opened (compressed bytes): its size and position tell how far a read got.
    raw: IO[bytes] | None = None
    #: Whether ``open_input`` opened the file itself (a path), so ``close()`` closes it.
    owned: bool = False
    _gzip: Any = field(default=None, repr=False)

    def close(self) -> None:
        # GzipFile.close() never closes the file under it: the file is closed apart, if ours.
        for stream in (self._gzip, self.raw if self.owned else None):
            if stream is not None:
                try:
                    stream.close()
                except Exception:  # closing a half-read gzip can complain; nothing to save then
                    pass


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


def open_input(source: Any, *, stdin: bool = True) -> Opened:
    """Open ``source``: a path (``~`` expanded), ``"-"`` for standard input (when ``stdin``), or a file object.

    Raises ``OSError`` (``FileNotFoundError``, ``IsADirectoryError``, …) for a path that
    cannot be opened.
    """
    if stdin and isinstance(source, (str, os.PathLike)) and str(source) == STDIN:
        buffer = getattr(sys.stdin, "buffer", None)
        if buffer is None:
            return Opened(None, sys.stdin, "<stdin>")
        binary, name, owned = buffer, "<stdin>", False
    elif isinstance(source, (str, os.PathLike)):
        binary, name, owned = Path(source).expanduser().open("rb"), str(source), True
    else:
        name = str(getattr(source, "name", "<stream>"))
        if isinstance(source, io.TextIOBase) or "b" not in getattr(source, "mode", "b"):
            return Opened(None, source, name)
        binary, owned = source, False
    try:
        head, binary = _peek(binary, 2)
    except BaseException:
        if owned:
            binary.close()
        raise
    opened = Opened(binary, None, name, raw=binary, owned=owned)
    if head == GZIP_MAGIC:
        opened._gzip = opened.binary = gzip.GzipFile(fileobj=binary, mode="rb")  # type: ignore[assignment]
    return opened
