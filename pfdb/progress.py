"""Progress bars on the terminal for the CLI: feed imports and exports, backups, copies.

Each is a ``progress`` callback of the API function it watches (``import_products``,
``export_products``, ``backup``, ``copy_database``) drawn with one ``Bar``; the CLI makes
one only when stderr is a terminal. tqdm is imported on the first update, so nothing pays
for it unless a bar is shown.
"""

from __future__ import annotations

import sys
from typing import Any

#: A backup smaller than this many pages (16 MiB at 4 KiB) is over before a bar would help.
BACKUP_BAR_PAGES = 4096


class Bar:
    """One tqdm bar, made on the first ``show``, fed running totals rather than increments."""

    def __init__(self, description: str, unit: str, *, scale: bool = False):
        self.description, self.unit, self.scale = description, unit, scale
        self._bar: Any = None

    def show(self, done: int, total: int | None = None, postfix: dict[str, Any] | None = None) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=self.description,
                unit=self.unit,
                unit_scale=self.scale,
                leave=False,
                dynamic_ncols=True,
            )
        self._bar.update(max(0, done - self._bar.n))
        if postfix:
            self._bar.set_postfix(postfix, refresh=False)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class ProgressBar:
    """Feed imports and exports: bytes of the file when its size is known, else rows (or products)."""

    def __init__(self, description: str = "importing", unit: str = "rows"):
        self.description = description
        self.unit = unit
        self._bar: Bar | None = None

    def __call__(self, event: Any) -> None:
        if isinstance(event, int):  # an export: products written so far
            done, total, postfix = event, None, None
        elif event.bytes_total and event.bytes_read is not None:
            done, total = event.bytes_read, event.bytes_total
            postfix = {"rows": event.rows, "new": event.created, "changed": event.updated, "bad": event.rejected}
        else:
            done, total = event.rows, None
            postfix = {"new": event.created, "changed": event.updated, "bad": event.rejected}
        if self._bar is None:
            by_bytes = total is not None
            self._bar = Bar(self.description, "B" if by_bytes else f" {self.unit}", scale=by_bytes)
        self._bar.show(done, total, postfix)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class BackupBar:
    """A SQLite backup's pages (``backup(progress=…)``), shown for 16 MiB and more on a terminal."""

    def __init__(self) -> None:
        self._bar: Bar | None = None
        self._decided = False

    def __call__(self, done: int, total: int) -> None:
        if not self._decided:
            self._decided = True
            if sys.stderr.isatty() and total >= BACKUP_BAR_PAGES:
                self._bar = Bar("backup", "page")
        if self._bar is not None:
            self._bar.show(done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class CopyBar:
    """``copy_database(progress=…)``: one bar per table, rows copied of the rows it holds."""

    def __init__(self) -> None:
        self._table: str | None = None
        self._bar: Bar | None = None

    def __call__(self, table: str, done: int, total: int) -> None:
        if table != self._table:
            self.close()
            self._table, self._bar = table, Bar(table, "rows")
        assert self._bar is not None
        self._bar.show(done, total)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
