"""Settings: read once from the environment (and an optional ``.env``) into one frozen object.

The real environment wins over ``.env``; explicit arguments to ``load_settings`` win over
both, which is how ``init_database(url, pool_size=…)`` embeds pfdb without touching
``os.environ``. Every bad value fails here, at once, naming the variable and the form it takes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError

DEFAULT_SQLITE_FILE = "pfdb.db"
DEFAULT_DATABASE_URL = f"sqlite:///{DEFAULT_SQLITE_FILE}"
SCHEMES = ("sqlite", "postgresql", "postgres")
MASK = "***"


@dataclass(frozen=True)
class DatabaseURL:
    """A parsed ``DATABASE_URL``. ``str()`` and ``repr()`` never show the password."""

    backend: str  # "sqlite" or "postgresql"
    path: str | None = None  # SQLite file, or ":memory:"
    database: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    host: str | None = None
    port: int | None = None
    options: Mapping[str, str] = field(default_factory=dict)
    raw: str = field(default="", repr=False, compare=False)

    @property
    def masked(self) -> str:
        return mask_url(self.raw)

    @property
    def is_memory(self) -> bool:
        return self.backend == "sqlite" and self.path == ":memory:"

    @property
    def name(self) -> str:
        """A short name for the database: the file stem or the PostgreSQL database name."""
        if self.backend == "sqlite":
            return "memory" if self.is_memory else Path(self.path or "").stem
        return self.database or "postgres"

    def __str__(self) -> str:
        return self.masked


def mask_url(url: str) -> str:
    """Replace the password of a database URL with ``***``: the only form pfdb ever shows."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable DATABASE_URL>"
    if parts.password is None:
        return url
    netloc = parts.netloc
    userinfo, _, hostinfo = netloc.rpartition("@")
    user = userinfo.split(":", 1)[0]
    return parts._replace(netloc=f"{user}:{MASK}@{hostinfo}").geturl()


def parse_database_url(url: str) -> DatabaseURL:
    """Parse a ``DATABASE_URL`` into its parts, or raise ``ConfigError`` saying what is wrong."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in SCHEMES:
        raise ConfigError(
            f"DATABASE_URL has an unsupported scheme {scheme + ':' if sep else mask_url(url)!r}",
            hint="use sqlite:///path/to.db, sqlite:///:memory: or postgresql://user:pass@host:5432/db",
        )
    if scheme == "sqlite":
        # sqlite:///relative.db -> "relative.db"; sqlite:////abs.db -> "/abs.db"
        if not rest.startswith("/"):
            raise ConfigError(
                "DATABASE_URL for SQLite needs three slashes",
                hint="use sqlite:///relative.db or sqlite:////absolute/path.db",
            )
        path = rest[1:].split("?", 1)[0]
        if not path:
            raise ConfigError(
                "DATABASE_URL has no database file name",
                hint="use sqlite:///path/to.db (three slashes) or sqlite:///:memory:",
            )
        return DatabaseURL(backend="sqlite", path=path, raw=url)

    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(
            f"DATABASE_URL is malformed: {mask_url(url)} ({exc})",
            hint="use postgresql://user:pass@host:5432/db",
        ) from None
    database = unquote(parts.path.lstrip("/"))
    if not database:
        raise ConfigError(
            f"DATABASE_URL has no database name: {mask_url(url)}",
            hint="use postgresql://user:pass@host:5432/db",
        )
    return DatabaseURL(
        backend="postgresql",
        database=database,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname,
        port=port,
        options=dict(parse_qsl(parts.query)),
        raw=url,
    )


def _parse_int(name: str, raw: str, minimum: int = 0) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}", hint=f"e.g. {name}=10") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}", hint=f"e.g. {name}=10")
    return value


def _parse_seconds(name: str, raw: Any) -> float:
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}", hint=f"e.g. {name}=30") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}", hint=f"e.g. {name}=30")
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def parse_bool(name: str, raw: Any) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}", hint="use true/false, yes/no, on/off or 1/0")


@dataclass(frozen=True)
class Settings:
    """Every knob pfdb reads, typed. Build it with ``load_settings()``."""

    database_url: DatabaseURL
    pool_size: int = 10
    max_overflow: int = 20
    pool_timeout: float = 30.0
    pool_recycle: float = 3600.0
    # PostgreSQL: seconds to open a connection, startup included (0: no limit; libpq counts
    # whole seconds, at least 2); `connect_timeout` in the URL wins. And a server-side limit
    # per statement (0: none).
    connect_timeout: float = 5.0
    statement_timeout: float = 0.0
    echo: bool = False
    migration_auto_upgrade: bool = False
    migration_backup_before_upgrade: bool = True

    @property
    def max_connections(self) -> int:
        return self.pool_size + self.max_overflow

    def as_dict(self) -> dict[str, Any]:
        """Plain values for display, with the URL masked."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["database_url"] = self.database_url.masked
        return out


# environment variable -> (settings field, parser)
_ENV = {
    "DATABASE_POOL_SIZE": ("pool_size", lambda n, v: _parse_int(n, v, minimum=1)),
    "DATABASE_MAX_OVERFLOW": ("max_overflow", _parse_int),
    "DATABASE_POOL_TIMEOUT": ("pool_timeout", _parse_seconds),
    "DATABASE_POOL_RECYCLE": ("pool_recycle", _parse_seconds),
    "DATABASE_CONNECT_TIMEOUT": ("connect_timeout", _parse_seconds),
    "DATABASE_STATEMENT_TIMEOUT": ("statement_timeout", _parse_seconds),
    "DATABASE_ECHO": ("echo", parse_bool),
    "MIGRATION_AUTO_UPGRADE": ("migration_auto_upgrade", parse_bool),
    "MIGRATION_BACKUP_BEFORE_UPGRADE": ("migration_backup_before_upgrade", parse_bool),
}
_FIELD_TO_ENV = {field_name: env for env, (field_name, _) in _ENV.items()}


def read_environment(dotenv_path: str | os.PathLike | None = ".env") -> dict[str, str]:
    """The variables pfdb reads: ``.env`` (if present) overlaid by the real environment."""
    values: dict[str, str] = {}
    if dotenv_path and Path(dotenv_path).is_file():
        from dotenv import dotenv_values  # only when there is a .env to read

        values.update({k: v for k, v in dotenv_values(dotenv_path).items() if v is not None})
    names = ("DATABASE_URL", *_ENV)
    values.update({k: os.environ[k] for k in names if k in os.environ})
    return {k: v for k, v in values.items() if k in names}


def load_settings(
    url: str | None = None,
    environ: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build ``Settings`` from ``environ`` (default: ``.env`` + the environment) and overrides.

    Overrides use field names (``pool_size=5``) and are validated like the variables.
    """
    env = read_environment() if environ is None else dict(environ)
    raw_url = url or env.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    values: dict[str, Any] = {"database_url": parse_database_url(raw_url.strip())}
    for env_name, (field_name, parse) in _ENV.items():
        if env_name in env:
            values[field_name] = parse(env_name, env[env_name])
    for field_name, value in overrides.items():
        if field_name not in _FIELD_TO_ENV:
            known = ", ".join(sorted(_FIELD_TO_ENV))
            raise ConfigError(f"unknown setting {field_name!r}", hint=f"known settings: {known}")
        _, parse = _ENV[_FIELD_TO_ENV[field_name]]
        values[field_name] = parse(field_name, value)
    return Settings(**values)


def with_overrides(settings: Settings, **overrides: Any) -> Settings:
    return replace(settings, **overrides)
