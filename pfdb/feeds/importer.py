"""Importing a product feed: validate each row, upsert in batches, record the run as a Job and a SyncHistory.

One pass over the file, in batches (default 2,000 rows): clean the rows, read the stored
rows of the batch's SKUs in one query, compare in Python, and write only the created
and changed products (``upsert``). A batch of mostly new products (a first load) skips
the lookup: the database merges the whole batch in one statement and says what it created
and changed (``Writer.merge``), until a batch turns out mostly stored. Each
batch is its own transaction, so an interrupted import leaves whole batches and running
it again finishes it. ``strict`` and
``dry_run`` instead run the whole import in one transaction that is rolled back when a
row is bad (strict) or always (dry run): the counts are exact and nothing is kept.

Memory stays flat: the rows of one batch, the categories seen, and the SKUs seen (for
repeats in the file) kept as 16-byte hash pairs, about 20 MB per million rows.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import re
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

from .. import _writes
from .._peewee import peewee as pw
from ..categories import CategoryResolver
from ..database import borrow_connection, db_read_scope, get_database, translated_errors, writes_to_primary
from ..errors import ConnectionLostError, DiskFullError, FeedError, PfdbError, UsageError, ValidationError
from ..models import Category, Job, Product, ProductImage, SyncHistory
from ..models.fields import utcnow
from ..paths import check_output
from ..text import first_line
from .formats import CATEGORY, PFDB_COLUMNS, CategoryRef, ColumnMapping, FeedFormat, Record, make_format
from .layout import RowLayout
from .pipeline import read_ahead, yield_gil
from .reading import DEFAULT_ENCODING, FeedInput, open_feed, unreadable
from .upsert import make_writer
from .validation import Invalid, RowCleaner

BATCH_SIZE = 2000
_YIELD_EVERY = 64  # rows read and cleaned at a time (and between giving the GIL away in the read-ahead thread)
MAX_REPORTED = 100  # rejects and notes kept in the result; the rejects file has them all
PROGRESS_INTERVAL = 0.5  # seconds between Job progress updates
JOB_TYPE = "import_products"
SYNC_TYPE = "product_feed"


@dataclass(frozen=True)
class RowIssue:
    """A rejected row (or a note about one): where it is and what is wrong."""

    line: int
    sku: str | None
    column: str
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"line": self.line, "sku": self.sku, "column": self.column, "message": self.message}

    def __str__(self) -> str:
        return f"line {self.line}{f' ({self.sku})' if self.sku else ''}: {self.column}: {self.message}"


@dataclass(frozen=True)
class ImportProgress:
    """Passed to the ``progress`` callback after every batch."""

    rows: int
    bytes_read: int | None
    bytes_total: int | None
    created: int
    updated: int
    unchanged: int
    rejected: int


@dataclass(frozen=True)
class ImportResult:
    """What ``import_products`` did (or, with ``dry_run``, would do)."""

    source: str
    format: str
    rows: int
    created: int
    updated: int
    unchanged: int
    rejected: int
    generated_skus: int = 0
    images_added: int = 0
    images_removed: int = 0
    categories_created: int = 0
    dry_run: bool = False
    strict: bool = False
    written: bool = True
    rejects: tuple[RowIssue, ...] = ()
    notes: tuple[RowIssue, ...] = ()
    ignored_columns: tuple[str, ...] = ()
    rejects_file: str | None = None
    job_id: str | None = None
    sync_id: int | None = None
    seconds: float = 0.0
    unit: str = "rows"  # what ``rows`` counts: "variants" (Shopify), "products" (WooCommerce)
    lines: int = 0  # data lines (CSV records or JSON lines) read; more than ``rows`` when several make one
    skipped: tuple[tuple[str, int], ...] = ()  # lines that are no product by design: (("variable", 2), …)
    currency: str | None = None  # the currency of rows that name none: --currency, or the default for new products

    @property
    def ok(self) -> bool:
        return self.rejected == 0

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in self.__dataclass_fields__}
        out["rejects"] = [r.as_dict() for r in self.rejects]
        out["notes"] = [n.as_dict() for n in self.notes]
        out["ignored_columns"] = list(self.ignored_columns)
        out["skipped"] = dict(self.skipped)
        out["seconds"] = round(self.seconds, 3)
        return out


class SeenKeys:
    """An exact set of strings at ~20 bytes each: 16-byte keys packed in 65,536 buckets.

    A Python set of a million short SKUs takes ~100 MB (string objects plus the table);
    this takes ~20 MB. A key is two 64-bit SipHash values, ``hash(s)`` and ``hash(s + NUL)``
    (keyed at random per process, so nobody can aim SKUs at a collision); two strings share
    both with odds of 2**-128. Per SKU ~0.75 µs against 1.1-2.0 µs for a BLAKE2b digest, and
    ``hash(s)`` is cached on the string for the sets and dicts the batch goes through next.
    """

    _pack = struct.Struct("<qq").pack

    def __init__(self) -> None:
        self._buckets: list[bytearray | None] = [None] * 65536
        self.count = 0

    def add(self, key: str) -> bool:
        """Add ``key``; False when it was already there."""
        first = hash(key)
        digest = self._pack(first, hash(key + "\x00"))
        index = first & 0xFFFF
        bucket = self._buckets[index]
        if bucket is None:
            self._buckets[index] = bytearray(digest)
            self.count += 1
            return True
        pos = bucket.find(digest)
        while pos != -1:
            if pos % 16 == 0:
                return False
            pos = bucket.find(digest, pos + 1)
        bucket += digest
        self.count += 1
        return True


class RejectsWriter:
    """The rejected rows, original columns, plus ``reject_line`` and ``reject_reason``: fix and re-feed.

    The file is created with the first rejected row: an import without rejects leaves no
    file (a header alone said "rejected rows written" about nothing), and removes one a
    previous run left at that path, which no longer describes this feed.
    """

    def __init__(self, path: str | Path, feed: FeedInput):
        self.path = str(path)
        self._feed = feed
        self._file = None
        self.written = 0
        # Checked now, as opening it here was: an unwritable path fails before any row is imported.
        target = Path(path)
        folder = target.parent if str(target.parent) else Path(".")
        problem = (
            "Is a directory"
            if target.is_dir()
            else "No such file or directory"
            if not folder.is_dir()
            else "Permission denied"
            if not os.access(target if target.exists() else folder, os.W_OK)
            else None
        )
        if problem:
            raise FeedError(f"cannot write the rejects file {path}: {problem}")

    def _open(self) -> None:
        try:
            self._file = open(self.path, "w", encoding="utf-8", newline="")
        except OSError as exc:
            raise FeedError(f"cannot write the rejects file {self.path}: {exc.strerror}") from None
        feed = self._feed
        self._json = feed.kind == "jsonl"
        if not self._json:
            self._csv = csv.writer(self._file, delimiter=feed.delimiter)
            self._csv.writerow([*feed.header, "reject_line", "reject_reason"])

    def write(self, raw: Any, line: int, reason: str) -> None:
        if self._file is None:
            self._open()
        self.written += 1
        if self._json:
            obj = dict(raw) if isinstance(raw, dict) else {"value": raw}
            obj.update(reject_line=line, reject_reason=reason)
            self._file.write(json.dumps(obj, ensure_ascii=False) + "\n")
        else:
            self._csv.writerow([*raw, line, reason])

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        elif Path(self.path).is_file():  # a previous run's rejects: not this import's
            Path(self.path).unlink()


#: A batch's row: ``(line, sku, values, category, images, raw)``, a plain tuple (an object
#: per row cost 0.17 s per 100,000 rows under the profiler, for fields read once or twice).
_Row = tuple


_UNKNOWN = object()  # a category reference not resolved yet (None: resolved to no category)


class _Rollback(Exception):
    """Leaves the outer transaction of a dry run or a failed strict import."""


class _Import:
    def __init__(
        self,
        database: pw.Database,
        feed: FeedInput,
        fmt: FeedFormat,
        *,
        dry_run: bool,
        strict: bool,
        rejects: str | Path | None,
        batch_size: int,
        progress: Callable[[ImportProgress], None] | None,
        user: Any,
        parameters: dict[str, Any],
        encoding: str = DEFAULT_ENCODING,
        currency: str | None = None,
    ):
        self.database, self.feed, self.format, self.encoding = database, feed, fmt, encoding
        self.dry_run, self.strict, self.batch_size = dry_run, strict, batch_size
        self.progress, self.user, self.parameters = progress, user, parameters
        # The one row layout the cleaner fills, this importer reads and the writer's statements follow.
        self.layout = RowLayout.carrying([name for name in fmt.carried if name in Product._meta.fields])
        self.writer = make_writer(database, self.layout)
        self.cleaner = RowCleaner(fmt, self.layout, self.writer.converter)
        if currency:
            self._assume_currency(currency)
        given = self.writer.products.given
        # Fields a new product cannot do without: NOT NULL with no default (sku, name).
        self._required = [(i, f.name) for i, f in enumerate(given) if not f.null and f.default is None]
        self._kept = [f.name for f in self.writer.products.kept]
        # Positions a row must fill for ``Writer.merge``: required ones, and those with a default.
        self._defaulted = [i for i, _ in self._required] + [i for i, _ in self.writer.products.fill]
        self._merging = self.writer.merges
        self.resolver = CategoryResolver()
        self._categories: dict[Any, int | None] = {}
        self.seen = SeenKeys()
        self._lock = threading.Lock()  # rejects and notes come from both threads
        self.rejects_file = RejectsWriter(rejects, feed) if rejects else None
        self.rows = self.created = self.updated = self.unchanged = self.rejected = 0
        self.generated = self.images_added = self.images_removed = 0
        self.rejects: list[RowIssue] = []
        self.notes: list[RowIssue] = []
        self.by_column: Counter[str] = Counter()
        self.line = 0
        self.job: Job | None = None
        self.sync: SyncHistory | None = None
        self._last_report = 0.0
        self.started = time.monotonic()

    def _assume_currency(self, currency: str) -> None:
        """Give rows that name no currency ``currency`` (``--currency``), after cleaning: no cost without it."""
        index = self.layout.position("currency")
        convert = self.writer.converter(self.layout.fields[index])
        value = convert(currency) if convert is not None else currency
        clean, clean_many = self.cleaner.clean, self.cleaner.clean_many

        def clean_with_currency(record: Record):
            cleaned = clean(record)
            if cleaned[0][index] is None:
                cleaned[0][index] = value
            return cleaned

        def clean_many_with_currency(records: list[Record]):
            cleaned = clean_many(records)
            for values, *_ in cleaned:
                if values[index] is None:
                    values[index] = value
            return cleaned

        self.cleaner.clean, self.cleaner.clean_many = clean_with_currency, clean_many_with_currency

    # -- the run --------------------------------------------------------------------------------
    def run(self) -> ImportResult:
        with borrow_connection(self.database):
            return self._run()

    def _run(self) -> ImportResult:
        database = self.database
        try:
            if not self.dry_run:
                self._begin_job()
            try:
                self.writer.start()
                try:
                    if self.dry_run or self.strict:
                        try:
                            with database.atomic():
                                self._process()
                                if self.dry_run or self.rejected:
                                    raise _Rollback
                        except _Rollback:
                            pass
                    else:
                        self._process()
                finally:
                    self._finish_writer()
            except KeyboardInterrupt as exc:
                self._abort(f"interrupted ({str(exc) or 'KeyboardInterrupt'})", cancelled=True)
                raise
            except ConnectionLostError as exc:
                # A restart or terminated backend: whole batches are in. The pool hands this
                # thread a fresh connection, on which the Job and SyncHistory are marked failed.
                self._abort("lost the connection to the server")
                raise ConnectionLostError(
                    f"lost the connection to the server after {self.rows} rows; re-run to continue"
                ) from exc
            except DiskFullError as exc:
                error = self._disk_full(exc)
                self._abort(str(error))
                raise error from exc
            except PfdbError as exc:
                self._abort(str(exc))
                raise
            except (pw.DatabaseError, pw.InterfaceError, OSError) as exc:
                error = FeedError(
                    f"import of {self.feed.name} failed near line {self.line}: "
                    f"{type(exc).__name__}: {first_line(str(exc))}"
                )
                self._abort(str(error))
                raise error from exc
            except BaseException as exc:
                self._abort(f"{type(exc).__name__}: {exc}")
                raise
            result = self._result()
            self._end_job(result)
            return result
        finally:
            if self.rejects_file is not None:
                self.rejects_file.close()

    def _disk_full(self, exc: DiskFullError) -> DiskFullError:
        """The full-disk error with what the operator needs next: where it stopped, what is kept."""
        self._adopt_committed()
        whole = not (self.dry_run or self.strict)  # those run in one transaction: nothing kept
        kept = self.created + self.updated + self.unchanged if whole else 0
        detail = f" ({self.created} created, {self.updated} updated, {self.unchanged} unchanged)" if kept else ""
        return DiskFullError(
            f"import of {self.feed.name} stopped near line {self.line}: {exc.message}; "
            f"{kept} rows were committed in whole batches{detail}",
            hint="free disk space and run the same import again: it continues where it stopped",
        )

    def _finish_writer(self) -> None:
        try:
            self.writer.finish()
        except Exception:  # the connection failed with the import; the staging tables die with it
            pass

    def _process(self) -> None:
        ahead = self._read_ahead()
        with read_ahead(self._batches(ahead)) if ahead else nullcontext(self._batches(False)) as batches:
            for batch, rows, line in batches:
                self.rows, self.line = rows, line
                if batch:
                    self._flush(batch)
        self._report(force=True)

    def _read_ahead(self) -> bool:
        """Whether to read and clean batches in a thread ahead of the one being written.

        On PostgreSQL only, where the server writes while the driver waits without the GIL;
        SQLite's writes hand the GIL back and forth for every row, and a second thread slows
        them down. From a regular file only: a read from a pipe can block for good, and an
        interrupted import could not then stop its reader.
        """
        return isinstance(self.database, pw.PostgresqlDatabase) and self.feed.size is not None

    def _batches(self, yielding: bool) -> Iterator[tuple[list[_Row], int, int]]:
        """The per-row loop: clean, check the SKU, reject or collect; yields ``(batch, rows, line)``.

        Kept lean: it runs per row. Records are read and cleaned ``_YIELD_EVERY`` at a time (a
        column at a time: ``RowCleaner.clean_many``), never past the end of the batch being
        filled, so a batch is handed on as soon as its last row is read (a pipe may hold the
        next one back). In the read-ahead thread (``yielding``) it must not touch the database,
        and gives the GIL away after every few rows; ``rows`` and ``line`` say how far the file
        was read for that batch.
        """
        clean_many = self.cleaner.clean_many
        sku_index = self.layout.sku
        sku_column = self.format.column("sku")
        seen_add = self.seen.add
        batch_size = self.batch_size
        batch: list[_Row] = []
        rows = line = 0
        broken = self.feed.broken  # rows the reader rejected whole (over a limit, an unclosed quote)
        records = self.format.records(self.feed)
        failure: BaseException | None = None
        try:
            while True:
                wanted = min(_YIELD_EVERY, batch_size - len(batch))
                chunk: list[Record] = []
                try:
                    chunk.extend(islice(records, wanted))
                except Exception as exc:  # raised after the rows read before it, as row by row
                    failure = exc
                ended = failure is not None or len(chunk) < wanted
                for record, (values, category, images, errors) in zip(chunk, clean_many(chunk), strict=True):
                    if broken:
                        rows += self._reject_broken(broken, before=record.line)
                    rows += 1
                    line = record.line
                    sku = values[sku_index]
                    if sku is None:
                        errors = errors or []
                        if not any(column == sku_column for column, _ in errors):
                            errors.append((sku_column, "is required"))
                    elif not seen_add(sku):
                        errors = errors or []
                        errors.append((sku_column, f"{sku!r} is repeated in this file; the first occurrence wins"))
                    if errors:
                        self._reject(line, sku, record.raw, errors)
                        continue
                    if record.notes:  # formats note only SKUs they generated
                        self._note(record, sku)
                    batch.append((line, sku, values, category, images, record.raw))
                if len(batch) >= batch_size:
                    yield batch, rows, line
                    batch = []
                if yielding:
                    yield_gil()
                if ended:
                    break
            if failure is not None:
                raise failure
            if broken:
                rows += self._reject_broken(broken)
        except (UnicodeDecodeError, gzip.BadGzipFile, EOFError) as exc:  # from reading the file
            raise unreadable(self.feed.name, exc, self.encoding, line + 1) from None
        finally:
            failure = None  # no reference cycle through the traceback
        yield batch, rows, line

    def _reject_broken(self, broken: list, before: int | None = None) -> int:
        """Reject the rows the reader could not read (``reading.BrokenRow``), those before line
        ``before`` when given (they are in file order); how many there were."""
        count = 0
        while broken and (before is None or broken[0].line < before):
            row = broken.pop(0)
            self._reject(row.line, None, row.raw, [("-", row.message)])
            count += 1
        return count

    def _note(self, record: Record, sku: str) -> None:
        for column, message in record.notes:
            self.generated += 1
            self._add_note(RowIssue(record.line, sku, column, message))

    def _add_note(self, note: RowIssue) -> None:
        with self._lock:  # the reader notes generated SKUs, the writer unknown categories
            if len(self.notes) < MAX_REPORTED:
                self.notes.append(note)

    def _reject(self, line: int, sku: str | None, raw: Any, errors: list[tuple[str, str]]) -> None:
        # Both threads reject rows: the reader (bad values) and the writer (categories, new
        # products missing a required field).
        with self._lock:
            self.rejected += 1
            for column, _ in errors:
                self.by_column[column] += 1
            if len(self.rejects) < MAX_REPORTED:
                self.rejects.append(
                    RowIssue(line, sku, ", ".join(c for c, _ in errors), "; ".join(m for _, m in errors))
                )
            if self.rejects_file is not None:
                self.rejects_file.write(raw, line, "; ".join(f"{c}: {m}" for c, m in errors))

    # -- one batch ------------------------------------------------------------------------------
    def _flush(self, batch: list[_Row]) -> None:
        self.writer.batch_commits = not self.database.in_transaction()
        # SQLite: pfdb's databases begin every transaction IMMEDIATE (database.build_database),
        # so a batch that reads, then writes, waits for the write lock instead of failing.
        with translated_errors(), self.database.atomic():
            # The upsert writes through the driver's cursor, which pfdb's execute_sql never
            # sees: name its tables for the cache, invalidated when this batch commits.
            _writes.mark(Product._meta.table_name, ProductImage._meta.table_name)
            self.writer.begin_batch()
            counts = self._write(batch)
            self._record_counts(counts)
        self.created += counts[0]
        self.updated += counts[1]
        self.unchanged += counts[2]
        self._report()

    def _record_counts(self, counts: tuple[int, int, int]) -> None:
        """Write the totals, this batch included, to the SyncHistory row in the batch's own transaction.

        The counts then commit (or roll back) with the rows they count: an interrupt that lands
        between the commit and the Python counters cannot make the Job under-report what is
        stored. ``_adopt_committed`` reads them back when the import stops.
        """
        if self.sync is None:
            return
        SyncHistory.update(
            processed_count=self.rows,
            created_count=self.created + counts[0],
            updated_count=self.updated + counts[1],
            failed_count=self.rejected,
            error_details={"unchanged": self.unchanged + counts[2], "committed": True},
        ).where(SyncHistory.id == self.sync.id).execute()

    def _adopt_committed(self) -> None:
        """After a stop: take the counts committed with the last whole batch (``_record_counts``) as the truth."""
        if self.sync is None:
            return
        try:
            with db_read_scope():  # never queues behind a writer, nor needs the write lock a full disk refused
                row = (
                    SyncHistory.select(SyncHistory.created_count, SyncHistory.updated_count, SyncHistory.error_details)
                    .where(SyncHistory.id == self.sync.id)
                    .tuples()
                    .first()
                )
        except Exception:  # the connection went with the import: keep the counters as they are
            return
        if row is None:
            return
        details = row[2] if isinstance(row[2], dict) else {}
        committed = details.get("committed")
        self.created, self.updated = (row[0], row[1]) if committed else (0, 0)
        self.unchanged = details.get("unchanged", 0) if committed else 0

    def _write(self, batch: list[_Row]) -> tuple[int, int, int]:
        """Compare the batch with the stored rows and write what is new or changed; (created, updated, unchanged)."""
        writer = self.writer
        columns = writer.products
        now = utcnow()
        if self.layout.category is not None:
            batch = self._resolve_categories(batch)
        if self._merging and self._mergeable(batch):
            return self._merge(batch, now)
        existing = writer.fetch_existing([r[1] for r in batch])
        old_images: dict[int, list[tuple]] = {}
        with_images = [existing[r[1]][0] for r in batch if r[4] and r[1] in existing]
        for image in writer.fetch_images(with_images):  # (product id, id, hash, position, primary)
            old_images.setdefault(image[0], []).append(image)

        tail, image_tail = self._tails(now)
        db_now = writer.adapt(Product.updated_at.db_value(now))
        fill = columns.fill
        same = [writer.same(f) for f in columns.given]
        width = len(columns.given)
        stored_end = width + 2  # old rows: id, sku, the given columns, then the kept ones
        kept = slice(width + 2, width + 2 + len(columns.kept))
        required, missing_always = self._required, self._kept
        out: list[list[Any]] = []
        touch: list[int] = []
        # IMAGE_GIVEN order: product (its SKU here), url, content_hash, position, is_primary; then the
        # tail. is_primary as 1/0: both drivers take it for a boolean column, and sqlite3 takes an int
        # without going through its adapter protocol (a bool is not an exact int).
        image_rows: list[tuple] = []
        image_updates: list[tuple] = []
        image_deletes: list[int] = []
        created = updated = unchanged = 0
        for line, sku, values, _, images, raw in batch:
            old = existing.get(sku)
            if old is None:
                missing = missing_always[0] if missing_always else None
                for i, name in required:
                    if values[i] is None:
                        missing = name
                        break
                if missing is not None:
                    self._reject(line, sku, raw, [(self.format.column(missing), "is required for a new product")])
                    continue
                for i, default in fill:
                    if values[i] is None:
                        values[i] = default
                out.append(values + tail)
                created += 1
                if images:
                    image_rows += [
                        (sku, url, digest, i, 1 if i == 0 else 0, *image_tail) for i, (url, digest) in enumerate(images)
                    ]
                continue
            changed = False
            if tuple(values) != old[2:stored_end]:  # equal: the common unchanged row, compared in C
                for i in range(width):
                    value, before = values[i], old[i + 2]
                    if value is None:
                        values[i] = before  # the row gives nothing here: keep what is stored
                    elif not changed and value != before and not same[i](value, before):
                        changed = True
            images_changed = False
            if images:
                inserts, updates, deletes = _image_changes(images, old_images.get(old[0], ()), db_now)
                if inserts or updates or deletes:
                    images_changed = True
                    image_rows += [(sku, url, digest, i, 1 if i == 0 else 0, *image_tail) for i, url, digest in inserts]
                    image_updates.extend(updates)
                    image_deletes.extend(deletes)
            if changed:
                out.append(values + list(old[kept]) + tail)
                updated += 1
            elif images_changed:
                touch.append(old[0])
                updated += 1
            else:
                unchanged += 1
        if out:
            written = writer.upsert(out)
            if written is not None:  # the server's count: a racing importer may have created some first
                inserted, rewritten = written
                unchanged += len(out) - inserted - rewritten
                updated += rewritten - (len(out) - created)
                created = inserted
        self._write_images(touch, image_deletes, image_updates, image_rows, db_now)
        return created, updated, unchanged

    def _write_images(
        self, touch: list[int], deletes: list[int], updates: list[tuple], rows: list[tuple], db_now: Any
    ) -> None:
        """A batch's image changes, and ``updated_at`` for products whose images alone changed."""
        writer = self.writer
        if touch:
            writer.touch_products(touch, db_now)
        if deletes:
            writer.delete_images(deletes)
            self.images_removed += len(deletes)
        if updates:
            writer.update_images(updates)
        if rows:
            added = writer.insert_images(rows)
            self.images_added += len(rows) if added is None else added

    def _tails(self, now: Any) -> tuple[list[Any], tuple]:
        """The batch's tail values (timestamps, status) to append to product and image rows: none
        when the writer takes them apart (``Writer.tail_apart``)."""
        writer = self.writer
        tail = writer.products.tail_values(now, writer.adapt)
        image_tail = writer.images.tail_values(now, writer.adapt)
        if writer.tail_apart:
            writer.batch_tails(tail, image_tail)
            return [], ()
        return list(tail), image_tail

    def _mergeable(self, batch: list[_Row]) -> bool:
        """Whether the server can find, compare and write this batch alone (``Writer.merge``).

        Not when a row lacks a value whose absence means one thing for a new product and
        another for a stored one: a required field (a reject, or keep the stored name) or one
        with a default (the default, or keep the stored value); nor when the feed leaves out
        a required column (its stored value must be read to be kept).
        """
        if self._kept:
            return False
        for i in self._defaulted:
            for r in batch:
                if r[2][i] is None:
                    return False
        return True

    def _merge(self, batch: list[_Row], now: Any) -> tuple[int, int, int]:
        """One batch through ``Writer.merge``: the server's counts; images compared only for stored products.

        When most rows of a batch turn out to be stored already (a re-import), later batches
        go back to the lookup, which sends the server only the changed rows.
        """
        writer = self.writer
        tail, image_tail = self._tails(now)
        written = writer.merge([r[2] + tail for r in batch] if tail else [r[2] for r in batch])
        if written is None:  # the writer cannot merge this batch: the lookup
            self._merging = False
            return self._write(batch)
        created = sum(1 for *_, fresh in written if fresh)
        updated = len(written) - created
        unchanged = len(batch) - len(written)
        if created * 2 < len(batch):
            self._merging = False
        pictured = [(sku, images) for _, sku, _, _, images, _ in batch if images]
        if not pictured:
            return created, updated, unchanged
        db_now = writer.adapt(Product.updated_at.db_value(now))
        fresh = {sku for sku, _, new in written if new}
        rewritten = {sku for sku, _, new in written if not new}
        image_rows = [
            (sku, url, digest, i, 1 if i == 0 else 0, *image_tail)
            for sku, images in pictured
            if sku in fresh
            for i, (url, digest) in enumerate(images)
        ]
        stored = [(sku, images) for sku, images in pictured if sku not in fresh]
        touch: list[int] = []
        image_updates: list[tuple] = []
        image_deletes: list[int] = []
        if stored:
            ids = writer.product_ids([sku for sku, _ in stored])
            old_images: dict[int, list[tuple]] = {}
            for image in writer.fetch_images(list(ids.values())):
                old_images.setdefault(image[0], []).append(image)
            for sku, images in stored:
                pk = ids.get(sku)
                if pk is None:  # removed since the merge by another writer
                    continue
                inserts, updates, deletes = _image_changes(images, old_images.get(pk, ()), db_now)
                if not (inserts or updates or deletes):
                    continue
                image_rows += [(sku, url, digest, i, 1 if i == 0 else 0, *image_tail) for i, url, digest in inserts]
                image_updates.extend(updates)
                image_deletes.extend(deletes)
                if sku not in rewritten:  # only its images changed
                    touch.append(pk)
                    updated += 1
                    unchanged -= 1
        self._write_images(touch, image_deletes, image_updates, image_rows, db_now)
        return created, updated, unchanged

    def _resolve_categories(self, batch: list[_Row]) -> list[_Row]:
        kept = []
        index = self.layout.category
        known = self._categories  # a feed names few categories: most rows find theirs here, with no call
        for r in batch:
            ref = r[3]
            if ref is not None:
                category_id = known.get(ref, _UNKNOWN)
                if category_id is _UNKNOWN:
                    try:
                        category_id = self._category_id(r)
                    except Invalid as exc:
                        self._reject(r[0], r[1], r[5], [(self.format.column(CATEGORY), str(exc))])
                        continue
                r[2][index] = category_id
            kept.append(r)
        return kept

    def _category_id(self, r: _Row) -> int | None:
        line, sku, _, ref, _, _ = r
        if ref in self._categories:
            return self._categories[ref]
        try:
            if isinstance(ref, CategoryRef):
                if ref.kind == "google" and ref.value.isdigit():
                    found = Category.select(Category.id).where(Category.external_id == ref.value).scalar()
                    if found is None and ref.fallback:
                        found = self.resolver.resolve(ref.fallback)
                    if found is None:
                        self._add_note(
                            RowIssue(
                                line,
                                sku,
                                self.format.column(CATEGORY),
                                f"Google category {ref.value} is not in the tree (import the "
                                "Google taxonomy with ids first); left without a category",
                            )
                        )
                    category_id = found
                else:
                    category_id = self.resolver.resolve(ref.value)
            else:
                category_id = self.resolver.resolve_slug_or_path(str(ref))
        except ValidationError as exc:
            raise Invalid(exc.message.split(": ", 1)[-1]) from None
        self._categories[ref] = category_id
        return category_id

    # -- progress, Job and SyncHistory ----------------------------------------------------------
    def _bytes(self) -> int | None:
        try:
            return self.feed.position() if self.feed.position else None
        except (OSError, ValueError):
            return None

    def _report(self, force: bool = False) -> None:
        done = self._bytes()
        if self.progress is not None:
            self.progress(
                ImportProgress(
                    self.rows, done, self.feed.size, self.created, self.updated, self.unchanged, self.rejected
                )
            )
        now = time.monotonic()
        if self.job is None or (not force and now - self._last_report < PROGRESS_INTERVAL):
            return
        self._last_report = now
        percent = min(99, done * 100 // self.feed.size) if done is not None and self.feed.size else None
        self.job.report_progress(
            processed_items=self.rows,
            progress=percent,
            step=f"{self.rows} rows: {self.created} created, {self.updated} updated",
        )

    def _begin_job(self) -> None:
        with self.database.atomic():
            self.job = Job(job_type=JOB_TYPE, parameters=self.parameters, user=self.user)
            self.job.save()
            self.job.start(step=f"importing {self.feed.name}"[:255])
            self.sync = SyncHistory(
                sync_type=SYNC_TYPE,
                direction="import",
                source=self.feed.name[:1024],
                target=self.format.name,
                job=self.job,
                user=self.user,
            )
            self.sync.save()

    def _summary(self) -> dict[str, Any]:
        return {
            "unchanged": self.unchanged,
            "rejected": self.rejected,
            "generated_skus": self.generated,
            "rejected_by_column": dict(self.by_column.most_common(20)),
            "first_rejects": [r.as_dict() for r in self.rejects[:20]],
        }

    def _save_sync(self, status: str, extra: dict[str, Any] | None = None) -> None:
        sync = self.sync
        if sync is None:
            return
        sync.status, sync.completed_at = status, utcnow()
        sync.processed_count, sync.created_count, sync.updated_count = self.rows, self.created, self.updated
        sync.failed_count = self.rejected
        sync.error_details = {**self._summary(), **(extra or {})}
        sync.save()

    def _end_job(self, result: ImportResult) -> None:
        if self.job is None:
            return
        counts = {k: v for k, v in result.as_dict().items() if isinstance(v, int) and not isinstance(v, bool)}
        if self.strict and self.rejected:
            message = f"strict: {self.rejected} rows rejected; nothing was written"
            self.job.fail(message)
            self._save_sync("failed", {"error": message})
        else:
            self.job.complete(result=counts)
            self._save_sync("completed")

    def _abort(self, reason: str, *, cancelled: bool = False) -> None:
        """Record why the import stopped; never hides the exception that stopped it."""
        if self.job is None or self.job.is_finished:
            return
        self._adopt_committed()
        message = f"{reason} after {self.rows} rows ({self.created} created, {self.updated} updated in whole batches)"
        try:
            self.job.fail(message, cancelled=cancelled)
            self._save_sync("cancelled" if cancelled else "failed", {"error": message})
        except Exception:  # the connection went with the import; the Job stays 'running'
            pass

    def _result(self) -> ImportResult:
        written = not self.dry_run and not (self.strict and self.rejected)
        return ImportResult(
            source=self.feed.name,
            format=self.format.name,
            rows=self.rows,
            created=self.created,
            updated=self.updated,
            unchanged=self.unchanged,
            rejected=self.rejected,
            generated_skus=self.generated,
            images_added=self.images_added,
            images_removed=self.images_removed,
            categories_created=len(self.resolver.created),
            dry_run=self.dry_run,
            strict=self.strict,
            written=written,
            rejects=tuple(self.rejects),
            notes=tuple(self.notes),
            ignored_columns=tuple(self.format.ignored),
            rejects_file=self.rejects_file.path if self.rejects_file and self.rejects_file.written else None,
            job_id=str(self.job.job_id) if self.job else None,
            sync_id=self.sync.id if self.sync else None,
            seconds=time.monotonic() - self.started,
            unit=self.format.unit,
            lines=getattr(self.format, "lines_read", None) or self.rows,
            skipped=tuple(sorted(getattr(self.format, "skipped", {}).items())),
            currency=self.parameters.get("currency")
            or (None if "currency" in self.format.carried else Product.currency.default),
        )


def _image_changes(wanted: list[tuple[str, str]], stored: Any, now: Any):
    """(inserts, updates, deletes) that turn a product's URL images into ``wanted``, in order.

    ``stored``: rows of ``(product id, id, content hash, position, is_primary)``.
    """
    by_hash = {image[2]: image for image in stored}
    inserts, updates = [], []
    for i, (url, digest) in enumerate(wanted):
        have = by_hash.get(digest)
        if have is None:
            inserts.append((i, url, digest))
        elif have[3] != i or bool(have[4]) != (i == 0):
            updates.append((i, 1 if i == 0 else 0, now, have[1]))
    if len(by_hash) == len(wanted) and not inserts:
        return inserts, updates, []  # every stored image is wanted: nothing to delete
    keep = {digest for _, digest in wanted}
    deletes = [image[1] for digest, image in by_hash.items() if digest not in keep]
    return inserts, updates, deletes


def _batch_size(value: Any) -> int:
    """``batch_size`` as given from Python or the command line, or a ``UsageError`` naming it."""
    try:
        size = int(str(value).strip())
    except (TypeError, ValueError):
        raise UsageError(
            f"batch size (--batch-size) must be a whole number of at least 1, got {value!r}",
            hint="e.g. --batch-size 2000",
        ) from None
    if size < 1:
        raise UsageError(f"batch size (--batch-size) must be at least 1, got {value}", hint="e.g. --batch-size 2000")
    return size


def _currency(value: Any) -> str | None:
    """``--currency`` as an upper-case ISO 4217 code, or a ``UsageError`` naming it."""
    if value is None or str(value).strip() == "":
        return None
    code = str(value).strip().upper()
    if not re.fullmatch(r"[A-Z]{3}", code):
        raise UsageError(
            f"currency (--currency) must be a three-letter ISO 4217 code, got {value!r}", hint="e.g. --currency EUR"
        )
    return code


def _check_encoding(encoding: str) -> None:
    """An unknown codec is a usage error before anything opens, not a LookupError mid-read."""
    import codecs

    try:
        codecs.lookup(str(encoding))
    except LookupError:
        raise UsageError(
            f"unknown encoding {encoding!r} (--encoding)",
            hint="use a Python codec name such as utf-8, utf-8-sig, latin-1 or cp1252",
        ) from None


@writes_to_primary("pfdb import")
def import_products(
    source: Any,
    *,
    format: str | None = None,
    mapping: str | Path | ColumnMapping | None = None,
    dry_run: bool = False,
    strict: bool = False,
    rejects: str | Path | None = None,
    batch_size: int = BATCH_SIZE,
    encoding: str = DEFAULT_ENCODING,
    progress: Callable[[ImportProgress], None] | None = None,
    user: Any = None,
    currency: str | None = None,
) -> ImportResult:
    """Import a product feed: create new SKUs, update changed ones in the fields the feed carries.

    Args:
        source: a path (``.gz`` is read as gzip), ``"-"`` for standard input, or a file object.
        format: ``pfdb``, ``shopify``, ``woocommerce``, ``google`` or ``google-retail``; detected if None.
        mapping: a column-mapping file (JSON or INI) or ``ColumnMapping`` for any other layout.
        dry_run: validate and count everything, write nothing (no Job either).
        strict: write nothing if any row is bad.
        rejects: write the bad rows, original columns plus ``reject_line`` and ``reject_reason``, here.
        batch_size: rows per transaction.
        progress: called with an ``ImportProgress`` after every batch.
        currency: the ISO 4217 code of rows that name no currency (a Shopify export names none).

    Returns an ``ImportResult``; raises ``FeedError`` when the file itself cannot be read.
    Example: ``import_products("feed.csv", rejects="rejects.csv")``
    """
    batch_size = _batch_size(batch_size)
    _check_encoding(encoding)
    currency = _currency(currency)
    database = get_database()
    if rejects:
        # Before anything is opened: --rejects over the database or the feed destroyed them.
        feed_path = Path(source).expanduser() if isinstance(source, (str, Path)) and str(source) != "-" else source
        check_output(
            Path(rejects),
            what=f"the rejects file {rejects}",
            inputs=[
                ("the feed being imported", feed_path),
                ("the mapping file", Path(mapping) if isinstance(mapping, (str, Path)) else None),
            ],
        )
    if isinstance(mapping, (str, Path)):
        mapping = ColumnMapping.load(mapping)
    name = "<stdin>" if str(source) == "-" else str(getattr(source, "name", source))
    parameters = {
        "source": name,
        "format": format,
        "mapping": getattr(mapping, "source", None),
        "strict": strict,
        "rejects": str(rejects) if rejects else None,
        "batch_size": int(batch_size),
        "currency": currency,
    }
    with open_feed(source, encoding=encoding, delimiter=mapping.delimiter if mapping else None) as feed:
        fmt = make_format(feed, format, mapping)
        if currency:
            fmt.carried = tuple(c for c in PFDB_COLUMNS if c in fmt.carried or c == "currency")
        run = _Import(
            database,
            feed,
            fmt,
            dry_run=dry_run,
            strict=strict,
            rejects=rejects,
            batch_size=int(batch_size),
            progress=progress,
            user=user,
            parameters=parameters,
            encoding=encoding,
            currency=currency,
        )
        return run.run()


__all__ = ["ImportProgress", "ImportResult", "Record", "RowIssue", "SeenKeys", "import_products"]
