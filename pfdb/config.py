"""Settings: read once from the environment (and an optional ``.env``) into one frozen object.

The real environment wins over ``.env``; explicit arguments to ``load_settings`` win over
both, which is how ``init_database(url, pool_size=…)`` embeds pfdb without touching
``os.environ``. Every bad value fails here, at once, naming the variable and the form it takes.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from .errors import ConfigError
from .rules import RuleError, truth

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

    @property
    def secrets(self) -> tuple[str, ...]:
        """Every secret this URL carries: the userinfo password and secret-named options."""
        found = [self.password] if self.password else []
        found += [v for k, v in self.options.items() if v and is_secret_name(k)]
        return tuple(found)

    def driver_params(self) -> dict[str, Any]:
        """psycopg2's keyword arguments for this URL (its query options, then user, password,
        host and port when given); ``dbname`` is left to the caller, which may connect elsewhere."""
        params: dict[str, Any] = dict(self.options)
        for key, value in (("user", self.user), ("password", self.password), ("host", self.host), ("port", self.port)):
            if value is not None:
                params[key] = value
        return params

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:  # the generated one would print options such as ?password=…
        return f"DatabaseURL({self.masked!r})"


# A name "says" it is secret when one of its words holds one of these: password, sslpassword,
# api_secret, access_token, api_key, sslkey, x-api-key. Words split at anything not a letter
# or digit, so "keywords" or "monkey_count" are not secret, "apikey" and "sslkey" are.
_SECRET_WORD = re.compile(r"pass(word|wd|phrase)|secret|token|credential|key$")


def is_secret_name(name: str) -> bool:
    """True when a setting, URL option or configuration key names a secret.

    The one rule for URL options (``?password=``, ``?sslpassword=``), configuration keys
    (``shopify.api_secret``, ``smtp.password``, ``*token*``, ``*api_key*``) and anything else
    that decides whether a value may be shown.
    """
    return any(_SECRET_WORD.search(word) for word in re.split(r"[^a-z0-9]+", str(name).lower()) if word)


def _mask_query(query: str) -> str:
    """``a=1&password=x`` -> ``a=1&password=***``, keeping every other byte as written."""
    out = []
    for item in query.split("&"):
        key, eq, _ = item.partition("=")
        out.append(f"{key}={MASK}" if eq and is_secret_name(unquote(key)) else item)
    return "&".join(out)


def mask_url(url: str) -> str:
    """The only form of a database URL pfdb ever shows: every secret replaced with ``***``.

    Masks the userinfo password (``user:***@host``) and the value of every query option whose
    name says it is secret (``?password=***``, ``?sslpassword=***``, ``?api_token=***``).
    """
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable DATABASE_URL>"
    # String surgery, not urlunsplit: that would turn sqlite:///x.db into sqlite:/x.db.
    head, sep, query = url.partition("?")
    if password is not None:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        head = head.replace(parts.netloc, f"{user}:{MASK}@{hostinfo}", 1)
    if sep:
        query, hash_sign, fragment = query.partition("#")
        query = _mask_query(query) + hash_sign + fragment
    return head + sep + query


def mask_secrets(text: str, url: DatabaseURL | str | None = None, secrets: Iterable[str] = ()) -> str:
    """``text`` with the URL shown masked and every secret of ``url`` (and ``secrets``) as ``***``.

    For anything that quotes a driver or tool: connection errors, ``pg_dump`` output, the log
    handler's complaint. Longer secrets are replaced first, so one that contains another
    is not left half-shown.
    """
    text = str(text)
    if url is not None:
        parsed = url if isinstance(url, DatabaseURL) else None
        if parsed is None:
            try:
                parsed = parse_database_url(str(url))
            except Exception:
                parsed = None
        raw = parsed.raw if parsed is not None else str(url)
        if raw:
            text = text.replace(raw, mask_url(raw))
        if parsed is not None:
            secrets = (*secrets, *parsed.secrets)
    for secret in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(secret, MASK)
    return text


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
        if path.endswith(("/", os.sep)):  # SQLite would create a file named after the folder
            raise ConfigError(
                f"DATABASE_URL names a folder, not a database file: {path}",
                hint=f"name the file, e.g. sqlite:///{path}pfdb.db",
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
    options = dict(parse_qsl(parts.query))
    _check_postgres_options(options, url)
    return DatabaseURL(
        backend="postgresql",
        database=database,
        user=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        host=parts.hostname,
        port=port,
        options=options,
        raw=url,
    )


def _check_postgres_options(options: Mapping[str, str], url: str) -> None:
    """Refuse a URL option libpq does not know, before anything connects.

    psycopg2's ``parse_dsn`` asks libpq itself (no connection is made), so the accepted
    names are exactly the driver's: ``sslmode``, ``connect_timeout``, ``application_name``, …
    """
    if not options:
        return
    try:
        from psycopg2.extensions import make_dsn
    except ImportError:  # pragma: no cover - psycopg2-binary is a dependency; connect will say
        return
    for key, value in options.items():
        try:
            make_dsn(**{key: value})
        except Exception:
            raise ConfigError(
                f"DATABASE_URL has an option PostgreSQL does not accept: {key!r} in {mask_url(url)}",
                hint="options are libpq connection parameters such as sslmode, connect_timeout, application_name",
            ) from None


# PostgreSQL's own ceiling on connections (MAX_BACKENDS, 2^18 - 1): a pool larger than this
# can never be filled, so a value above it is a typo, not a wish.
MAX_CONNECTIONS = 262143
# SQLite's busy_timeout is a C int of milliseconds: 2^31 - 1 ms is about 24.8 days.
MAX_SECONDS = 2147483


def _parse_int(name: str, raw: str, minimum: int = 0, maximum: int = MAX_CONNECTIONS) -> int:
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}", hint=f"e.g. {name}=10") from None
    if value < minimum:
        raise ConfigError(f"{name} must be at least {minimum}, got {value}", hint=f"e.g. {name}=10")
    if value > maximum:
        raise ConfigError(f"{name} must be at most {maximum}, got {raw!r}", hint=f"e.g. {name}=10")
    return value


def _parse_seconds(name: str, raw: Any) -> float:
    """Seconds from 0 to ``MAX_SECONDS``; nan and inf are refused (they turn into nonsense timeouts)."""
    try:
        value = float(str(raw).strip())
    except ValueError:
        raise ConfigError(f"{name} must be a number of seconds, got {raw!r}", hint=f"e.g. {name}=30") from None
    if value < 0:
        raise ConfigError(f"{name} must not be negative, got {raw!r}", hint=f"e.g. {name}=30")
    if not math.isfinite(value) or value > MAX_SECONDS:
        raise ConfigError(
            f"{name} must be a finite number of seconds from 0 to {MAX_SECONDS}, got {raw!r}", hint=f"e.g. {name}=30"
        )
    return value


def _parse_positive_seconds(name: str, raw: Any) -> float:
    value = _parse_seconds(name, raw)
    if value <= 0:
        raise ConfigError(f"{name} must be more than 0 seconds, got {raw!r}", hint=f"e.g. {name}=0.1")
    return value


CACHE_SCHEMES = ("redis", "rediss", "unix")


def parse_cache_url(name: str, raw: Any) -> str | None:
    """``CACHE_URL``: a Redis URL, or empty for no cache. Refused at once when the extra is missing."""
    text = str(raw or "").strip()
    if not text:
        return None
    scheme, sep, _ = text.partition("://")
    if not sep or scheme.lower() not in CACHE_SCHEMES:
        raise ConfigError(
            f"{name} must be a Redis URL, got {mask_url(text)!r}",
            hint="e.g. CACHE_URL=redis://127.0.0.1:6379/0 (or rediss:// for TLS), or leave it unset for no cache",
        )
    try:
        _ = urlsplit(text).port  # a bad port raises here, not at the first lookup
    except ValueError as exc:
        raise ConfigError(
            f"{name} is malformed: {mask_url(text)} ({exc})", hint="e.g. redis://127.0.0.1:6379/0"
        ) from None
    from importlib.util import find_spec  # finds the package without importing it

    if find_spec("redis") is None:
        raise ConfigError(f"{name} is set but the Redis client is not installed", hint='pip install "pfdb[redis]"')
    return text


def _parse_key_prefix(name: str, raw: Any) -> str:
    text = str(raw).strip()
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", text):
        raise ConfigError(f"{name} must be 1-64 letters, digits or _ . : -, got {raw!r}", hint=f"e.g. {name}=shop1")
    return text


POOLERS = ("none", "session", "transaction")


def _parse_pooler(name: str, raw: Any) -> str:
    """``none`` (or empty), ``session`` (a pooler that keeps sessions: nothing changes) or ``transaction``."""
    value = str(raw).strip().lower() or "none"
    if value not in POOLERS:
        raise ConfigError(
            f"{name} must be one of {', '.join(POOLERS)}, got {raw!r}",
            hint=f"{name}=transaction when DATABASE_URL points at PgBouncer with pool_mode = transaction",
        )
    return value


def _parse_direct_url(name: str, raw: Any) -> DatabaseURL | None:
    if raw is None or isinstance(raw, DatabaseURL):
        return raw
    text = str(raw).strip()
    if not text:
        return None
    try:
        url = parse_database_url(text)
    except ConfigError as exc:
        raise ConfigError(exc.message.replace("DATABASE_URL", name, 1), hint=exc.hint) from None
    if url.backend != "postgresql":
        raise ConfigError(
            f"{name} must be a PostgreSQL URL, got {url.masked}",
            hint=f"{name}=postgresql://user:pass@server:5432/db: the server itself, not the pooler",
        )
    return url


def parse_bool(name: str, raw: Any) -> bool:
    """A boolean setting, by the words every pfdb boolean takes (``pfdb.rules.truth``); blank is off.

    Settings share the feed's words on purpose: two word lists drift (``y`` was true in a
    feed cell and an error in ``PFDB_DEBUG``). Only blank differs by caller: a variable
    set to nothing is a variable left unset, so off.
    """
    if isinstance(raw, bool):
        return raw
    try:
        return bool(truth(str(raw)))
    except RuleError:
        raise ConfigError(
            f"{name} must be true or false, got {raw!r}", hint="use true/false, yes/no, on/off or 1/0"
        ) from None


def debug_enabled(environ: Mapping[str, str] | None = None) -> bool:
    """``PFDB_DEBUG`` (tracebacks for errors), parsed like every other boolean setting."""
    env = os.environ if environ is None else environ
    return parse_bool("PFDB_DEBUG", env.get("PFDB_DEBUG", ""))


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
    # The optional Redis cache (docs/cache.md): off unless CACHE_URL is set. The URL is kept
    # out of repr (it may carry a password); as_dict() shows it masked.
    cache_url: str | None = field(default=None, repr=False)
    cache_ttl: float = 300.0
    cache_timeout: float = 0.1
    cache_key_prefix: str = "pfdb"
    # PostgreSQL behind a pooler (docs/pgbouncer.md): "transaction" when DATABASE_URL points
    # at PgBouncer in transaction pooling mode, where a session lives for one transaction
    # only; ``direct_url`` reaches the server itself, for the tools that need a session.
    pooler: str = "none"
    direct_url: DatabaseURL | None = None
    # PostgreSQL read replicas (docs/replicas.md): reads go to them when they are caught up;
    # one more than replica_max_lag seconds behind is skipped until it catches up.
    replica_urls: tuple[DatabaseURL, ...] = ()
    replica_max_lag: float = 5.0
    # DATABASE_SERVERS: further PostgreSQL servers tenants may live on, by name.
    servers: Mapping[str, DatabaseURL] = field(default_factory=dict)
    # PostgreSQL: how long a migration's DDL waits for a table lock (lock_timeout) before it
    # gives up, so reads and writes queued behind it wait no longer; then pfdb retries. 0: no limit.
    migration_lock_timeout: float = 10.0

    @property
    def max_connections(self) -> int:
        return self.pool_size + self.max_overflow

    @property
    def transaction_pooled(self) -> bool:
        """True when each transaction may run on a different server session (PgBouncer)."""
        return self.pooler == "transaction"

    def session_url(self, what: str) -> DatabaseURL:
        """The URL for ``what`` (a tool that keeps state across transactions: pg_dump, psql).

        ``DATABASE_DIRECT_URL`` when set; ``DATABASE_URL`` unless it is transaction-pooled,
        where such a tool would read or leak another client's session state: then a
        ``ConfigError`` naming ``what`` and the setting that fixes it.
        """
        if self.direct_url is not None:
            return self.direct_url
        if self.transaction_pooled:
            raise ConfigError(
                f"{what} needs a direct connection to PostgreSQL: DATABASE_URL goes through a pooler "
                f"in transaction mode (DATABASE_POOLER=transaction), where its session settings "
                f"would be lost or leak to other clients",
                hint="set DATABASE_DIRECT_URL=postgresql://user:pass@server:5432/db (the server, not PgBouncer)",
            )
        return self.database_url

    def as_dict(self) -> dict[str, Any]:
        """Plain values for display, with the URL masked."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["database_url"] = self.database_url.masked
        out["cache_url"] = mask_url(self.cache_url) if self.cache_url else None
        out["direct_url"] = self.direct_url.masked if self.direct_url else None
        out["replica_urls"] = [u.masked for u in self.replica_urls]
        out["servers"] = {name: url.masked for name, url in self.servers.items()}
        return out


def _parse_replica_urls(name: str, raw: Any) -> tuple[DatabaseURL, ...]:
    """``DATABASE_REPLICA_URLS``: comma-separated PostgreSQL URLs (a list or tuple from Python)."""
    items = [str(i) for i in raw] if isinstance(raw, (list, tuple)) else str(raw).split(",")
    items = [i.strip() for i in items]
    if items == [""]:
        return ()
    urls: list[DatabaseURL] = []
    for number, item in enumerate(items, 1):
        if not item:
            raise ConfigError(
                f"{name} has an empty entry (number {number})",
                hint="separate PostgreSQL URLs with single commas: postgresql://u:p@r1/db,postgresql://u:p@r2/db",
            )
        try:
            url = parse_database_url(item)
        except ConfigError as exc:
            raise ConfigError(exc.message.replace("DATABASE_URL", f"{name} entry {number}"), hint=exc.hint) from None
        if url.backend != "postgresql":
            raise ConfigError(
                f"{name} entry {number} is not a PostgreSQL URL: {url.masked}",
                hint="read replicas are PostgreSQL streaming replicas: postgresql://user:pass@replica:5432/db",
            )
        if any(u.raw == url.raw for u in urls):
            raise ConfigError(f"{name} names {url.masked} twice", hint="list each replica once")
        urls.append(url)
    return tuple(urls)


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
    "CACHE_URL": ("cache_url", parse_cache_url),
    "CACHE_TTL": ("cache_ttl", _parse_positive_seconds),
    "CACHE_TIMEOUT": ("cache_timeout", _parse_positive_seconds),
    "CACHE_KEY_PREFIX": ("cache_key_prefix", _parse_key_prefix),
    "DATABASE_POOLER": ("pooler", _parse_pooler),
    "DATABASE_DIRECT_URL": ("direct_url", _parse_direct_url),
    "DATABASE_REPLICA_URLS": ("replica_urls", _parse_replica_urls),
    "DATABASE_REPLICA_MAX_LAG": ("replica_max_lag", _parse_seconds),
    "DATABASE_SERVERS": ("servers", lambda n, v: parse_servers(n, v)),
    "MIGRATION_LOCK_TIMEOUT": ("migration_lock_timeout", _parse_seconds),
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
    settings = Settings(**values)
    if settings.database_url.backend != "postgresql" and (settings.pooler != "none" or settings.direct_url):
        raise ConfigError(
            "DATABASE_POOLER and DATABASE_DIRECT_URL apply to PostgreSQL only, "
            f"and DATABASE_URL is {settings.database_url.masked}",
            hint="unset them for SQLite",
        )
    if settings.replica_urls and settings.database_url.backend != "postgresql":
        raise ConfigError(
            "DATABASE_REPLICA_URLS names PostgreSQL replicas, but DATABASE_URL is not PostgreSQL",
            hint="unset DATABASE_REPLICA_URLS for SQLite, or point DATABASE_URL at the primary",
        )
    for replica in settings.replica_urls:
        if replica.raw == settings.database_url.raw:
            raise ConfigError(
                f"DATABASE_REPLICA_URLS names the primary itself ({replica.masked})",
                hint="list the replicas' URLs only; DATABASE_URL is the primary",
            )
    return settings


SERVER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")
DEFAULT_SERVER = "default"  # the server of DATABASE_URL


def parse_servers(name: str, raw: Any) -> dict[str, DatabaseURL]:
    """``eu2=postgresql://…,eu3=postgresql://…`` -> {name: URL}; a mapping is taken as it is.

    Entries are split at a comma followed by ``NAME=``, so a URL's own query string may hold
    commas. Errors show the URL masked.
    """
    if isinstance(raw, Mapping):
        items = [(str(k), str(v)) for k, v in raw.items()]
    else:
        text = str(raw or "").strip()
        parts = re.split(r",\s*(?=[A-Za-z][A-Za-z0-9_]*=)", text) if text else []
        items = []
        for part in parts:
            key, eq, value = part.partition("=")
            if not eq:
                raise ConfigError(
                    f"{name}: {mask_url(part.strip())!r} has no NAME=", hint=f"write {name}=eu2=postgresql://host/db,…"
                )
            items.append((key.strip(), value.strip()))
    servers: dict[str, DatabaseURL] = {}
    for key, value in items:
        if not SERVER_NAME.match(key) or key == DEFAULT_SERVER:
            raise ConfigError(
                f"{name}: {key!r} is not a server name",
                hint="lower-case letters, digits and underscores, starting with a letter; 'default' is DATABASE_URL's",
            )
        url = parse_database_url(value)
        if url.backend != "postgresql":
            raise ConfigError(f"{name}: server {key} is not a PostgreSQL URL ({url.masked})", hint="use postgresql://…")
        servers[key] = url
    return servers


# -- variables read where they are used, not Settings fields: they name places on this machine,
# not the database, and tests and tools point them elsewhere between calls. Read only here.
def migrations_dir_setting() -> str | None:
    """``PFDB_MIGRATIONS_DIR``: a folder of migration files to use instead of pfdb's own (None: unset)."""
    return os.environ.get("PFDB_MIGRATIONS_DIR") or None


def tenant_setting() -> str | None:
    """``PFDB_TENANT``: the tenant every CLI command works on (None: the main database)."""
    return os.environ.get("PFDB_TENANT") or None


def cache_home() -> Path:
    """``$XDG_CACHE_HOME`` or ``~/.cache``: where pfdb keeps answers it can recompute."""
    return Path(os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"))
