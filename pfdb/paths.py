"""Which files a command may write: never the live database, its own input, or a file it reads.

One wrong argument used to destroy data: ``pfdb import feed.csv --rejects shop.db`` wrote
a CSV header over the live SQLite database, ``pfdb export shop.db`` replaced it, and
``--rejects feed.csv`` truncated the feed while it was being read. Every command that opens
a file for writing asks ``check_output`` first, before anything is opened, so the refusal
is a ``UnsafePathError`` (exit 2) and nothing has changed.

Two names are the same file when their resolved paths are equal (symlinks followed, and a
file that does not exist yet collides by its resolved folder and name) or when both exist
and share a device and inode (hard links). Standard input/output (``-``) never collides;
an input that is an open file (standard input redirected from a file, a file object) is
compared by the inode behind its descriptor.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .database import get_settings
from .errors import UnsafePathError

STDIO = "-"
# SQLite writes these beside the database file; each is as live as the file itself.
SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def _identity(thing: Any) -> tuple[Path | None, tuple[int, int] | None]:
    """(resolved path, (device, inode)) of a path or an open file; None where unknown."""
    if isinstance(thing, (str, os.PathLike)):
        if str(thing) == STDIO:
            thing = sys.stdin
        else:
            path = Path(thing)
            try:
                st = path.stat()
                ident = (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None
            except OSError:  # not there yet: only its resolved name can collide
                ident = None
            return path.resolve(), ident
    try:
        st = os.fstat(thing.fileno())
    except (AttributeError, OSError, ValueError):  # a StringIO, a closed or fake stream
        return None, None
    return None, ((st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None)


def same_file(a: Any, b: Any) -> bool:
    """Whether writing ``a`` would write ``b``: equal resolved paths, or one inode (hard links)."""
    path_a, ident_a = _identity(a)
    path_b, ident_b = _identity(b)
    if path_a is not None and path_a == path_b:
        return True
    return ident_a is not None and ident_a == ident_b


def database_files() -> tuple[Path, ...]:
    """The live SQLite database file and its -wal/-shm/-journal; nothing for PostgreSQL or ``:memory:``."""
    url = get_settings().database_url
    if url.backend != "sqlite" or url.is_memory or not url.path:
        return ()
    given = Path(url.path).expanduser()
    files = [given]
    # SQLite names its sidecars after the path it was given; name them after the real file too.
    for base in dict.fromkeys((given, given.resolve())):
        files.extend(Path(f"{base}{suffix}") for suffix in SQLITE_SIDECARS)
    return tuple(files)


def check_output(target: Any, *, what: str, inputs: Iterable[tuple[str, Any]] = (), database: bool = True) -> None:
    """Refuse to write ``target`` when it is the live database (or a sidecar of it) or one of ``inputs``.

    Args:
        target: the path about to be opened for writing; ``None``, ``-`` and streams are never refused.
        what: how the person named it, e.g. ``"--rejects rejects.csv"``.
        inputs: ``(description, path or open file)`` the command reads, e.g. ``("the feed", "in.csv")``.
        database: also compare with the bound database's files.

    Raises ``UnsafePathError`` (exit 2) naming the clash; call it before opening anything.
    """
    if target is None or not isinstance(target, (str, os.PathLike)) or str(target) == STDIO:
        return
    if database:
        for live in database_files():
            if same_file(target, live):
                raise UnsafePathError(
                    f"{what} is the database itself ({live}); refusing to write over it", hint="choose another file"
                )
    for description, source in inputs:
        if source is not None and same_file(target, source):
            shown = "standard input" if str(source) == STDIO or not isinstance(source, (str, os.PathLike)) else source
            raise UnsafePathError(
                f"{what} is {description} ({shown}); refusing to write over a file being read",
                hint="choose another file",
            )
