"""A tqdm progress bar for imports and exports; the CLI makes one only when stderr is a terminal.

tqdm is imported on the first update, so nothing pays for it unless a bar is shown.
"""

from __future__ import annotations

from typing import Any


class ProgressBar:
    """A ``progress`` callback: bytes of the file when its size is known, else rows (or products)."""

    def __init__(self, description: str = "importing", unit: str = "rows"):
        self.description = description
        self.unit = unit
        self._bar: Any = None

    def __call__(self, event: Any) -> None:
        from tqdm import tqdm

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
            self._bar = tqdm(
                total=total,
                desc=self.description,
                unit="B" if by_bytes else f" {self.unit}",
                unit_scale=by_bytes,
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
