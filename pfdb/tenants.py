"""Tenants: many shops in one deployment, each with its own copy of every pfdb table.

PostgreSQL: one schema per tenant (``tenant_<name>``), on the server of ``DATABASE_URL`` or
on one named in ``DATABASE_SERVERS``; a tenant scope puts only that schema on the
``search_path`` of the connections it uses (and, with roles, ``SET ROLE`` to the tenant's
own role), and the pool resets both when a connection comes back. SQLite: one database
file per tenant in ``<name>.tenants/`` beside the main file. The registry (``tenants``
table, migration 004) lives in the main database and says where each tenant is.

``tenant(name)`` is the scope (``with pfdb.tenant("acme"):``); ``create``, ``drop``,
``move``, ``list_tenants``, ``migrate_all`` and ``status_all`` manage them. Routing is the
database layer's hook (``database.bound_tenant``): this module decides where a tenant is.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import cache
from .config import DEFAULT_SERVER, DatabaseURL, Settings, parse_database_url
from .database import (
    TenantBinding,
    borrow_connection,
    bound_tenant,
    close_routed,
    create_sqlite_file,
    current_tenant,
    get_settings,
    main_database,
    routed_database,
)
from .errors import ConfigError, DuplicateError, NotFoundError, PfdbError, TenantError, UsageError
from .text import first_line


def _cache_scope() -> str | None:
    """The Redis cache's key scope: tenants on one server share its identity, never its values."""
    binding = current_tenant()
    return None if binding is None else f"tenant:{binding.name}"


cache.set_scope(_cache_scope)

NAME_RULE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_NAME = 40
# Names that would read as something else: PostgreSQL's own schemas, the main database.
RESERVED = frozenset({"public", "information_schema", "default", "main", "postgres", "template0", "template1"})
SCHEMA_PREFIX = "tenant_"
ROLE_PREFIX = "pfdb_tenant_"


def validate_name(name: Any) -> str:
    """The tenant name, or ``UsageError`` saying what is wrong with it (nothing reaches SQL first)."""
    text = "" if name is None else str(name)
    if text.startswith("pg_") or text in RESERVED:
        raise UsageError(f"tenant name {text!r} is reserved", hint="choose another name, e.g. acme")
    if not NAME_RULE.match(text):
        raise UsageError(
            f"tenant name {text!r} is not valid",
            hint=f"use 1-{MAX_NAME} lower-case letters, digits and underscores, starting with a letter (e.g. acme_2)",
        )
    return text


def schema_name(name: str) -> str:
    return SCHEMA_PREFIX + validate_name(name)


def role_name(name: str, database: str) -> str:
    """The tenant's role: roles belong to the whole server, so the database's name is in it (as a hash)."""
    return f"{ROLE_PREFIX}{validate_name(name)}_{zlib.crc32(database.encode()):08x}"


@dataclass(frozen=True)
class TenantInfo:
    """One registry row: where a tenant lives and how far its schema is migrated."""

    name: str
    server: str
    state: str
    schema_version: str | None
    created_at: dt.datetime | None
    location: str  # masked URL and schema, or the SQLite file

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "state": self.state,
            "schema_version": self.schema_version,
            "created_at": self.created_at.isoformat() if self.created_at else None,
            "location": self.location,
        }


@dataclass(frozen=True)
class DropResult:
    name: str
    backup: Path | None

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "backup": str(self.backup) if self.backup else None}


@dataclass(frozen=True)
class TenantOutcome:
    """What one tenant's migration (or status) came to; ``error`` None when it went well."""

    name: str
    server: str
    applied: tuple[str, ...] = ()
    pending: tuple[str, ...] = ()
    current: str | None = None
    error: str | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "server": self.server,
            "ok": self.ok,
            "applied": list(self.applied),
            "pending": list(self.pending),
            "current": self.current,
            "error": self.error,
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class AllTenantsResult:
    """``migrate --all-tenants`` / ``status --all-tenants``: the main database first, then each tenant."""

    outcomes: tuple[TenantOutcome, ...]

    @property
    def ok(self) -> bool:
        return all(o.ok for o in self.outcomes)

    @property
    def failed(self) -> tuple[TenantOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.ok)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "tenants": [o.as_dict() for o in self.outcomes]}


# -- where a tenant lives ------------------------------------------------------------------------
@contextmanager
def _main() -> Iterator[Settings]:
    """The main database, whatever tenant scope the caller is in (the registry lives there)."""
    # Borrowed and given back: a registry read must not keep a pooled connection checked out.
    with bound_tenant(None), borrow_connection():
        yield get_settings()


def _registry():
    from .models import Tenant

    return Tenant


def tenants_folder(url: DatabaseURL) -> Path:
    """SQLite: the folder of tenant files beside the main database (``shop.db`` -> ``shop.tenants/``)."""
    if url.is_memory:
        raise UsageError("an in-memory database cannot hold tenants", hint="use a file: DATABASE_URL=sqlite:///pfdb.db")
    path = Path(url.path).expanduser().resolve()
    return path.parent / f"{path.stem}.tenants"


def _server_url(settings: Settings, server: str) -> DatabaseURL:
    if server == DEFAULT_SERVER:
        return settings.database_url
    url = settings.servers.get(server)
    if url is None:
        known = ", ".join([DEFAULT_SERVER, *settings.servers]) or DEFAULT_SERVER
        raise UsageError(f"there is no server named {server!r}", hint=f"servers (DATABASE_SERVERS): {known}")
    return url


def binding_for(name: str, server: str = DEFAULT_SERVER, *, settings: Settings | None = None) -> TenantBinding:
    """Where ``name`` lives (a registry read is the caller's): its database, settings, schema and role."""
    name = validate_name(name)
    if settings is None:
        with _main() as settings:
            pass
    url = settings.database_url
    main = main_database()
    if url.backend == "sqlite":
        path = tenants_folder(url) / f"{name}.db"
        tenant_settings = dataclasses.replace(settings, database_url=parse_database_url(f"sqlite:///{path}"))
        database = routed_database(("sqlite", str(path)), tenant_settings, create=False)
        database.pfdb_mode = "ro" if getattr(main, "pfdb_mode", "rw") == "ro" else "rw"
        return TenantBinding(name=name, database=database, settings=tenant_settings)
    server_url = _server_url(settings, server)
    if server == DEFAULT_SERVER:
        if settings.transaction_pooled:
            # A tenant's search_path is session state: PgBouncer in transaction mode would hand
            # it to another client's transaction, or lose it between two of this scope's.
            raise ConfigError(
                "tenant scopes need session state (search_path), which a pooler in transaction mode "
                "(DATABASE_POOLER=transaction) does not keep",
                hint="point DATABASE_URL at the server or at PgBouncer in session mode for tenants",
            )
        database, tenant_settings = main, settings
    else:
        # DATABASE_POOLER, DATABASE_DIRECT_URL and the replicas describe DATABASE_URL's server, not this one.
        tenant_settings = dataclasses.replace(
            settings, database_url=server_url, pooler="none", direct_url=None, replica_urls=()
        )
        database = routed_database(("server", server, server_url.raw), tenant_settings)
    role = role_name(name, server_url.database or "") if _roles_enabled(database, name) else None
    return TenantBinding(name=name, database=database, settings=tenant_settings, schema=schema_name(name), role=role)


# (server URL, tenant) -> whether the tenant has a role: asked once per process, set by create/drop.
_ROLE_CACHE: dict[tuple[str, str], bool] = {}


def _role_key(database: Any, name: str) -> tuple[str, str]:
    return (database.pfdb_url.raw, name)


def _roles_enabled(database: Any, name: str) -> bool:
    """Whether the tenant's schema is owned by a role of its own (``create(..., role=True)``)."""
    key = _role_key(database, name)
    if key not in _ROLE_CACHE:
        with borrow_connection(database):
            row = database.execute_sql(
                "SELECT 1 FROM pg_namespace n JOIN pg_roles r ON r.oid = n.nspowner "
                "WHERE n.nspname = %s AND r.rolname = %s",
                (schema_name(name), role_name(name, database.pfdb_url.database or "")),
            ).fetchone()
        _ROLE_CACHE[key] = row is not None
    return _ROLE_CACHE[key]


def _record(name: str):
    Tenant = _registry()
    with _main():
        row = Tenant.get_or_none(Tenant.name == name)
    if row is None:
        raise NotFoundError(
            f"there is no tenant named {name!r}",
            hint=f"pfdb tenant list shows them; create it with pfdb tenant create {name}",
        )
    return row


@contextmanager
def tenant(name: str) -> Iterator[TenantBinding]:
    """Run the block against tenant ``name``: models, scopes, imports, exports, health, migrations.

    Example: ``with pfdb.tenant("acme"): Product.select().count()``
    """
    name = validate_name(name)
    active = current_tenant()
    if active is not None and active.name == name:
        yield active
        return
    row = _record(name)
    if row.state not in ("active", "moving"):
        raise TenantError(
            f"tenant {name!r} is {row.state}", hint="finish or undo that operation first (pfdb tenant list)"
        )
    with bound_tenant(binding_for(name, row.server)) as binding:
        yield binding


def _location(binding: TenantBinding) -> str:
    url = binding.settings.database_url
    if url.backend == "sqlite":
        return str(Path(url.path))
    return f"{url.masked} schema {binding.schema}"


def _info(row: Any, settings: Settings) -> TenantInfo:
    try:
        location = _location(binding_for(row.name, row.server, settings=settings))
    except PfdbError as exc:  # a server no longer configured: say so, list the rest
        location = f"unavailable ({exc.message})"
    return TenantInfo(
        name=row.name,
        server=row.server,
        state=row.state,
        schema_version=row.schema_version,
        created_at=row.created_at,
        location=location,
    )


def list_tenants() -> tuple[TenantInfo, ...]:
    """Every registered tenant, by name.

    Example: ``[t.name for t in pfdb.tenants.list_tenants()]``
    """
    Tenant = _registry()
    with _main() as settings:
        rows = list(Tenant.select().order_by(Tenant.name))
    return tuple(_info(row, settings) for row in rows)


def get(name: str) -> TenantInfo:
    """One tenant's registry entry (``NotFoundError`` when there is none)."""
    row = _record(validate_name(name))
    with _main() as settings:
        return _info(row, settings)


# -- create ---------------------------------------------------------------------------------------
def _make_storage(binding: TenantBinding, *, role: bool) -> None:
    """Create the tenant's empty schema (and role) or file; refuses one that already exists."""
    url = binding.settings.database_url
    if url.backend == "sqlite":
        path = Path(url.path)
        from .maintenance import make_private_dirs

        make_private_dirs(path.parent)
        if not create_sqlite_file(path):
            raise TenantError(
                f"the tenant file {path} already exists", hint="move it away or drop the tenant it belonged to"
            )
        return
    from psycopg2 import sql

    database = binding.database
    with borrow_connection(database):
        exists = database.execute_sql("SELECT 1 FROM pg_namespace WHERE nspname = %s", (binding.schema,)).fetchone()
        if exists:
            raise TenantError(
                f"the schema {binding.schema} already exists on {url.masked}",
                hint="drop it there, or choose another tenant name",
            )
        conn = database.connection()
        # One transaction: a role that cannot be made must not leave the schema behind.
        with database.atomic(), conn.cursor() as cursor:
            cursor.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(binding.schema)))
            if role:
                _create_role(cursor, binding)


def _create_role(cursor: Any, binding: TenantBinding) -> None:
    """A role that owns only the tenant's schema: used by the scope (``SET ROLE``), it cannot
    read another tenant's tables even through raw SQL."""
    from psycopg2 import sql

    role = sql.Identifier(role_name(binding.name, binding.settings.database_url.database or ""))
    schema = sql.Identifier(binding.schema)
    cursor.execute(sql.SQL("CREATE ROLE {} NOLOGIN").format(role))
    cursor.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(role))
    cursor.execute(sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(schema, role))


def _remove_storage(binding: TenantBinding) -> None:
    """Drop the tenant's schema (and role) or delete its file; what is not there is fine."""
    url = binding.settings.database_url
    if url.backend == "sqlite":
        close_routed(("sqlite", str(Path(url.path))))
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(f"{url.path}{suffix}").unlink(missing_ok=True)
        return
    from psycopg2 import sql

    database = binding.database
    with borrow_connection(database):
        conn = database.connection()
        with conn.cursor() as cursor:
            cursor.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(binding.schema)))
            role = role_name(binding.name, url.database or "")
            cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
            if cursor.fetchone():
                cursor.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
                cursor.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    _ROLE_CACHE.pop(_role_key(database, binding.name), None)


def _migrate_in(binding: TenantBinding) -> tuple[tuple[str, ...], str | None]:
    from .migrations import migrate, status

    with bound_tenant(binding):
        applied = migrate(backup=False).applied
        return applied, status().current


def _set_row(name: str, **values: Any) -> None:
    Tenant = _registry()
    with _main():
        values["updated_at"] = dt.datetime.now(dt.timezone.utc)
        Tenant.update(**values).where(Tenant.name == name).execute()


def create(name: str, *, server: str | None = None, role: bool = False) -> TenantInfo:
    """Create tenant ``name`` (on ``server``, default the server of ``DATABASE_URL``), migrated.

    ``role`` (PostgreSQL): give the tenant a role of its own that owns only its schema; its
    scopes ``SET ROLE`` to it, so raw SQL there cannot read another tenant's tables.
    A failure removes what was made: the registry row, the schema or the file.

    Example: ``pfdb.tenants.create("acme", server="eu2")``
    """
    name = validate_name(name)
    Tenant = _registry()
    with _main() as settings:
        backend = settings.database_url.backend
        if backend == "sqlite" and server not in (None, "", DEFAULT_SERVER):
            raise UsageError("SQLite tenants live in files beside the main database", hint="drop --server")
        if backend == "sqlite" and role:
            raise UsageError("tenant roles are PostgreSQL's", hint="drop --role")
        server = server or DEFAULT_SERVER
        binding = binding_for(name, server, settings=settings)
        try:
            Tenant.create(name=name, server=server, state="creating")
        except DuplicateError:
            raise TenantError(f"tenant {name!r} already exists", hint="pfdb tenant list shows it") from None
    made = False
    try:
        _make_storage(binding, role=role)
        made = True
        if role:
            _ROLE_CACHE[_role_key(binding.database, name)] = True
            binding = dataclasses.replace(binding, role=role_name(name, binding.settings.database_url.database or ""))
        _, current = _migrate_in(binding)
        _set_row(name, state="active", schema_version=current)
    except BaseException:
        if made:
            try:
                _remove_storage(binding)
            except Exception:  # keep the first error; the row below says the tenant is not there
                pass
        with _main():
            Tenant.delete().where(Tenant.name == name).execute()
        raise
    return get(name)


# -- drop -------------------------------------------------------------------------------------------
def drop(name: str, *, backup: bool = True, backup_path: str | None = None) -> DropResult:
    """Drop tenant ``name``: a backup first (``result.backup``), then its schema or file, then its row.

    Example: ``pfdb.tenants.drop("acme").backup``
    """
    name = validate_name(name)
    row = _record(name)
    binding = binding_for(name, row.server)
    saved = None
    if backup:
        from .maintenance import backup as take_backup

        with bound_tenant(binding):
            saved = take_backup(backup_path).path
    _set_row(name, state="dropping")
    _remove_storage(binding)
    Tenant = _registry()
    with _main():
        Tenant.delete().where(Tenant.name == name).execute()
    return DropResult(name=name, backup=saved)


# -- every tenant at once ---------------------------------------------------------------------------
def _check_parallel(parallel: int) -> None:
    """Before any database is touched: ``--parallel 0`` must not migrate the main database first."""
    if parallel < 1:
        raise UsageError(f"--parallel {parallel} is not a number of workers", hint="use 1 or more")


def _each(work: Any, parallel: int) -> tuple[TenantOutcome, ...]:
    rows = list_tenants()
    if parallel == 1 or len(rows) < 2:
        return tuple(work(row) for row in rows)
    from concurrent.futures import ThreadPoolExecutor  # only --parallel needs it: 7 ms kept off every command's start

    with ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="pfdb-tenant") as pool:
        return tuple(pool.map(work, rows))


def migrate_all(
    *, parallel: int = 1, lock_timeout: float | None = None, backup: bool | None = None
) -> AllTenantsResult:
    """Migrate the main database, then every tenant (each with its own history and lock).

    A tenant that fails is reported and the rest go on; ``result.ok`` is False if any failed.
    ``parallel`` tenants are migrated at a time. Each tenant's registry row gets its version.

    Example: ``pfdb.tenants.migrate_all(parallel=4).ok``
    """
    from .migrations import DEFAULT_LOCK_TIMEOUT, migrate, status

    _check_parallel(parallel)
    options: dict[str, Any] = {"lock_timeout": DEFAULT_LOCK_TIMEOUT if lock_timeout is None else lock_timeout}
    if backup is not None:
        options["backup"] = backup

    def run(label: str, server: str, scope: Any) -> TenantOutcome:
        start = time.monotonic()
        try:
            with scope():
                applied = migrate(**options).applied
                current = status().current
        except Exception as exc:
            return TenantOutcome(label, server, error=first_line(exc), seconds=time.monotonic() - start)
        return TenantOutcome(label, server, applied=applied, current=current, seconds=time.monotonic() - start)

    main = run("(main)", DEFAULT_SERVER, _main)
    if not main.ok:  # the registry may be what failed: no tenant is touched
        return AllTenantsResult(outcomes=(main,))

    def one(info: TenantInfo) -> TenantOutcome:
        outcome = run(info.name, info.server, lambda: tenant(info.name))
        if outcome.ok and outcome.current != info.schema_version:
            try:
                _set_row(info.name, schema_version=outcome.current)
            except Exception as exc:
                return dataclasses.replace(
                    outcome, error=f"migrated, but the registry was not updated: {first_line(exc)}"
                )
        return outcome

    return AllTenantsResult(outcomes=(main, *_each(one, parallel)))


def status_all(*, parallel: int = 1) -> AllTenantsResult:
    """Where the main database and every tenant stand: current migration and pending ones.

    Example: ``[o.name for o in pfdb.tenants.status_all().outcomes if o.pending]``
    """
    from .migrations import status

    _check_parallel(parallel)

    def run(label: str, server: str, scope: Any) -> TenantOutcome:
        try:
            with scope():
                state = status()
        except Exception as exc:
            return TenantOutcome(label, server, error=first_line(exc))
        return TenantOutcome(label, server, pending=state.pending, current=state.current)

    main = run("(main)", DEFAULT_SERVER, _main)
    if not main.ok:
        return AllTenantsResult(outcomes=(main,))
    return AllTenantsResult(
        outcomes=(main, *_each(lambda info: run(info.name, info.server, lambda: tenant(info.name)), parallel))
    )


# -- move -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class MoveResult:
    """A tenant moved: from where to where, the verified copy, and anything left to clean up."""

    tenant: TenantInfo
    source: str
    target: str
    rows: int
    copy: dict[str, Any]
    leftover: str | None = None  # the old copy could not be dropped: say where it still is

    def as_dict(self) -> dict[str, Any]:
        return {
            "tenant": self.tenant.as_dict(),
            "source": self.source,
            "target": self.target,
            "rows": self.rows,
            "copy": self.copy,
            "leftover": self.leftover,
        }


def _schema_url(url: DatabaseURL, schema: str) -> str:
    """``url`` whose sessions see ``schema`` only: what ``copy_database`` reads and writes."""
    if "options" in url.options:
        raise TenantError(
            f"{url.masked} sets libpq options already; pfdb cannot add the tenant's search_path to them",
            hint="move the options into the server's or role's settings",
        )
    raw = url.raw
    return f"{raw}{'&' if '?' in raw else '?'}options=-csearch_path%3D{schema}"


def _give_to_role(binding: TenantBinding, role: str) -> None:
    """Make the tenant's role own every table the copy created (their sequences follow)."""
    from psycopg2 import sql

    database = binding.database
    with borrow_connection(database):
        conn = database.connection()
        with conn.cursor() as cursor:
            cursor.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (binding.schema,))
            for (table,) in cursor.fetchall():
                cursor.execute(
                    sql.SQL("ALTER TABLE {}.{} OWNER TO {}").format(
                        sql.Identifier(binding.schema), sql.Identifier(table), sql.Identifier(role)
                    )
                )


def move(name: str, *, to: str, on_step: Any = None) -> MoveResult:
    """Move tenant ``name`` to server ``to``: copy, verify, switch the registry, then drop the old copy.

    The copy is ``pfdb copy``'s (``transfer.copy_database``): the target schema is migrated to
    the tenant's version, filled in one transaction and checked table by table (row counts and
    checksums) before it commits. Until the registry switches, the tenant stays where it was,
    readable and writable; any failure before the switch removes the new copy and raises
    ``TenantError``. The old copy is dropped only after the switch. ``on_step(step)`` is
    called with ``"created"``, ``"copied"``, ``"switched"`` and ``"dropped"`` as they finish.

    Example: ``pfdb.tenants.move("acme", to="eu3").rows``
    """
    from .transfer import copy_database

    name = validate_name(name)
    step = on_step or (lambda _step: None)
    row = _record(name)
    with _main() as settings:
        if settings.database_url.backend == "sqlite":
            raise UsageError("SQLite tenants live in files beside the main database: there is no server to move to")
        source = binding_for(name, row.server, settings=settings)
        target = binding_for(name, to, settings=settings)
    if row.server == to:
        raise UsageError(f"tenant {name!r} is already on server {to!r}", hint="pfdb tenant list shows where each is")
    if row.state != "active":
        raise TenantError(f"tenant {name!r} is {row.state}", hint="finish or undo that operation first")
    _set_row(name, state="moving")
    made = False
    try:
        _make_storage(target, role=bool(source.role))
        made = True
        step("created")
        copied = copy_database(
            _schema_url(source.settings.database_url, source.schema),
            _schema_url(target.settings.database_url, target.schema),
        )
        if source.role:
            _give_to_role(target, role_name(name, target.settings.database_url.database or ""))
        step("copied")
        _set_row(name, server=to, state="active")
    except BaseException as exc:
        if made:
            try:
                _remove_storage(target)
            except Exception:  # the first error is the one to report; the stray schema is named below
                pass
        _set_row(name, state="active")
        if isinstance(exc, Exception):
            raise TenantError(
                f"tenant {name!r} was not moved ({first_line(exc)}); it stays on server {row.server!r}, unchanged",
                hint="fix the cause and run pfdb tenant move again",
            ) from exc
        raise
    _ROLE_CACHE.pop(_role_key(target.database, name), None)
    step("switched")
    leftover = None
    try:
        _remove_storage(source)
        step("dropped")
    except Exception as exc:
        leftover = f"the old copy ({_location(source)}) could not be dropped: {first_line(exc)}"
    return MoveResult(
        tenant=get(name),
        source=_location(source),
        target=_location(target),
        rows=copied.rows,
        copy=copied.as_dict(),
        leftover=leftover,
    )
