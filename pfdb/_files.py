"""Files that appear whole or not at all, the leftovers of writers that died, and children that die with pfdb.

A file pfdb writes (a backup, an export) is written to a hidden temporary file beside its
final name, named so a later run can tell it is pfdb's and whose it was:
``.<final name>.pfdb-<pid>-<random>.tmp``. Only when it is complete does it get its final
name: renamed over it when the caller named the file, or linked to the first free name
(``os.link`` never replaces, so two backups in one second never collide and no name is
ever claimed empty). A writer killed with ``kill -9`` leaves only its temporary file (and,
for a SQLite copy, its ``-journal``); ``sweep`` removes those once their writer is gone.

Child processes (``pg_dump``, ``pg_restore``) run with ``child_guard()``: their own process
group (a Ctrl-C at the terminal reaches pfdb, which stops them), and on Linux a
parent-death signal, so a pfdb killed outright takes them along instead of leaving a
restore to finish behind the operator's back.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import logging
import os
import re
import secrets
import signal
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

log = logging.getLogger("pfdb")

FILE_MODE = 0o600
# .<final>.pfdb-<pid>-<token>.tmp, and the SQLite rollback journal a copy into it leaves.
# Only this exact form is ever removed: another program's ".x.123.tmp" is not pfdb's to judge.
_TEMP = re.compile(r"^\.(?P<final>.+)\.pfdb-(?P<pid>\d+)-[0-9a-f]{8}\.tmp(?:-journal)?$")


def temp_for(final: Path) -> Path:
    """Create (O_EXCL, mode 0600) and return a new temporary file beside ``final``."""
    for _ in range(100):
        temp = final.with_name(f".{final.name}.pfdb-{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            os.close(os.open(temp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
            return temp
        except FileExistsError:  # pragma: no cover - 32 random bits
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary name", str(final))  # pragma: no cover


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - not every platform opens folders
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def claim(temp: Path, final: Path) -> Path:
    """Give the complete ``temp`` the name ``final``, replacing a file there (the caller chose it)."""
    os.replace(temp, final)
    _fsync_dir(final.parent)
    return final


def claim_free(temp: Path, names: Iterable[Path]) -> Path:
    """Give the complete ``temp`` the first of ``names`` that is free; never replaces a file.

    A hard link fails if the name exists and appears atomically when it does not, so a
    racing writer of the same name gets the next one and nobody sees an empty or partial file.
    """
    for name in names:
        try:
            os.link(temp, name)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK):
                raise
            # A filesystem without hard links (FAT, some network shares): reserve the name
            # empty and rename the complete file over it at once; an empty file shows for
            # that instant only, never for the length of a copy.
            try:
                os.close(os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY, FILE_MODE))
            except FileExistsError:
                continue
            os.replace(temp, name)
            _fsync_dir(name.parent)
            return name
        temp.unlink()
        _fsync_dir(name.parent)
        return name
    raise FileExistsError(errno.EEXIST, "every candidate name is taken", str(temp))


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (another user's counts as running)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def sweep(folder: Path, *, started: float | None = None) -> list[Path]:
    """Remove pfdb's temporary files in ``folder`` whose writer is gone; returns what was removed.

    A file is removed only when its name is pfdb's, it is older than ``started`` (this run's
    start, default now) and the process that wrote it no longer exists: a backup running
    beside this one keeps its file. A file that cannot be removed is logged and left.
    """
    started = time.time() if started is None else started
    removed: list[Path] = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = _TEMP.match(entry.name)
        if match is None or not entry.is_file(follow_symlinks=False):
            continue
        pid = int(match["pid"])
        try:
            if entry.stat(follow_symlinks=False).st_mtime >= started or process_alive(pid):
                continue
            os.unlink(entry.path)
        except FileNotFoundError:  # another sweeper was quicker
            continue
        except OSError as exc:
            log.warning("cannot remove the leftover %s: %s", entry.path, exc.strerror)
            continue
        log.info("removed %s, left by process %d that ended before finishing it", entry.path, pid)
        removed.append(Path(entry.path))
    return removed


# -- child processes ---------------------------------------------------------------------------
PR_SET_PDEATHSIG = 1


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """libc (for ``prctl``), from the symbols this process has already loaded (``dlopen(NULL)``).

    ``ctypes.util.find_library("c")`` runs ``ldconfig -p``, a process of its own, before the
    first tool of every pfdb process; a test waiting for a command's first child (pg_dump)
    could take it for one.
    """
    if not sys.platform.startswith("linux"):
        return None
    return _with_prctl(None) or _with_prctl("libc.so.6") or _with_prctl(ctypes.util.find_library("c"))


def _with_prctl(name: str | None) -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL(name, use_errno=True)
        libc.prctl  # noqa: B018 - looked up now: a library without it is not the one
        return libc
    except (OSError, AttributeError):  # pragma: no cover - a static or unusual build
        return None


def child_guard() -> dict[str, Callable[[], None] | bool]:
    """``subprocess`` keyword arguments that make a child end with pfdb.

    Its own process group, and on Linux ``PR_SET_PDEATHSIG`` = SIGKILL: the kernel kills
    the child when the pfdb thread that started it dies, ``kill -9`` included. If pfdb
    died between the fork and the prctl, the child sees another parent and exits at once.
    """
    libc = _libc()
    if libc is None:
        return {"start_new_session": True}
    parent = os.getpid()
    prctl = libc.prctl

    def die_with_parent() -> None:  # runs in the child between fork and exec: no allocation-heavy work
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(1)

    return {"start_new_session": True, "preexec_fn": die_with_parent}
