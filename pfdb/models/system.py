"""The system log table and typed key/value configuration."""

from __future__ import annotations

import json
import warnings
from typing import Any

from .. import cache
from .._peewee import peewee as pw
from ..config import is_secret_name
from ..errors import ValidationError
from ..rules import truth
from .base import BaseModel, require_choice, require_text
from .fields import JSONField
from .users import User

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
VALUE_TYPES = ("string", "int", "float", "bool", "json")
MASK = "********"


class SystemLog(BaseModel):
    level = pw.CharField(max_length=10)
    logger = pw.CharField(max_length=255, null=True)
    message = pw.TextField()
    module = pw.CharField(max_length=255, null=True)
    function = pw.CharField(max_length=255, null=True)
    line = pw.IntegerField(null=True)
    exception = pw.TextField(null=True)
    extra = JSONField(null=True)
    user = pw.ForeignKeyField(User, null=True, backref="logs", on_delete="SET NULL")

    repr_fields = ("id", "level", "logger")

    class Meta:
        table_name = "system_logs"
        indexes = ((("level", "created_at"), False),)

    def validate(self) -> None:
        self.level = str(self.level or "").upper()
        require_choice("level", self.level, LOG_LEVELS)
        if self.message is None:
            raise ValidationError("message", "is required")

    @classmethod
    def recent(cls, level: str | None = None, limit: int = 10) -> pw.ModelSelect:
        """Newest first; with ``level``, that level and above (``ERROR`` includes ``CRITICAL``)."""
        query = cls.select().order_by(cls.created_at.desc(), cls.id.desc()).limit(limit)
        if level:
            level = level.upper()
            require_choice("level", level, LOG_LEVELS)
            query = query.where(cls.level.in_(LOG_LEVELS[LOG_LEVELS.index(level) :]))
        return query


def _encode(value: Any, value_type: str) -> str:
    if value_type == "json":
        return json.dumps(value, sort_keys=True)
    if value_type == "bool":
        return "true" if value else "false"
    return str(value)


def _decode(raw: str | None, value_type: str) -> Any:
    if raw is None:
        return None
    if value_type == "int":
        return int(raw)
    if value_type == "float":
        return float(raw)
    if value_type == "bool":
        return bool(truth(raw))  # pfdb's true/false words; another word is a ValueError (RuleError)
    if value_type == "json":
        return json.loads(raw)
    return raw


def _type_of(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    return "json"


class Configuration(BaseModel):
    key = pw.CharField(max_length=255, unique=True)
    value = pw.TextField(null=True)
    value_type = pw.CharField(max_length=10, default="string")
    description = pw.TextField(null=True)
    category = pw.CharField(max_length=100, null=True, index=True)
    is_sensitive = pw.BooleanField(default=False)

    repr_fields = ("id", "key", "display_value")

    class Meta:
        table_name = "configuration"

    def __init__(self, *args: Any, **kwargs: Any):
        # A key that says it is secret (shopify.api_secret, smtp.password, *token*, *api_key*)
        # is sensitive unless the caller says otherwise: forgetting is_sensitive=True must
        # not show an API secret. Rows read back carry their stored flag, so are untouched.
        if "is_sensitive" not in kwargs and is_secret_name(kwargs.get("key") or ""):
            kwargs["is_sensitive"] = True
        super().__init__(*args, **kwargs)

    @property
    def typed_value(self) -> Any:
        return _decode(self.value, self.value_type)

    @property
    def display_value(self) -> Any:
        """The value as it may be shown: sensitive ones are masked."""
        return MASK if self.is_sensitive and self.value is not None else self.typed_value

    def validate(self) -> None:
        self.key = require_text("key", self.key, 255)
        require_choice("value_type", self.value_type, VALUE_TYPES)
        try:
            _decode(self.value, self.value_type)
        except (ValueError, TypeError):
            raise ValidationError("value", f"{self.value!r} is not a valid {self.value_type}") from None

    @classmethod
    def get_value(cls, key: str, default: Any = None) -> Any:
        """The typed value of ``key``, or ``default``; served by the Redis cache when there is one."""
        found = cache.lookup(cls._meta.table_name, "key", str(key), lambda: cls._stored(key))
        return default if found is None else _decode(found[0], found[1])

    @classmethod
    def _stored(cls, key: str) -> list[Any] | None:
        row = cls.select(cls.value, cls.value_type).where(cls.key == key).tuples().first()
        return None if row is None else list(row)

    @classmethod
    def set_value(
        cls,
        key: str,
        value: Any,
        *,
        value_type: str | None = None,
        description: str | None = None,
        category: str | None = None,
        is_sensitive: bool | None = None,
    ) -> Configuration:
        """Create or update ``key``; the type is inferred from ``value`` unless given.

        The read that decides between insert and update runs in the write's transaction, so
        it is answered by the primary (never a replica behind it) and SQLite's write lock.
        """
        value_type = value_type or _type_of(value)
        require_choice("value_type", value_type, VALUE_TYPES)
        with cls._meta.database.atomic():
            row = cls.get_or_none(cls.key == key) or cls(key=key)
            row.value, row.value_type = _encode(value, value_type), value_type
            if description is not None:
                row.description = description
            if category is not None:
                row.category = category
            if is_sensitive is not None:
                row.is_sensitive = is_sensitive
            row.save()
        return row

    @classmethod
    def get(cls, *query: Any, **filters: Any) -> Any:
        """peewee's ``Model.get`` (a row, or ``DoesNotExist``); a string key is the old ``get_value`` shorthand.

        ``Configuration.get(Configuration.key == "x")`` is peewee's, unchanged: it returns the
        row. ``Configuration.get("x", default)`` still returns the typed value as it always
        did, with a ``DeprecationWarning``: one name meaning two things misleads, so call
        ``get_value`` (the canonical name).
        """
        if query and isinstance(query[0], str):
            warnings.warn(
                "Configuration.get(key) is deprecated: use Configuration.get_value(key, default)",
                DeprecationWarning,
                stacklevel=2,
            )
            return cls.get_value(*query, **filters)
        return super().get(*query, **filters)

    #: The same as ``set_value`` (a short name kept for callers; peewee has no ``Model.set``).
    set = set_value


TENANT_STATES = ("creating", "active", "moving", "dropping")


class Tenant(BaseModel):
    """The registry of tenants, read from the main database only (``pfdb.tenants``).

    ``server`` is the name of a ``DATABASE_SERVERS`` entry, or ``default`` (the server of
    ``DATABASE_URL``); ``schema_version`` is the tenant's last applied migration. Not in
    ``MODELS``: migration 004 makes it with SQL of its own, so drift checks, copies and the
    tables every tenant has leave it out (a tenant's schema holds an empty one).
    """

    name = pw.CharField(max_length=40, unique=True)
    server = pw.CharField(max_length=63, default="default")
    schema_version = pw.CharField(max_length=255, null=True)
    state = pw.CharField(max_length=16, default="active")

    repr_fields = ("id", "name", "server", "state")

    class Meta:
        table_name = "tenants"

    def validate(self) -> None:
        require_choice("state", self.state, TENANT_STATES)
