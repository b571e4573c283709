"""Reading the next batch while PostgreSQL writes this one.

An import spends its time in two places that need not wait for each other: parsing and
validating rows (Python) and the server writing batches (the driver waits with the GIL
released). Running the reader in a thread a batch or two ahead overlaps them.

Two rules keep the threads from slowing each other down. The reader gives the GIL away
every few rows (``yield_gil``): otherwise the writer, back from each database call, waits
up to the interpreter's switch interval (5 ms) for it. And the reader must not touch the
database: peewee's connections belong to a thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")
_POLL = 0.1  # seconds between looks at the stop flag while the queue is full


def yield_gil() -> None:
    """Let a thread waiting for the GIL have it (``sleep(0)`` releases it)."""
    time.sleep(0)


@contextmanager
def read_ahead(items: Iterable[T], depth: int = 2) -> Iterator[Iterator[T]]:
    """Iterate ``items`` in a background thread, at most ``depth`` items ahead.

    Items arrive in order; an exception raised while producing them is raised to the
    consumer in its place (after the items before it). Leaving the block, even early or by
    an exception, stops the reader and closes ``items`` in its own thread; so the reader
    must not block for good (a regular file, not a pipe).
    """
    channel: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                channel.put(entry, timeout=_POLL)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = None
        try:
            iterator = iter(items)
            for item in iterator:
                if not put((True, item)):
                    return
            put((True, done))
        except BaseException as exc:  # handed to the consumer, raised there
            put((False, exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    def consume() -> Iterator[T]:
        while True:
            ok, item = channel.get()
            if not ok:
                raise item  # type: ignore[misc]
            if item is done:
                return
            yield item  # type: ignore[misc]

    thread = threading.Thread(target=produce, name="pfdb-read-ahead", daemon=True)
    thread.start()
    try:
        yield consume()
    finally:
        stop.set()
        thread.join()
