"""The layout of a cleaned feed row: which Product fields it holds, in which order.

One import builds one ``RowLayout`` from the fields its feed carries. Validation fills each
row's values in this order, the importer finds the SKU and puts the resolved category id
by it, and the writer builds its statements from it. The rows are plain lists indexed by
position (a dict or an object per row would cost more than the rest of the row's work), so
the positions live here, once, instead of as a convention in three modules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .._peewee import peewee as pw
from ..models import Product
from .formats import CATEGORY


@dataclass(frozen=True)
class RowLayout:
    """The Product fields of a cleaned row, in the model's order, the category (an id) last.

    The category comes last because it is filled later than the rest: the reader thread
    cleans a row without the database, the writer resolves categories per batch.
    """

    fields: tuple[pw.Field, ...]
    index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {f.name: i for i, f in enumerate(self.fields)})

    @classmethod
    def carrying(cls, names: Sequence[str]) -> RowLayout:
        """The layout for a feed carrying ``names`` (Product field names; ``category`` for the category)."""
        fields = [f for f in Product._meta.sorted_fields if f.name in names and f.name != CATEGORY]
        return cls(tuple(fields + ([Product.category] if CATEGORY in names else [])))

    @property
    def width(self) -> int:
        return len(self.fields)

    @property
    def sku(self) -> int:
        """The position of the SKU (every feed carries one)."""
        return self.index["sku"]

    @property
    def category(self) -> int | None:
        """The position of the category id (the last), or None when the feed carries no category."""
        return self.index.get(CATEGORY)

    def position(self, name: str) -> int:
        return self.index[name]
