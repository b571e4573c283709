"""Exporting products as pfdb CSV or JSON Lines, the format ``import_products`` reads back.

Products stream out a page at a time (keyset pagination on the id, one query for the
page's images), inside one read transaction (REPEATABLE READ on PostgreSQL) so the file
is a consistent snapshot however long it takes. Categories are written as their
``A > B > C`` path, images as a ``|``-separated list (a JSON list in JSON Lines). A file
is written beside its target and renamed at the end: an interrupted export never leaves
half a file under the real name.
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

from .. import _files, category_paths
from .._peewee import peewee as pw
from ..database import borrow_connection, db_read_scope, get_database
from ..errors import FeedError, UsageError
from ..models import Category, Product, ProductImage
from ..models.fields import UTC, utcnow
from ..paths import check_output
from .formats import CATEGORY, FEED_FIELDS, IMAGES, PFDB_COLUMNS

PAGE_SIZE = 1000
FORMATS = ("csv", "jsonl")
IMAGE_JOIN = "|"
_RELATIVE = re.compile(r"^\s*(\d+)\s*([smhdw])\s*$", re.IGNORECASE)
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


@dataclass(frozen=True)
class ExportResult:
    """What ``export_products`` wrote."""

    output: str
    format: str
    products: int
    images: int
    category: str | None = None
    changed_since: dt.datetime | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "output": self.output,
            "format": self.format,
            "products": self.products,
            "images": self.images,
            "category": self.category,
            "changed_since": self.changed_since.isoformat() if self.changed_since else None,
            "seconds": round(self.seconds, 3),
        }


def parse_since(value: str | dt.datetime) -> dt.datetime:
    """``2024-05-01``, ``2024-05-01T12:00:00+02:00`` or a age such as ``24h``/``7d`` -> aware UTC."""
    if isinstance(value, dt.datetime):
        moment = value
    else:
        text = str(value).strip()
        match = _RELATIVE.match(text)
        if match:
            return utcnow() - dt.timedelta(**{_UNITS[match[2].lower()]: int(match[1])})
        try:
            moment = dt.datetime.fromisoformat(text)
        except ValueError:
            raise UsageError(
                f"changed-since {text!r} is not a time",
                hint="use 2024-05-01, 2024-05-01T12:00:00Z or an age like 24h, 7d",
            ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def find_category(value: str, paths: dict[int, str] | None = None) -> Category:
    """A category by slug, or by its ``A > B`` path (a root by its name); never creates one.

    ``pfdb.categories.find_category`` (``paths`` is no longer needed and kept for callers)."""
    from ..categories import find_category as find

    return find(value)


def _text(value: Any, field: pw.Field | None) -> Any:
    if isinstance(value, Decimal) and isinstance(field, pw.DecimalField):
        return str(value.quantize(Decimal(1).scaleb(-field.decimal_places)))
    return value


class _Output:
    """The target: a path (written beside it, renamed at the end; ``.gz`` compressed) or a text stream."""

    def __init__(self, output: Any):
        self.final: Path | None = None
        self.temp: Path | None = None
        if output is None or str(output) == "-":
            self.stream, self.name = sys.stdout, "<stdout>"
        elif isinstance(output, (str, os.PathLike)):
            self.final = Path(output).expanduser()
            self.name = str(output)
            try:
                _files.sweep(self.final.parent)  # temporary files of exports killed before they finished
                self.temp = _files.temp_for(self.final)
                raw: IO[Any] = open(self.temp, "wb")
            except OSError as exc:
                raise FeedError(f"cannot write {output}: {exc.strerror}") from None
            if self.final.suffix == ".gz":
                raw = gzip.GzipFile(fileobj=raw, mode="wb", filename="")  # type: ignore[assignment]
                self._raw_file = raw.fileobj  # type: ignore[attr-defined]
            self.stream = io.TextIOWrapper(raw, encoding="utf-8", newline="")
        else:
            self.stream, self.name = output, str(getattr(output, "name", "<stream>"))

    def commit(self) -> None:
        if self.final is None:
            self.stream.flush()
            return
        self.stream.close()
        if hasattr(self, "_raw_file"):
            self._raw_file.close()
        _files.claim(self.temp, self.final)

    def discard(self) -> None:
        if self.final is None:
            return
        try:
            self.stream.close()
            if hasattr(self, "_raw_file"):
                self._raw_file.close()
        finally:
            self.temp.unlink(missing_ok=True)


def export_products(
    output: Any = None,
    *,
    format: str | None = None,
    category: str | None = None,
    changed_since: str | dt.datetime | None = None,
    page_size: int = PAGE_SIZE,
    progress: Callable[[int], None] | None = None,
) -> ExportResult:
    """Write products, with category paths and image lists, as pfdb CSV or JSON Lines.

    Args:
        output: a path (``.gz`` is compressed; ``.jsonl`` chooses JSON Lines), a text stream,
            or ``None``/``"-"`` for standard output.
        format: ``csv`` or ``jsonl`` (default: from the file name, else csv).
        category: only this category (slug or ``A > B`` path) and its whole subtree.
        changed_since: only products updated since then (ISO time, or an age such as ``24h``).
        progress: called with the number of products written after every page.

    Example: ``export_products("catalogue.csv", category="shirts")``
    """
    started = time.monotonic()
    name = str(output) if isinstance(output, (str, os.PathLike)) else ""
    fmt = (format or ("jsonl" if re.search(r"\.(jsonl|ndjson)(\.gz)?$", name) else "csv")).lower()
    if fmt not in FORMATS:
        raise UsageError(f"unknown export format {format!r}", hint="use csv or jsonl")
    since = parse_since(changed_since) if changed_since not in (None, "") else None
    database = get_database()
    if isinstance(output, (str, os.PathLike)) and str(output) != "-":
        # `pfdb export shop.db` replaced the live database; standard input may be a file too.
        check_output(
            Path(output).expanduser(), what=f"the export file {output}", inputs=[("standard input", sys.stdin)]
        )
    with borrow_connection(database):
        with db_read_scope():  # one snapshot, and no wait behind an import's write lock
            paths = category_paths.name_paths(Category)
            where = []
            root = None
            if category not in (None, ""):
                root = find_category(str(category), paths)
                subtree = Category.select(Category.id).where(category_paths.path_prefix(Category.path, root.path))
                where.append(Product.category.in_(subtree))
            if since is not None:
                where.append(Product.updated_at >= since)
            out = _Output(output)
            try:
                count, images = _write(out.stream, fmt, _pages(where, page_size, paths), progress)
            except BaseException:
                out.discard()
                raise
            out.commit()
    return ExportResult(
        output=out.name,
        format=fmt,
        products=count,
        images=images,
        category=root.slug if root is not None else None,
        changed_since=since,
        seconds=time.monotonic() - started,
    )


_FIELDS = [Product._meta.fields[name] for name in FEED_FIELDS]


def _pages(where: list[Any], page_size: int, paths: dict[int, str]) -> Iterator[dict[str, Any]]:
    """Products as export dicts, a page per query (keyset on id), images fetched per page."""
    columns = [Product.id, Product.category, *_FIELDS]
    last = 0
    while True:
        query = Product.select(*columns).where(Product.id > last, *where).order_by(Product.id).limit(page_size)
        rows = list(query.tuples())
        if not rows:
            return
        last = rows[-1][0]
        images: dict[int, list[str]] = {}
        for pid, url in (
            ProductImage.select(ProductImage.product, ProductImage.url)
            .where(ProductImage.product.in_([r[0] for r in rows]), ProductImage.url.is_null(False))
            .order_by(ProductImage.product, ProductImage.position, ProductImage.id)
            .tuples()
        ):
            images.setdefault(pid, []).append(url)
        for row in rows:
            record = {f.name: _text(value, f) for f, value in zip(_FIELDS, row[2:], strict=True)}
            record[CATEGORY] = paths.get(row[1]) if row[1] is not None else None
            record[IMAGES] = images.get(row[0], [])
            yield record


def _write(
    stream: IO[str], fmt: str, records: Iterator[dict[str, Any]], progress: Callable[[int], None] | None
) -> tuple[int, int]:
    count = images = 0
    if fmt == "csv":
        writer = csv.writer(stream, lineterminator="\n")
        writer.writerow(PFDB_COLUMNS)
    for record in records:
        images += len(record[IMAGES])
        if fmt == "csv":
            cells = []
            for column in PFDB_COLUMNS:
                value = record[column]
                if column == IMAGES:
                    value = IMAGE_JOIN.join(value)
                elif isinstance(value, dict):
                    value = json.dumps(value, ensure_ascii=False, sort_keys=True)
                cells.append("" if value is None else value)
            writer.writerow(cells)
        else:
            stream.write(json.dumps({c: record[c] for c in PFDB_COLUMNS}, ensure_ascii=False, default=str) + "\n")
        count += 1
        if progress is not None and count % PAGE_SIZE == 0:
            progress(count)
    if progress is not None:
        progress(count)
    return count, images
