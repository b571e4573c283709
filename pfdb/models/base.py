"""The base model: proxy binding, UTC timestamps, validation before writes, clear duplicate errors."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from .._peewee import peewee as pw
from ..database import db
from ..errors import DuplicateError, ValidationError
from ..text import NUL_REASON, first_line
from .fields import JSONField, UTCDateTimeField, utcnow

# SQLite: "UNIQUE constraint failed: products.sku"
_SQLITE_UNIQUE = re.compile(r"UNIQUE constraint failed: (?P<cols>[\w., ]+)")
# PostgreSQL detail: "Key (sku)=(ABC-1) already exists."
_PG_UNIQUE = re.compile(r"Key \((?P<cols>[^)]+)\)=\((?P<value>.*)\) already exists")


class BaseModel(pw.Model):
    """Every pfdb table: bound to ``pfdb.db``, with ``created_at``/``updated_at`` in UTC."""

    created_at = UTCDateTimeField(default=utcnow)
    updated_at = UTCDateTimeField(default=utcnow)

    #: fields whose values never appear in ``repr``
    secret_fields: ClassVar[tuple[str, ...]] = ()
    #: fields shown in ``repr``
    repr_fields: ClassVar[tuple[str, ...]] = ("id",)

    class Meta:
        database = db
        legacy_table_names = False

    def validate(self) -> None:
        """Raise ``ValidationError`` naming the field; called before every save."""

    def save(self, force_insert: bool = False, only: Any = None) -> int:
        self.validate()
        refuse_nul(self)
        if self._pk is not None and not force_insert:
            self.updated_at = utcnow()
            if only is not None:
                only = list(only) + [type(self).updated_at]
        # A savepoint: a failed insert on PostgreSQL must not poison the caller's transaction.
        with self._meta.database.atomic():
            try:
                return super().save(force_insert=force_insert, only=only)
            except pw.IntegrityError as exc:
                raise self._translate_integrity_error(exc) from exc

    def delete_instance(self, recursive: bool = False, delete_nullable: bool = False) -> int:
        """Delete this row; a row others still refer to (``RESTRICT``) is a ``ValidationError``."""
        with self._meta.database.atomic():
            try:
                return super().delete_instance(recursive=recursive, delete_nullable=delete_nullable)
            except pw.IntegrityError as exc:
                raise ValidationError(
                    type(self).__name__,
                    f"{self._pk} cannot be deleted: other rows still refer to it",
                    hint="delete or move them first",
                ) from exc

    def _translate_integrity_error(self, exc: pw.IntegrityError) -> Exception:
        text = str(exc)
        detail = getattr(getattr(exc, "orig", None), "diag", None)
        detail_text = getattr(detail, "message_detail", None) or text
        name = type(self).__name__
        match = _PG_UNIQUE.search(detail_text)
        if match:
            key = match["cols"].split(",")[0].strip()
            return DuplicateError(key, match["value"], name)
        match = _SQLITE_UNIQUE.search(text)
        if match:
            key = match["cols"].split(",")[0].split(".")[-1].strip()
            field = self._meta.fields.get(key) or next(
                (f for f in self._meta.fields.values() if f.column_name == key), None
            )
            value = getattr(self, field.name) if field is not None else "?"
            return DuplicateError(key, value, name)
        if "FOREIGN KEY" in text.upper() or "foreign key" in text:
            return ValidationError(name, f"refers to a row that does not exist ({first_line(exc)})")
        return ValidationError(name, first_line(exc))

    def __str__(self) -> str:
        # peewee's metaclass builds each model's repr as "<Name: str(self)>"
        return ", ".join(f"{f}={getattr(self, f, None)!r}" for f in self.repr_fields)


def refuse_nul(instance: pw.Model) -> None:
    """``ValidationError`` for a text field holding ``\\x00``: SQLite stores it, PostgreSQL refuses it."""
    for field in instance._meta.sorted_fields:
        if isinstance(field, (pw.CharField, pw.TextField)) and not isinstance(field, JSONField):
            value = instance.__data__.get(field.name)
            if value.__class__ is str and "\x00" in value:
                raise ValidationError(field.name, NUL_REASON)


def require_text(field: str, value: Any, max_length: int | None = None, *, allow_empty: bool = False) -> str | None:
    """Trimmed text, or ``ValidationError`` for empty (unless allowed) or too long."""
    if value is None:
        if allow_empty:
            return None
        raise ValidationError(field, "is required")
    text = str(value).strip()
    if not text and not allow_empty:
        raise ValidationError(field, "must not be empty")
    if max_length is not None and len(text) > max_length:
        raise ValidationError(field, f"is longer than {max_length} characters ({len(text)})")
    return text


def require_choice(field: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(field, f"must be one of {', '.join(choices)}, got {value!r}")
    return value
