"""Functions a higher layer hands to a lower one, so that the lower one never imports upward.

``backup_before_change(label=…)``: what ``migrations.migrate()`` and ``rollback()`` call to take
a backup first. ``pfdb.lifecycle`` sets it to ``pfdb.maintenance.backup`` when pfdb is
imported, without importing ``migrations`` (which would cost ``import pfdb`` its dataclasses);
``pfdb.migrations.set_backup_hook()`` replaces it. This module imports nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

backup_before_change: Callable[..., Any] | None = None
