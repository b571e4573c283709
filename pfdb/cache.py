"""The optional Redis cache: values read often and written rarely, forgotten after every commit that changes them.

Off unless ``CACHE_URL`` is set; then ``redis`` is imported on first use, never before. What
is cached and what invalidates it is in docs/cache.md; the rules that make it correct:

* **Versioned keys.** Every table has a generation counter in Redis, and the database as a
  whole has one; a value's key embeds both. Invalidating is one ``INCR`` after the commit
  (``after_commit``, handed every committed table by ``pfdb._writes``), in any process on
  any host: the old keys are never read again and expire on ``CACHE_TTL``.
* **The generation is read before the database.** ``lookup`` reads the generations and the
  value in one round trip (a Lua script), and on a miss stores what it loaded under the
  generations it read *before* loading. A writer that commits and bumps between the two
  leaves the stored value under a generation nobody reads any more, never an old value
  under a new one.
* **Nothing is stored from inside a transaction**, and nothing is served there: its reads
  may come from a snapshot older than the generation (``db_read_scope``), or hold its own
  uncommitted writes that a rollback would undo. Those reads go to the database.
* **Redis down or slow is a miss.** Every call is bounded by ``CACHE_TIMEOUT`` (socket
  timeouts, no retries); a failure is logged once, Redis is left alone for a back-off
  (0.5 s doubling to 30 s), reads go to the database, and the invalidations that could not
  be sent are sent first when it answers again. ``status()`` says ``degraded``.
* **Keys name the database** (PostgreSQL's system identifier and database name; SQLite's
  host and file) **and a scope** (``set_scope``: the tenant), under ``CACHE_KEY_PREFIX``, so
  two databases or tenants sharing one Redis never see each other's values.

Writes that do not pass through pfdb (another program's SQL) cannot be seen: ``clear()``
(``pfdb cache-clear``) forgets everything of the bound database.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

from . import _writes
from ._peewee import enable_psycopg2
from ._peewee import peewee as pw
from .config import DatabaseURL, Settings, load_settings, mask_secrets, mask_url
from .database import borrow_connection, db, get_settings
from .errors import CacheError, PfdbError
from .replicas import primary
from .text import first_line

log = logging.getLogger("pfdb.cache")

M = TypeVar("M", bound=pw.Model)

_BACKOFF_FIRST = 0.5
_BACKOFF_MAX = 30.0
_KEY_MAX = 200  # longer lookup keys (a long path) are hashed
# Values live under "<head>v1:<table>:<generations>:<kind>:<key>"; a release that changes how a
# value is encoded changes the version, so it never reads another release's values.
_VALUES = "v1:"

# KEYS: the database's generation, the table's. ARGV: value key head and tail, the seed for a
# generation Redis does not hold (a new database, an evicted key, a restarted Redis): the
# time in microseconds, larger than any generation counted up before, so an old key cannot
# come back to life. Returns the value's key (to store a miss under) and the value.
_GET = """
local function gen(k)
  local g = redis.call('GET', k)
  if not g then
    redis.call('SET', k, ARGV[3], 'NX')
    g = redis.call('GET', k)
  end
  return g
end
local key = ARGV[1] .. gen(KEYS[1]) .. '.' .. gen(KEYS[2]) .. ARGV[2]
return {key, redis.call('GET', key)}
"""
_BUMP = """
for _, k in ipairs(KEYS) do
  if redis.call('EXISTS', k) == 1 then redis.call('INCR', k) else redis.call('SET', k, ARGV[1]) end
end
return #KEYS
"""


def _seed() -> str:
    return str(time.time_ns() // 1000)


class _Client:
    """One CACHE_URL's connection pool, and whether Redis answers (with the back-off when not)."""

    def __init__(self, settings: Settings):
        import redis  # the optional extra: imported only when CACHE_URL is set and used
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        assert settings.cache_url is not None
        self.url = settings.cache_url
        self.masked = mask_url(self.url)
        self.timeout = settings.cache_timeout
        self.redis = redis.Redis.from_url(
            self.url,
            socket_timeout=self.timeout,
            socket_connect_timeout=self.timeout,
            retry=Retry(NoBackoff(), 0),  # the database is the retry: a miss, not a wait
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self.get = self.redis.register_script(_GET)
        self.bump = self.redis.register_script(_BUMP)
        self.lock = threading.Lock()
        self.down_until = 0.0  # monotonic time before which Redis is not asked; 0: up
        self.backoff = 0.0
        self.error: str | None = None
        self.logged = False
        # Invalidations that did not reach Redis: namespace key prefix -> tables (ALL for all).
        self.unsent: dict[str, set[str]] = {}

    def secret_free(self, exc: BaseException) -> str:
        text = first_line(exc)
        from urllib.parse import urlsplit

        try:
            password = urlsplit(self.url).password
        except ValueError:
            password = None
        return mask_secrets(text, secrets=[self.url, password or ""])

    def usable(self) -> bool:
        """True when Redis may be asked now: up, or its back-off is over and it answers again."""
        if not self.down_until:
            return True
        now = time.monotonic()
        with self.lock:
            if now < self.down_until:
                return False
            self.down_until = now + self.backoff  # one caller probes; the others keep missing
        try:
            self.redis.ping()
            self.send_unsent()
        except Exception as exc:
            self.failed(exc)
            return False
        self.recovered()
        return True

    def failed(self, exc: BaseException) -> None:
        with self.lock:
            self.backoff = min(max(self.backoff * 2, _BACKOFF_FIRST), _BACKOFF_MAX)
            self.down_until = time.monotonic() + self.backoff
            self.error = self.secret_free(exc)
            first = not self.logged
            self.logged = True
        if first:  # once per outage, not once per lookup
            log.warning(
                "pfdb: the cache at %s does not answer (%s); reading from the database until it does",
                self.masked,
                self.error,
            )

    def recovered(self) -> None:
        with self.lock:
            was_down = self.logged
            self.down_until, self.backoff, self.error, self.logged = 0.0, 0.0, None, False
        if was_down:
            log.warning("pfdb: the cache at %s answers again", self.masked)

    def send_unsent(self) -> None:
        while self.unsent:
            with self.lock:
                if not self.unsent:
                    return
                head, tables = self.unsent.popitem()
            try:
                self.bump(keys=_generation_keys(head, tables), args=[_seed()])
            except Exception:
                with self.lock:
                    self.unsent.setdefault(head, set()).update(tables)
                raise

    def remember_unsent(self, head: str, tables: frozenset[str] | set[str]) -> None:
        with self.lock:
            self.unsent.setdefault(head, set()).update(tables)


_clients: dict[tuple[str, float], _Client] = {}
_clients_lock = threading.Lock()
_scope: Callable[[], str | None] | None = None


def set_scope(function: Callable[[], str | None] | None) -> None:
    """Give the cache the current scope (a tenant's name) that keys must carry; ``None`` removes it.

    ``function()`` is called for every lookup and every invalidation, in the thread doing it,
    and must return the same value for a write and its commit. Values of one scope are never
    served in another.
    """
    global _scope
    _scope = function


def _client_for(settings: Settings) -> _Client | None:
    if settings.cache_url is None or settings.database_url.is_memory:
        return None  # an in-memory database is private to its process: nothing to share
    key = (settings.cache_url, settings.cache_timeout)
    client = _clients.get(key)
    if client is None:
        with _clients_lock:
            client = _clients.get(key)
            if client is None:
                client = _clients[key] = _Client(settings)
    return client


def _bound() -> tuple[Settings, pw.Database] | None:
    database = db.obj
    if database is None:
        return None
    try:
        return get_settings(), database
    except PfdbError:
        return None


def enabled() -> bool:
    """True when the bound database has a cache (``CACHE_URL``), whether or not Redis answers."""
    bound = _bound()
    return bound is not None and bound[0].cache_url is not None and not bound[0].database_url.is_memory


# -- which database, which scope ---------------------------------------------------------------
def _sqlite_identity(url: DatabaseURL) -> str:
    import socket  # here: a process without a cache does not pay for its import

    return f"sqlite:{socket.gethostname()}:{Path(url.path or '').expanduser().resolve()}"


_PG_IDENTITY = "SELECT system_identifier::text, current_database() FROM pg_control_system()"


def _identity(settings: Settings, database: pw.Database) -> str:
    """What names this database for every process and host that uses it: not the URL's spelling
    (``localhost`` and ``127.0.0.1`` are one server), but the server's own identifier."""
    known = getattr(database, "pfdb_cache_identity", None)
    if known is None:  # once per bound database (PostgreSQL: one query)
        url = settings.database_url
        if url.backend == "sqlite":
            known = _sqlite_identity(url)
        else:
            with borrow_connection(database):
                system, name = database.execute_sql(_PG_IDENTITY).fetchone()
            known = f"postgresql:{system}:{name}"
        database.pfdb_cache_identity = known
    return known


def _identity_of_url(url: DatabaseURL) -> str:
    """``_identity`` for a database that is not the bound one (the target of a copy)."""
    if url.backend == "sqlite":
        return _sqlite_identity(url)
    enable_psycopg2()
    import psycopg2

    conn = psycopg2.connect(dbname=url.database, **{"connect_timeout": 5, **url.driver_params()})
    try:
        with conn.cursor() as cursor:
            cursor.execute(_PG_IDENTITY)
            system, name = cursor.fetchone()
    finally:
        conn.close()
    return f"postgresql:{system}:{name}"


def _head(settings: Settings, identity: str) -> str:
    """The key prefix of one database in one scope: ``pfdb:1f2e…:``."""
    scope = _scope() if _scope is not None else None
    key = (settings.cache_key_prefix, identity, scope)
    head = _heads.get(key)
    if head is None:
        import hashlib

        digest = hashlib.sha256(f"{identity}\n{scope or ''}".encode()).hexdigest()[:20]
        head = _heads[key] = f"{settings.cache_key_prefix}:{digest}:"
    return head


_heads: dict[tuple[str, str, str | None], str] = {}


def _generation_keys(head: str, tables: frozenset[str] | set[str]) -> list[str]:
    if _writes.ALL in tables:
        return [f"{head}g"]  # every key embeds the database's generation
    return [f"{head}g:{table}" for table in sorted(tables)]


def namespace() -> str | None:
    """The key prefix of the bound database in the current scope (None without a cache)."""
    bound = _bound()
    if bound is None or _client_for(bound[0]) is None:
        return None
    return _head(bound[0], _identity(*bound))


# -- reading -----------------------------------------------------------------------------------
def _in_transaction(database: pw.Database) -> bool:
    if database.in_transaction():
        return True
    driver = getattr(database, "_driver_in_transaction", None)
    return bool(driver and driver())


def lookup(
    table: str,
    kind: str,
    key: str,
    load: Callable[[], Any],
    *,
    encode: Callable[[Any], Any] | None = None,
    decode: Callable[[Any], Any] | None = None,
) -> Any:
    """``load()``, served from Redis when it holds it for ``table``'s current generation.

    ``kind`` and ``key`` name the lookup (``"sku"``, ``"ABC-1"``). ``encode`` turns the loaded
    value into JSON-able data and ``decode`` back (default: the value is JSON-able as it is).
    Without a cache, inside a transaction, or with Redis unreachable it is ``load()``, exactly.
    """
    bound = _bound()
    if bound is None:
        return load()
    settings, database = bound
    client = _client_for(settings)
    if client is None or _in_transaction(database) or not client.usable():
        return load()
    try:
        head = _head(settings, _identity(settings, database))
    except Exception:  # the database itself failed (PostgreSQL's identity is one query): not Redis
        return load()
    tail = key if len(key) <= _KEY_MAX else _digest(key)
    try:
        value_key, raw = client.get(
            keys=[f"{head}g", f"{head}g:{table}"], args=[f"{head}{_VALUES}{table}:", f":{kind}:{tail}", _seed()]
        )
    except Exception as exc:
        client.failed(exc)
        return load()
    if raw is not None:
        try:
            data = json.loads(raw)
        except ValueError:
            data = None
        else:
            return decode(data) if decode is not None else data
    # A fill is stored under the generation read above: from the primary, never from a replica
    # that may not have replayed the commit behind that generation (docs/replicas.md).
    with primary():
        value = load()
    if _writes.pending_tables():  # written and not committed (a bare BEGIN): never store that
        return value
    try:
        payload = json.dumps(encode(value) if encode is not None else value, separators=(",", ":"))
    except (TypeError, ValueError):
        return value  # a value JSON cannot hold is simply not cached
    try:
        client.redis.set(value_key, payload, ex=max(1, round(settings.cache_ttl)))
    except Exception as exc:
        client.failed(exc)
    return value


def _digest(key: str) -> str:
    import hashlib

    return "#" + hashlib.sha256(key.encode()).hexdigest()


def _row_data(instance: pw.Model | None) -> dict[str, Any] | None:
    if instance is None:
        return None
    data: dict[str, Any] = {}
    for name, value in instance.__data__.items():
        if isinstance(value, Decimal):
            value = str(value)
        elif isinstance(value, (datetime, date)):
            value = value.isoformat()
        data[name] = value
    return data


def _row(model: type[M], data: dict[str, Any] | None) -> M | None:
    if data is None:
        return None
    fields = model._meta.fields
    data = {name: value for name, value in data.items() if name in fields}  # a field since removed
    for name, value in data.items():
        field = fields[name]
        if value is None:
            continue
        if isinstance(field, pw.DecimalField):
            data[name] = Decimal(value)
        elif isinstance(field, pw.DateTimeField):
            data[name] = datetime.fromisoformat(value)
        elif isinstance(field, pw.DateField):
            data[name] = date.fromisoformat(value)
    instance = model(__no_default__=1)
    instance.__data__.update(data)
    instance._dirty.clear()
    return instance


def lookup_row(model: type[M], kind: str, key: str, load: Callable[[], M | None]) -> M | None:
    """One row of ``model`` (or None) through the cache; the instance is a fresh copy each time."""
    return lookup(model._meta.table_name, kind, key, load, encode=_row_data, decode=lambda data: _row(model, data))


# -- invalidating --------------------------------------------------------------------------------
def _bump(client: _Client, head: str, tables: frozenset[str] | set[str]) -> None:
    if not client.usable():
        client.remember_unsent(head, tables)
        return
    try:
        client.bump(keys=_generation_keys(head, tables), args=[_seed()])
    except Exception as exc:
        client.remember_unsent(head, tables)
        client.failed(exc)


def after_commit(tables: frozenset[str]) -> None:
    """Invalidate ``tables`` of the bound database (``pfdb._writes`` calls it after each commit).

    Never raises: an invalidation Redis could not take is kept and sent when it answers again.
    """
    bound = _bound()
    if bound is None:
        return
    settings, database = bound
    client = _client_for(settings)
    if client is None:
        return
    try:
        head = _head(settings, _identity(settings, database))
    except Exception as exc:  # the database went away right after the commit: forget it all later
        log.warning("pfdb: cannot name the database for the cache (%s)", mask_secrets(str(exc), settings.database_url))
        return
    _bump(client, head, tables)


def invalidate(*tables: str) -> None:
    """Forget the cached values of ``tables`` (all of them without arguments) of the bound database.

    pfdb calls this itself after every commit; call it after writing through another path
    (raw SQL on a connection of your own). Example: ``pfdb.cache.invalidate("products")``
    """
    after_commit(frozenset(tables or (_writes.ALL,)))


def invalidate_database(url: str) -> None:
    """Forget everything cached for the database of ``url`` (a copy's target, a restored database).

    Uses ``CACHE_URL`` from the environment (``.env`` included); does nothing without one.
    Raises nothing: a failure is logged.
    """
    try:
        # The application's pooler and replica settings describe DATABASE_URL, not this URL.
        settings = load_settings(url, pooler="none", direct_url=None, replica_urls=())
        client = _client_for(settings)
        if client is None:
            return
        head = _head(settings, _identity_of_url(settings.database_url))
    except Exception as exc:
        log.warning("pfdb: could not invalidate the cache of %s (%s)", mask_url(url), mask_secrets(str(exc), url))
        return
    _bump(client, head, frozenset((_writes.ALL,)))


@dataclass(frozen=True)
class ClearResult:
    """What ``clear()`` removed."""

    cache: str | None  # the masked CACHE_URL; None when there is no cache
    namespace: str | None
    keys_deleted: int

    def as_dict(self) -> dict[str, Any]:
        return {"cache": self.cache, "namespace": self.namespace, "keys_deleted": self.keys_deleted}


def clear() -> ClearResult:
    """Forget every cached value of the bound database in the current scope (``pfdb cache-clear``).

    For writes pfdb cannot see (another program's SQL, a database restored by hand). Without
    ``CACHE_URL`` there is nothing to clear (``cache`` is None). Raises ``CacheError`` when
    Redis does not answer. Example: ``pfdb.cache.clear().keys_deleted``
    """
    bound = _bound()
    settings = bound[0] if bound is not None else get_settings()  # not bound: the usual error
    client = _client_for(settings)
    if client is None or bound is None:
        return ClearResult(cache=None, namespace=None, keys_deleted=0)
    head = _head(settings, _identity(*bound))
    deleted = 0
    try:
        client.send_unsent()
        client.bump(keys=_generation_keys(head, {_writes.ALL}), args=[_seed()])
        batch: list[Any] = []
        for key in client.redis.scan_iter(match=f"{head}v*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += client.redis.unlink(*batch)
                batch.clear()
        if batch:
            deleted += client.redis.unlink(*batch)
    except Exception as exc:
        client.failed(exc)
        raise CacheError(
            f"the cache at {client.masked} does not answer: {client.secret_free(exc)}",
            hint="check CACHE_URL and that Redis is running",
        ) from None
    client.recovered()
    return ClearResult(cache=client.masked, namespace=head.rstrip(":"), keys_deleted=deleted)


# -- health ------------------------------------------------------------------------------------
def status() -> dict[str, Any] | None:
    """The cache as ``pfdb health`` and ``pfdb info`` show it; None without ``CACHE_URL``.

    ``status`` is ``ok`` or ``degraded`` (Redis does not answer: pfdb reads the database,
    and the database's health is unaffected); ``url`` is masked.
    """
    bound = _bound()
    if bound is None:
        return None
    settings = bound[0]
    client = _client_for(settings)
    if client is None:
        return None
    report: dict[str, Any] = {"status": "ok", "url": client.masked, "latency_ms": None, "error": None}
    start = time.perf_counter()
    try:
        client.redis.ping()
        client.send_unsent()
    except Exception as exc:
        client.failed(exc)
        report.update(status="degraded", error=f"{client.error}; reads go to the database")
        return report
    client.recovered()
    report["latency_ms"] = round((time.perf_counter() - start) * 1000, 2)
    return report
