"""``pfdb``: the command line, a thin Fire shell over the Python API.

Each command is one short method that coerces its arguments, calls one API function and
formats the result; nothing else here holds logic. ``main(argv)`` is the one place that
turns exceptions into ``error: …`` on stderr and an exit code (0 ok, 1 failed, 2 usage or
configuration). Arguments are checked against the method's signature *before* anything
runs: Fire itself would run ``pfdb rollback 001 typo`` and only then complain.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
import sys
import types
from typing import Any

from .errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE, PfdbError, UsageError

# Commands whose name is not a valid method name: `pfdb import` runs PfdbCLI.import_products.
ALIASES = {"import": "import_products"}
# Only these create a missing database; every other command says there is none (pfdb init).
CREATING_COMMANDS = frozenset({"init", "migrate"})
# These only read the database: a SQLite file is opened read-only, so they work on a read-only disk.
READING_COMMANDS = frozenset({"status", "info", "export", "health", "logs", "backup", "check", "wait", "lint"})


def _print_json(data: Any) -> None:
    """One JSON document on one line: what scripts and ``jq`` read best."""
    print(json.dumps(data, default=str, ensure_ascii=False))


def _cache_line(cache: dict[str, Any]) -> str:
    """``ok redis://127.0.0.1:6379/0 (0.2 ms)`` or ``degraded redis://… (the reason)``."""
    detail = cache["error"] if cache.get("error") else f"{cache['latency_ms']} ms"
    return f"{cache['status']} {cache['url']} ({detail})"


def _print_changes(changes: Any) -> None:
    """Each change in full (a change is often several lines of peewee-migrate code)."""
    for change in changes:
        print("  " + change.rstrip().replace("\n", "\n  "))


def _print_replicas(replicas: list[dict[str, Any]] | None) -> None:
    """One line per read replica (URL masked), and what a replica out of use means."""
    for r in replicas or ():
        lag = "" if r["lag_seconds"] is None else f", lag {r['lag_seconds']:g} s"
        paused = ", replay paused" if r["replay_paused"] else ""
        error = f": {r['error']}" if r["error"] else ""
        print(f"replica:    {r['url']} {r['state']}{lag}{paused}{error}")
    skipped = [r for r in replicas or () if r["state"] != "ok"]
    if skipped:
        usable = len(replicas or ()) - len(skipped)
        where = "the primary" if not usable else f"the {usable} usable replica{'s' if usable > 1 else ''}"
        print(f"replicas:   {len(skipped)} not in use (reads go to {where}); the database stays healthy")


class Exit(Exception):
    """A command's verdict other than success, with what to say (already printed or not)."""

    def __init__(self, code: int):
        self.code = code


class PfdbCLI:
    """pfdb: the database of a product-feed integration system (SQLite or PostgreSQL).

    One method per command; ``cli_spec`` reads each method's signature and ``Args:`` block
    to parse its arguments and write its help, and Fire dispatches the call.
    """

    def __init__(self, database_url: str | None = None, tenant: str | None = None):
        self._database_url = database_url
        self._tenant = tenant  # --tenant NAME or PFDB_TENANT: every command works on that tenant
        self._scope = contextlib.ExitStack()  # the tenant scope, closed by main() after the command

    def _init(self, *, main: bool = False, **overrides: Any):
        """Bind the database for a command, and enter the ``--tenant`` scope (unless ``main``).

        ``MIGRATION_AUTO_UPGRADE`` is an application's start-up policy: no command applies it
        on the side (``migrate --dry-run`` would)."""
        from .lifecycle import init_database

        overrides.setdefault("migration_auto_upgrade", False)
        command = getattr(self, "_command", None)
        database = init_database(
            self._database_url, create=command in CREATING_COMMANDS, read_only=command in READING_COMMANDS, **overrides
        )
        if self._tenant and not main:
            from .tenants import tenant

            self._scope.enter_context(tenant(self._tenant))
        return database

    def _no_tenant(self, what: str) -> None:
        if self._tenant:
            raise UsageError(
                f"{what} works on the main database, not on one tenant", hint="drop --tenant (and PFDB_TENANT)"
            )

    # -- migration lifecycle --------------------------------------------------------------
    def init(self, json: bool = False):
        """Create the database if needed and apply every migration; safe to run again.

        Args:
            --json: print the result as one line of JSON

        Example: pfdb init
        """
        from .lifecycle import init

        self._no_tenant("pfdb init")  # a tenant is made with pfdb tenant create
        result = init(self._database_url)
        if json:
            return _print_json(result.as_dict())
        print(f"database: {result.database} ({result.backend}{', created' if result.created else ''})")
        if result.applied:
            print(f"applied:  {', '.join(result.applied)}")
        if result.backup:
            print(f"backup:   {result.backup}")
        print(
            f"current:  {result.current or '-'} ({'up to date' if not result.pending else 'pending: ' + ', '.join(result.pending)})"
        )

    def status(self, json: bool = False, exit_code: bool = False, drift: bool = True, all_tenants: bool = False):
        """Applied migrations with their times, pending ones, and model drift.

        Args:
            --json: print the result as one line of JSON
            --exit-code: exit 1 when migrations are pending (for deploy scripts)
            --no-drift: skip comparing the models with the migrations
            --all-tenants: one line for the main database and each tenant: current and pending migrations

        Example: pfdb status --exit-code
        """
        from .migrations import status

        if all_tenants:
            return self._status_all(json, exit_code)
        self._init()
        result = status(drift=drift)
        if json:
            _print_json(result.as_dict())
        else:
            print(f"database: {result.database}")
            for m in result.applied:
                when = m.applied_at.strftime("%Y-%m-%d %H:%M:%S UTC") if m.applied_at else "unknown time"
                print(f"  [x] {m.name}  (applied {when})")
            for name in result.pending:
                contract = ", contract step" if name in result.contract_pending else ""
                print(f"  [ ] {name}  (pending{contract})")
            for name in result.unknown:
                print(f"  [?] {name}  (applied, but no migration file)")
            if result.drift:
                print(
                    f"drift: the models differ from the migrations ({len(result.drift)} "
                    f"change{'s' if len(result.drift) != 1 else ''}); run pfdb create-migration:"
                )
                _print_changes(result.drift)
            elif result.drift is not None:
                print("drift: none")
            print(f"phase: {result.phase}")
        if exit_code and result.pending:
            raise Exit(EXIT_FAILED)

    def _status_all(self, json: bool, exit_code: bool) -> None:
        from .tenants import status_all

        self._no_tenant("--all-tenants")
        self._init(main=True)
        result = status_all()
        if json:
            _print_json(result.as_dict())
        else:
            for o in result.outcomes:
                if not o.ok:
                    print(f"{o.name}: error: {o.error}")
                elif o.pending:
                    print(f"{o.name}: {o.current or 'none'} (pending: {', '.join(o.pending)})")
                else:
                    print(f"{o.name}: {o.current or 'none'} (up to date)")
        if not result.ok or (exit_code and any(o.pending for o in result.outcomes)):
            raise Exit(EXIT_FAILED)

    def migrate(
        self,
        target: str | None = None,
        fake: bool = False,
        dry_run: bool = False,
        wait: bool = False,
        timeout: float = 30.0,
        lock_timeout: float = 600.0,
        json: bool = False,
        all_tenants: bool = False,
        parallel: int = 1,
        contract: bool = False,
        rehearse: bool = False,
    ):
        """Apply pending migrations (up to --target), each in its own transaction, stopping before a contract step.

        Args:
            --target VERSION: stop after this migration (002 or 002_add_weight)
            --fake: record the migrations as applied without running them
            --dry-run: print the SQL they would run and change nothing
            --wait: first wait up to --timeout seconds for the database to answer
            --timeout SECONDS: how long --wait waits
            --lock-timeout SECONDS: how long to wait for another process's migration lock
            --json: print the result as one line of JSON
            --all-tenants: migrate the main database, then every tenant (one line each; exit 1 if any failed)
            --parallel N: with --all-tenants, migrate N tenants at a time
            --contract: also apply contract steps (CONTRACT = True), once no old release runs
            --rehearse: apply, roll back and re-apply them on a scratch copy, compare schemas, change nothing

        Example: pfdb migrate --rehearse
        """
        from .migrations import migrate

        if all_tenants:
            if contract or rehearse:
                raise UsageError(
                    "--all-tenants takes no --contract or --rehearse: it applies each tenant's expand steps",
                    hint="contract or rehearse one database at a time (--tenant NAME)",
                )
            return self._migrate_all(target, fake, dry_run, wait, timeout, lock_timeout, json, parallel)
        if parallel != 1:
            raise UsageError("--parallel goes with --all-tenants", hint="pfdb migrate --all-tenants --parallel 4")
        self._init()
        if wait:
            from .database import wait_for_database

            wait_for_database(timeout=timeout)
        if rehearse:
            if target is not None or fake or dry_run:
                raise UsageError(
                    "pfdb migrate: --rehearse takes no --target, --fake or --dry-run",
                    hint="pfdb migrate --rehearse [--contract] rehearses what pfdb migrate [--contract] would apply",
                )
            return self._rehearse(contract, json)
        result = migrate(
            None if target is None else str(target),
            fake=fake,
            dry_run=dry_run,
            lock_timeout=lock_timeout,
            contract=contract,
        )
        if json:
            return _print_json(result.as_dict())
        if result.backup is not None:
            print(f"backup: {result.backup.path}")
        if dry_run:
            for statement in result.sql:
                print(f"{statement.rstrip(';')};")
            names = f" ({', '.join(result.applied)})" if result.applied else ""
            print(f"-- dry run: {len(result.applied)} migration(s) would be applied{names}; nothing was changed")
        elif not result.applied and not result.contract_waiting:
            print("nothing to migrate: the database is up to date")
        else:
            verb = "recorded (fake)" if fake else "applied"
            for name in result.applied:
                print(f"{verb}: {name}")
        if result.contract_waiting:
            waiting = result.contract_waiting
            print(
                f"stopped before contract step {waiting[0]} ({len(waiting)} migration(s) waiting): "
                "run pfdb migrate --contract once no instance of the previous release is running"
            )

    @staticmethod
    def _rehearse(contract: bool, json: bool) -> None:
        from .lifecycle import rehearse_migrations

        result = rehearse_migrations(contract=contract)
        if json:
            _print_json(result.as_dict())
        elif not result.migrations:
            print(
                "nothing to rehearse: no pending migration"
                + (" before a contract step" if result.contract_waiting else "")
            )
        else:
            print(f"rehearsal on a copy ({result.copy_method}) of {result.database}: {', '.join(result.migrations)}")
            for step in result.steps:
                print(
                    f"  {step.action:<8} {step.migration or '':<32} {step.seconds:8.3f} s"
                    + ("" if step.ok else "  FAILED")
                )
                if step.error:
                    print(f"    {step.error}")
                for line in step.differences:
                    print(f"    {line}")
            for table, stages in result.rows.items():
                print(f"  rows {table}: " + " -> ".join(str(stages[s]) for s in stages))
            if not result.copy_removed:
                print("the scratch copy could not be removed: drop it by hand")
            if result.ok:
                print(
                    f"rehearsal passed: {len(result.migrations)} migration(s) applied, rolled back and applied again "
                    "on the copy; the database was not touched"
                )
            else:
                print(f"rehearsal FAILED at {result.failed}; the database was not touched")
        if not result.ok:
            raise Exit(EXIT_FAILED)

    def _migrate_all(self, target, fake, dry_run, wait, timeout, lock_timeout, json, parallel) -> None:
        from .tenants import migrate_all

        self._no_tenant("--all-tenants")
        if target is not None or fake or dry_run:
            raise UsageError(
                "--all-tenants applies every pending migration for real",
                hint="use --target, --fake and --dry-run with one database (--tenant NAME)",
            )
        self._init(main=True)
        if wait:
            from .database import wait_for_database

            wait_for_database(timeout=timeout)
        result = migrate_all(parallel=parallel, lock_timeout=lock_timeout)
        if json:
            _print_json(result.as_dict())
        else:
            for o in result.outcomes:
                if not o.ok:
                    print(f"{o.name}: FAILED: {o.error}")
                elif o.applied:
                    print(f"{o.name}: applied {', '.join(o.applied)} ({o.seconds:.2f} s)")
                else:
                    print(f"{o.name}: up to date ({o.current or 'none'})")
            failed = result.failed
            if failed:
                print(f"{len(failed)} of {len(result.outcomes)} failed: {', '.join(o.name for o in failed)}")
        if not result.ok:
            raise Exit(EXIT_FAILED)

    def rollback(
        self,
        version: str | None = None,
        yes: bool = False,
        lock_timeout: float = 600.0,
        json: bool = False,
        fake: bool = False,
    ):
        """Undo the last migration, everything after VERSION, or all of them (zero).

        A rollback that drops tables or columns shows what it drops and asks on a terminal;
        a backup is taken first unless MIGRATION_BACKUP_BEFORE_UPGRADE=false.

        Args:
            VERSION: the last migration to keep (001 or 001_initial), or zero for none
            --yes: roll back even when it drops tables or columns (required without a terminal)
            --lock-timeout SECONDS: how long to wait for another process's migration lock
            --json: print the result as one line of JSON
            --fake: only remove the migrations from the history, running no rollback code (undoes migrate --fake)

        Example: pfdb rollback 001
        """
        from .migrations import rollback, rollback_plan

        self._init()
        target = None if version is None else str(version)
        timeout = lock_timeout
        confirmed = bool(yes)
        if not yes and not fake:  # a fake rollback drops nothing: nothing to confirm
            plan = rollback_plan(target)
            if plan.destructive:
                if not sys.stdin.isatty():
                    raise UsageError(
                        f"pfdb rollback: {plan.summary}; refusing without --yes "
                        "because standard input is not a terminal",
                        hint="add --yes",
                    )
                print(f"Rolling back {', '.join(plan.undo)} drops, with their data:")
                for item in (d for ds in plan.drops.values() for d in ds):
                    print(f"  {item}")
                answer = input("A backup is taken first. Roll back? [y/N] ")
                if answer.strip().lower() not in ("y", "yes"):
                    print("rollback cancelled; nothing was changed")
                    raise Exit(EXIT_FAILED)
                confirmed = True
        # Not confirmed: the API checks again, so nothing destructive slips through.
        result = rollback(target, lock_timeout=timeout, destructive_ok=confirmed, fake=bool(fake))
        if json:
            return _print_json(result.as_dict())
        if result.backup is not None:
            print(f"backup: {result.backup.path}")
        for name in result.rolled_back:
            print(f"rolled back: {name}{' (fake: history only, no rollback code run)' if result.fake else ''}")
        if not result.rolled_back:
            print(f"nothing to roll back: already at {result.current}")
        print(f"current: {result.current or 'zero (no migration applied)'}")

    def create_migration(self, description: str, empty: bool = False, json: bool = False):
        """Write the next numbered migration from the model changes.

        Args:
            DESCRIPTION: what the migration does, e.g. "add product weight" (names the file)
            --empty: write a template to fill in instead of the model changes
            --json: print the result as one line of JSON

        Example: pfdb create-migration "add product weight"
        """
        from .migrations import create

        self._init()
        result = create(str(description), auto=not empty)
        if json:
            return _print_json(result.as_dict())
        if result.path is None:
            print("no changes: the models match the migrations; nothing written")
            return
        print(f"created {result.path}")
        _print_changes(result.changes)

    def check(self, json: bool = False):
        """Exit 1 when the models have changed without a migration (for CI).

        Args:
            --json: print the result as one line of JSON

        Example: pfdb check
        """
        from .migrations import check

        self._init()
        result = check()
        if json:
            _print_json(result.as_dict())
        elif result.has_drift:
            print("the models differ from the migrations; run pfdb create-migration:")
            _print_changes(result.changes)
        else:
            print("no drift: the models match the migrations")
        if result.has_drift:
            raise Exit(EXIT_FAILED)

    def lint(self, only: str = "", json: bool = False):
        """Exit 1 when a pending migration would break the running version or block traffic (for CI).

        Args:
            --only VERSIONS: check these migrations (comma-separated: 002,004_drop_notes), pending or not
            --json: print the result as one line of JSON

        Example: pfdb lint --only 002
        """
        from .migration_lint import lint

        self._init()
        if isinstance(only, (tuple, list)):  # Fire reads 2,3 as a tuple
            only = ",".join(str(v) for v in only)
        versions = [v.strip() for v in str(only).split(",") if v.strip()] if str(only).strip() else None
        result = lint(versions)
        if json:
            _print_json(result.as_dict())
        else:
            for f in result.findings:
                state = f"acknowledged: {f.acknowledged}" if f.acknowledged else "UNSAFE"
                print(f"{f.migration}: {f.key} ({state})")
                print(f"  operation: {f.operation}")
                if not f.acknowledged:
                    print(f"  why: {f.why}")
                    print(f"  safe recipe: {f.recipe}")
            checked = ", ".join(result.checked) or "no pending migration"
            problems = len(result.problems)
            print(f"checked {checked}: " + (f"{problems} unsafe operation(s)" if problems else "safe"))
        if not result.ok:
            raise Exit(EXIT_FAILED)

    def wait(self, timeout: float = 30.0, json: bool = False):
        """Wait until the database answers; exit 1 after --timeout seconds.

        Args:
            --timeout SECONDS: give up after this long
            --json: print the result as one line of JSON

        Example: pfdb wait --timeout 60
        """
        from .database import wait_for_database

        self._init()
        result = wait_for_database(timeout=timeout)
        if json:
            return _print_json({"up": True, "attempts": result["attempts"], "seconds": round(result["seconds"], 3)})
        print(f"database is up after {result['seconds']:.1f} s ({result['attempts']} attempts)")

    # -- operations: backup, restore, info, optimize, health, create-admin, logs ------------
    def backup(self, backup_path: str = "", json: bool = False):
        """Write a consistent backup while the database stays in use (mode 0600).

        SQLite: SQLite's online backup API; PostgreSQL: pg_dump -Fc.

        Args:
            --backup-path PATH: a file, or a folder to name one in (default: backups/ beside the SQLite
                file, or in the working directory)
            --json: print the result as one line of JSON

        Example: pfdb backup --backup-path /var/backups/pfdb/
        """
        from .maintenance import backup, human_size
        from .progress import BackupBar

        self._init()
        bar = BackupBar()
        try:
            result = backup(backup_path or None, progress=bar)
        finally:
            bar.close()
        if json:
            return _print_json(result.as_dict())
        print(f"backup: {result.path}")
        print(f"size: {human_size(result.size)} in {result.duration:.2f} s; migration {result.migration or 'none'}")
        for leftover in result.leftovers:
            print(f"removed: {leftover} (left by a backup that was killed before it finished)")

    def restore(self, path: str, yes: bool = False, json: bool = False):
        """Replace the database's data with a backup, after checking it and saving a safety copy.

        Asks for confirmation on a terminal.

        Args:
            PATH: the backup file (what pfdb backup printed)
            --yes: do not ask (required when standard input is not a terminal)
            --json: print the result as one line of JSON

        Example: pfdb restore backups/pfdb-20261126T143000Z.db --yes
        """
        from .database import get_settings
        from .maintenance import check_backup, restore

        self._init()
        migration = check_backup(path)
        if not yes:
            if not sys.stdin.isatty():
                raise UsageError(
                    "pfdb restore replaces the current data; refusing without --yes "
                    "because standard input is not a terminal",
                    hint="add --yes",
                )
            answer = input(
                f"Replace the data of {get_settings().database_url.masked} with {path} "
                f"(migration {migration or 'none'})? A safety backup is taken first. [y/N] "
            )
            if answer.strip().lower() not in ("y", "yes"):
                print("restore cancelled; nothing was changed")
                raise Exit(EXIT_FAILED)
        result = restore(path)
        if json:
            return _print_json(result.as_dict())
        print(f"safety backup of the previous data: {result.safety_backup.path}")
        print(f"restored: {result.path} (migration {result.migration or 'none'})")
        for name in result.dropped:
            print(f"dropped table {name}: not in the backup (its data is in the safety backup)")
        for name in result.migrated:
            print(f"applied: {name}")
        if result.pending:
            print(f"the restored data is behind the code: run pfdb migrate (pending: {', '.join(result.pending)})")
        if result.unknown:
            print(f"warning: the restored data has migrations this pfdb does not know: {', '.join(result.unknown)}")

    def info(self, json: bool = False):
        """Backend, version, sizes, settings in force, row counts, migrations and pool.

        Args:
            --json: print the result as one line of JSON

        Example: pfdb info --json
        """
        from .maintenance import human_size, info

        self._init()
        result = info()
        if json:
            return _print_json(result.as_dict())
        print(f"backend:    {result.backend} {result.server_version}")
        print(f"database:   {result.database}")
        if result.path:
            print(f"file:       {result.path} ({human_size(result.size)}, WAL {human_size(result.wal_size)})")
        else:
            print(f"size:       {human_size(result.size)}")
        print("settings:   " + ", ".join(f"{k}={v}" for k, v in result.settings.items()))
        m = result.migrations
        print(
            f"migrations: {m['current'] or 'none'} ({'up to date' if m['up_to_date'] else 'pending: ' + ', '.join(m['pending'])})"
        )
        if result.pool:
            print("pool:       " + ", ".join(f"{k}={v}" for k, v in result.pool.items()))
        if result.cache:
            print(f"cache:      {_cache_line(result.cache)}")
        _print_replicas(result.replicas)
        print("tables:")
        width = max((len(t) for t in result.tables), default=0)
        for table, count in result.tables.items():
            print(f"  {table:<{width}}  {count:>10,}")

    def optimize(self, json: bool = False):
        """SQLite: ANALYZE, PRAGMA optimize, VACUUM, WAL checkpoint; PostgreSQL: VACUUM (ANALYZE).

        Args:
            --json: print the result as one line of JSON

        Example: pfdb optimize
        """
        from .maintenance import human_size, optimize

        self._init()
        result = optimize()
        if json:
            return _print_json(result.as_dict())
        for step in result.steps:
            print(f"ran: {step}")
        print(f"size: {human_size(result.size_before)} -> {human_size(result.size_after)} in {result.duration:.2f} s")

    def cache_clear(self, json: bool = False):
        """Forget every value the Redis cache holds for this database (after writes pfdb cannot see).

        pfdb invalidates after each of its own commits; this is for another program's SQL.
        Without CACHE_URL there is nothing to clear.

        Args:
            --json: print the result as one line of JSON

        Example: pfdb cache-clear
        """
        from .cache import clear

        self._init()
        result = clear()
        if json:
            return _print_json(result.as_dict())
        if result.cache is None:
            print("no cache: CACHE_URL is not set, nothing to clear")
            return
        print(f"cleared: {result.keys_deleted} cached values at {result.cache} ({result.namespace})")

    def health(self, json: bool = False):
        """Probe the database; exit 0 when healthy, 1 when not (for container health checks).

        Args:
            --json: print the report as one line of JSON

        Example: pfdb health --json
        """
        from .lifecycle import database_health_check

        self._init()
        report = database_health_check()
        if json:
            _print_json(report)
        else:
            print(f"status:     {report['status']}")
            print(f"database:   {report.get('database')}")
            if report.get("latency_ms") is not None:
                print(f"latency:    {report['latency_ms']} ms")
            if report.get("server_version"):
                print(f"version:    {report['server_version']}")
            if report.get("pool"):
                print("pool:       " + ", ".join(f"{k}={v}" for k, v in report["pool"].items()))
            _print_replicas(report.get("replicas"))
            migrations = report.get("migrations") or {}
            if "pending" in migrations:
                pending = migrations["pending"]
                print(
                    f"migrations: {migrations['current'] or 'none'}"
                    + (f" (pending: {', '.join(pending)})" if pending else "")
                )
            if report.get("error"):
                print(f"error:      {report['error']}")
            if report.get("cache"):
                print(f"cache:      {_cache_line(report['cache'])}")
        if report["status"] != "healthy":
            raise Exit(EXIT_FAILED)

    def create_admin(
        self,
        email: str,
        password: str | None = None,
        password_stdin: bool = False,
        update: bool = False,
        json: bool = False,
    ):
        """Create an administrator, or with --update reset a user's password and make it admin.

        The password is asked twice on a terminal, or read as one line with --password-stdin.

        Args:
            EMAIL: the administrator's email address (the login)
            PASSWORD: works, but stays in the shell history: prefer the prompt or --password-stdin
            --password-stdin: read the password as one line from standard input
            --update: reset an existing user's password and make the user an administrator
            --json: print the result as one line of JSON

        Example: pfdb create-admin admin@example.com --password-stdin < password.txt
        """
        from .admin import create_admin

        if password is not None:
            if password_stdin:
                raise UsageError("pass the password either as an argument or with --password-stdin, not both")
            print(
                "warning: a password on the command line stays in the shell history; "
                "prefer the prompt or --password-stdin",
                file=sys.stderr,
            )
        elif password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
            if not password:
                raise UsageError(
                    "--password-stdin read no password",
                    hint='e.g. echo "$PASSWORD" | pfdb create-admin EMAIL --password-stdin',
                )
        elif sys.stdin.isatty():
            import getpass

            password = getpass.getpass("Password: ")
            if getpass.getpass("Repeat password: ") != password:
                raise UsageError("the two passwords differ; nothing was changed")
        else:
            raise UsageError(
                "no password given and standard input is not a terminal to ask on",
                hint="pipe it in with --password-stdin",
            )
        self._init()
        result = create_admin(email, password, update=update)
        if json:
            return _print_json(result.as_dict())
        print(f"{'created' if result.created else 'updated'} administrator {result.email} (id {result.id})")

    def logs(self, level: str = "", limit: int = 10, json: bool = False):
        """The newest entries of the system log.

        Args:
            --level LEVEL: only this level and above (DEBUG, INFO, WARNING, ERROR, CRITICAL)
            --limit N: how many entries
            --json: print the entries as one line of JSON

        Example: pfdb logs --level ERROR --limit 20
        """
        from .log_handler import LOG_LEVELS, recent_logs

        try:
            count = int(limit)
        except (TypeError, ValueError):
            raise UsageError(f"--limit must be a whole number, got {limit!r}") from None
        if count < 1:
            raise UsageError(f"--limit must be at least 1, got {count}")
        if level and str(level).upper() not in LOG_LEVELS:
            raise UsageError(f"--level must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
        self._init()
        result = recent_logs(str(level) if level else None, count)
        if json:
            return _print_json(result.as_dict())
        if not result.entries:
            print("no log entries" + (f" at {result.level} or above" if result.level else ""))
        for e in result.entries:
            where = f" ({e.module}:{e.line})" if e.module else ""
            print(f"{e.created_at:%Y-%m-%d %H:%M:%S} {e.level:<8} {e.logger or '-'}: {e.message}{where}")
            if e.exception:
                print("    " + e.exception.rstrip().replace("\n", "\n    "))

    # -- feeds: import-categories --------------------------------------------------------
    def import_categories(self, file: str, dry_run: bool = False, json: bool = False):
        """Import a category tree: Google taxonomy lines ("1604 - Apparel > Clothing") or "A > B" paths.

        Safe to run again: unchanged categories are not touched; one with the same id but a
        new name or parent is updated in place, its subtree following.

        Args:
            FILE: the taxonomy file (may be gzipped), or - for standard input
            --dry-run: count what would change and write nothing
            --json: print the result as one line of JSON

        Example: pfdb import-categories taxonomy-with-ids.en-US.txt
        """
        from .categories import import_categories

        self._init()
        source = getattr(sys.stdin, "buffer", sys.stdin) if str(file) == "-" else str(file)
        result = import_categories(source, dry_run=dry_run)
        if json:
            return _print_json(result.as_dict())
        verb = "would import" if dry_run else "imported"
        print(
            f"{verb} {result.total} categories: {result.created} created, {result.updated} updated, "
            f"{result.unchanged} unchanged{' (dry run: nothing written)' if dry_run else ''}"
        )

    # -- feeds: import, export ------------------------------------------------------------
    def import_products(
        self,
        file: str,
        format: str = "auto",
        mapping: str = "",
        dry_run: bool = False,
        strict: bool = False,
        rejects: str = "",
        batch_size: int = 2000,
        encoding: str = "utf-8-sig",
        currency: str = "",
        json: bool = False,
    ):
        """Import a product feed: pfdb CSV/JSON Lines, Shopify, WooCommerce, Google Merchant or Google Retail.

        New SKUs are created; known ones change only in the fields the feed carries, and
        only when something differs (those are marked for Shopify re-sync). Bad rows are
        listed by line, column and reason while the good ones import. Exits 1 when rows
        were rejected.

        Args:
            FILE: the feed (may be gzipped), or - for standard input
            --format NAME: auto (detect from the header), pfdb, shopify, woocommerce, google (Merchant Center) or google-retail
            --mapping FILE: a JSON or INI file mapping another layout's columns to pfdb's
            --dry-run: validate and count, write nothing
            --strict: write nothing if any row is bad
            --rejects FILE: keep the bad rows (original columns plus the reason) to fix and re-feed
            --batch-size N: rows per transaction
            --encoding NAME: the file's text encoding
            --currency CODE: the currency of rows that name none, e.g. EUR (a Shopify export names none)
            --json: print the result as one line of JSON

        Example: pfdb import supplier.csv.gz --rejects rejects.csv
        """
        import signal

        from .feeds import import_products
        from .progress import ProgressBar

        self._init()
        bar = ProgressBar("importing") if sys.stderr.isatty() and not json else None

        def terminated(signum, frame):  # a server shutting down: end the Job 'cancelled', like Ctrl-C
            raise KeyboardInterrupt("terminated (SIGTERM)")

        try:
            previous = signal.signal(signal.SIGTERM, terminated)
        except ValueError:  # not the main thread
            previous = None
        try:
            result = import_products(
                str(file),
                format=str(format),
                mapping=str(mapping) or None,
                dry_run=dry_run,
                strict=strict,
                rejects=str(rejects) or None,
                batch_size=batch_size,
                encoding=str(encoding),
                progress=bar,
                currency=str(currency) or None,
            )
        finally:
            if bar is not None:
                bar.close()
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if json:
            _print_json(result.as_dict())
        else:
            verb = "checked" if dry_run else "imported"
            counted = f"{result.rows} {result.unit}" + (
                f" from {result.lines} lines" if result.lines != result.rows else ""
            )
            print(
                f"{verb} {result.source} ({result.format}): {counted}, {result.created} created, "
                f"{result.updated} updated, {result.unchanged} unchanged, {result.rejected} rejected"
            )
            if result.skipped:
                print(
                    "not products: "
                    + ", ".join(f"{n} {kind}" for kind, n in result.skipped)
                    + " (a variable product's variations are imported; a grouped product lists others)"
                )
            if not result.written:
                print("nothing was written: " + ("dry run" if dry_run else "--strict and some rows were rejected"))
            if result.currency:
                print(
                    f"currency: {result.currency} for rows that name none (--currency)"
                    if currency
                    else f"currency: the feed names none; new products get {result.currency} (--currency CODE to set one)"
                )
            if result.generated_skus:
                print(f"generated SKUs: {result.generated_skus} (variants without one; stable across re-imports)")
            if result.images_added or result.images_removed or result.categories_created:
                print(
                    f"images: {result.images_added} added, {result.images_removed} removed; "
                    f"categories: {result.categories_created} created"
                )
            if result.ignored_columns:
                shown = ", ".join(result.ignored_columns[:8])
                more = len(result.ignored_columns) - 8
                print(f"ignored columns: {shown}{f' and {more} more' if more > 0 else ''}")
            for issue in result.rejects[:20]:
                print(f"  rejected {issue}", file=sys.stderr)
            if result.rejected > 20:
                print(f"  … and {result.rejected - 20} more", file=sys.stderr)
            if result.rejects_file:
                print(f"rejected rows written to {result.rejects_file}")
        if result.rejected:
            raise Exit(EXIT_FAILED)

    def export(
        self,
        output: str | None = None,
        format: str = "",
        category: str = "",
        changed_since: str = "",
        json: bool = False,
    ):
        """Export products, with category paths and image lists, as pfdb CSV or JSON Lines.

        The file imports back with pfdb import.

        Args:
            OUTPUT: a file (.gz is compressed, .jsonl picks JSON Lines); standard output when omitted or -
            --format NAME: csv or jsonl (default: from OUTPUT's name, else csv)
            --category SLUG: only this category and its whole subtree (a slug, or a path "A > B")
            --changed-since WHEN: only products changed since a time (2024-05-01T12:00Z) or an age (24h, 7d)
            --json: print the summary as one line of JSON (on standard error when exporting to standard output)

        Example: pfdb export catalogue.csv --category shirts
        """
        from json import dumps

        from .feeds import export_products
        from .progress import ProgressBar

        self._init()
        to_stdout = output is None or str(output) == "-"
        bar = ProgressBar("exporting", unit="products") if sys.stderr.isatty() and not to_stdout else None
        try:
            result = export_products(
                sys.stdout if to_stdout else str(output),
                format=str(format) or None,
                category=str(category) or None,
                changed_since=str(changed_since) or None,
                progress=bar,
            )
        finally:
            if bar is not None:
                bar.close()
        report = sys.stderr if to_stdout else sys.stdout  # never mix the summary into exported data
        if json:
            print(dumps(result.as_dict(), default=str, ensure_ascii=False), file=report)
        else:
            print(f"exported {result.products} products ({result.images} images) to {result.output}", file=report)

    # -- moving data between databases -------------------------------------------------------
    def copy(self, source_url: str, target_url: str, replace: bool = False, json: bool = False):
        """Copy every pfdb table and row to another database, on either backend, verified.

        The source stays in use and is read as one snapshot; the target is migrated to the
        source's version, filled in one transaction and checked table by table (row counts
        and checksums) before it is committed: a failure leaves it as it was.

        Args:
            SOURCE_URL: the database to copy (sqlite:///shop.db, postgresql://…)
            TARGET_URL: where to copy it; a missing SQLite file or PostgreSQL database is created
            --replace: replace a target that holds pfdb data (it is backed up first)
            --json: print the result as one line of JSON

        Example: pfdb copy sqlite:///shop.db postgresql://app@db:5432/shop
        """
        from .progress import CopyBar
        from .transfer import copy_database

        self._no_tenant("pfdb copy")
        bar = CopyBar() if sys.stderr.isatty() and not json else None
        try:
            result = copy_database(str(source_url), str(target_url), replace=replace, progress=bar)
        finally:
            if bar is not None:
                bar.close()
        if json:
            return _print_json(result.as_dict())
        width = max((len(t.table) for t in result.tables), default=0)
        for t in result.tables:
            print(f"  {t.table:<{width}}  {t.rows:>10,} rows  checksum {t.checksum}  {'ok' if t.ok else 'DIFFERS'}")
        if result.backup:
            print(f"backup of the replaced target: {result.backup}")
        print(
            f"copied {result.rows:,} rows from {result.source} to {result.target} "
            f"(migration {result.migration}) in {result.seconds:.2f} s; verified"
        )

    # -- the shell ----------------------------------------------------------------------------
    def tenant(
        self,
        action: str,
        name: str | None = None,
        server: str = "",
        to: str = "",
        role: bool = False,
        yes: bool = False,
        backup_path: str = "",
        json: bool = False,
    ):
        """Create, list, drop or move tenants: shops with their own copy of every pfdb table.

        PostgreSQL: a schema per tenant, on DATABASE_URL's server or one named in
        DATABASE_SERVERS. SQLite: a file per tenant in <database>.tenants/. Work on one
        tenant with the global --tenant NAME (or PFDB_TENANT).

        Args:
            ACTION: create, list, drop or move
            NAME: the tenant (lower-case letters, digits, underscores); every action but list
            --server NAME: create: the DATABASE_SERVERS entry to create it on (default: DATABASE_URL's server)
            --to NAME: move: the server to move it to (default for DATABASE_URL's)
            --role: create (PostgreSQL): a role of its own that owns only its schema, used for its connections
            --yes: drop: do not ask (required when standard input is not a terminal)
            --backup-path PATH: drop: where the backup taken first goes (a file or a folder)
            --json: print the result as one line of JSON

        Example: pfdb tenant create acme --server eu2
        """
        from . import tenants

        self._no_tenant("pfdb tenant")
        action = str(action).strip().lower()
        actions = ("create", "list", "drop", "move")
        if action not in actions:
            raise UsageError(f"pfdb tenant: unknown action {action!r}", hint=f"actions: {', '.join(actions)}")
        if action != "list" and not name:
            raise UsageError(f"pfdb tenant {action} needs the tenant's NAME", hint=f"pfdb tenant {action} acme")
        allowed = {"create": {"server", "role"}, "list": set(), "drop": {"yes", "backup_path"}, "move": {"to"}}[action]
        given = {"server": server, "to": to, "role": role, "yes": yes, "backup_path": backup_path}
        for option, value in given.items():
            if value and option not in allowed:
                raise UsageError(
                    f"pfdb tenant {action} takes no --{option.replace('_', '-')}",
                    hint="see pfdb tenant --help",
                )
        self._init(main=True)
        backup, moved = None, None
        if action == "create":
            shown = [tenants.create(str(name), server=server or None, role=role)]
        elif action == "list":
            shown = list(tenants.list_tenants())
        elif action == "move":
            if not to:
                raise UsageError("pfdb tenant move needs --to SERVER", hint="pfdb tenant move acme --to eu3")
            moved = tenants.move(str(name), to=to)
            shown = [moved.tenant]
        else:
            info = tenants.get(str(name))
            if not yes:
                if not sys.stdin.isatty():
                    raise UsageError(
                        f"pfdb tenant drop deletes every table of tenant {info.name}; refusing without --yes "
                        "because standard input is not a terminal",
                        hint="add --yes",
                    )
                answer = input(
                    f"Drop tenant {info.name} ({info.location}) and its data? A backup is taken first. [y/N] "
                )
                if answer.strip().lower() not in ("y", "yes"):
                    print("drop cancelled; nothing was changed")
                    raise Exit(EXIT_FAILED)
            backup = tenants.drop(info.name, backup_path=backup_path or None).backup
            shown = []
        if json:
            return _print_json(
                {
                    "action": action,
                    "tenants": [t.as_dict() for t in shown],
                    "backup": str(backup) if backup else None,
                    "verified": moved.as_dict()["copy"] if moved is not None else None,
                }
            )
        if action == "drop":
            print(f"dropped tenant {name}; its backup: {backup}")
            return
        if action == "move":
            print(
                f"moved tenant {name}: {moved.source} -> {moved.target} ({moved.rows} rows verified, counts and checksums)"
            )
        elif action == "create":
            print(f"created tenant {name}")
        if not shown and action == "list":
            print("no tenants (create one with pfdb tenant create NAME)")
        for t in shown:
            print(f"{t.name:<20} {t.server:<10} {t.state:<8} {t.schema_version or '-':<32} {t.location}")

    def completion(self, shell: str):
        """Print a completion script for bash or zsh (commands and their options).

        No --json: the output is a shell script.

        Args:
            SHELL: bash or zsh

        Example: pfdb completion bash > /etc/bash_completion.d/pfdb
        """
        from .cli_spec import completion_script

        print(completion_script(str(shell).strip().lower(), list(command_specs().values())), end="")


class _AsyncioStandIn(types.ModuleType):
    """What Fire's ``import asyncio`` gets while pfdb imports Fire.

    Fire uses asyncio only to ask whether a command is a coroutine function (pfdb's never
    are), yet importing asyncio costs ~25 ms, a sixth of ``pfdb status``. This answers that
    question with ``inspect`` and hands any other attribute to the real asyncio, loaded then.
    """

    @staticmethod
    def iscoroutinefunction(fn: Any) -> bool:
        real = sys.modules.get("asyncio")
        if real is not None and not isinstance(real, _AsyncioStandIn):
            return real.iscoroutinefunction(fn)
        return inspect.iscoroutinefunction(fn)

    def __getattr__(self, name: str) -> Any:
        if isinstance(sys.modules.get("asyncio"), _AsyncioStandIn):
            del sys.modules["asyncio"]
        import importlib

        return getattr(importlib.import_module("asyncio"), name)


def _import_fire() -> Any:
    if "fire" not in sys.modules and "asyncio" not in sys.modules:
        sys.modules["asyncio"] = _AsyncioStandIn("asyncio")
        try:
            import fire
        finally:
            if isinstance(sys.modules.get("asyncio"), _AsyncioStandIn):
                del sys.modules["asyncio"]  # later imports get the real one
    import fire

    return fire


def _dispatch_metadata(command: Any) -> dict[str, Any]:
    """Fire's per-call argument parsers for ``command``: each value as ``cli_spec`` converted it.

    pfdb has already checked and converted every value (``cli_spec.parse``); Fire would read
    them again as Python literals (a password ``abc#def`` as ``abc``, ``1e3`` as 1000.0).
    These parsers, Fire's documented ``SetParseFns`` metadata, hand Fire the text as typed
    for Fire to pass on, then the method gets the value ``cli_spec`` made of it.
    """
    named = {a.param: (lambda text, a=a: a.convert(a.shown, text)) for a in command.arguments if not a.is_switch}
    named.update({a.param: (lambda text: text == "True") for a in command.arguments if a.is_switch})
    return {"ACCEPTS_POSITIONAL_ARGS": True, "FIRE_PARSE_FNS": {"default": None, "positional": (), "named": named}}


def _method_names() -> dict[str, str]:
    """Command name as typed -> PfdbCLI method name, in help order."""
    shown = {target: alias for alias, target in ALIASES.items()}
    return {
        shown.get(name, name.replace("_", "-")): name
        for name, fn in vars(PfdbCLI).items()
        if inspect.isfunction(fn) and not name.startswith("_")
    }


def command_spec(name: str) -> Any:
    """The ``cli_spec.Command`` of one command (None when there is no such command).

    Only the command being run is built: the start-up of ``pfdb status`` pays for one.
    """
    from .cli_spec import command_from_method

    method = _method_names().get(name)
    return None if method is None else command_from_method(name, getattr(PfdbCLI, method))


def command_specs() -> dict[str, Any]:
    """Every command's ``cli_spec.Command``, by the name people type, in help order."""
    return {name: command_spec(name) for name in _method_names()}


def _split_globals(argv: list[str]) -> tuple[dict[str, Any], list[str]]:
    options: dict[str, Any] = {}  # PFDB_DEBUG is read once, by main()
    rest: list[str] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":  # everything after it belongs to the command
            rest.extend(argv[i:])
            break
        if arg == "--debug":
            options["debug"] = True
        elif arg == "--version":
            options["version"] = True
        elif arg == "--database-url" or arg.startswith("--database-url="):
            if "=" in arg:
                options["database_url"] = arg.split("=", 1)[1]
            elif i + 1 < len(argv):
                i += 1
                options["database_url"] = argv[i]
            else:
                raise UsageError("--database-url needs a value", hint="e.g. --database-url sqlite:///shop.db")
        elif arg == "--tenant" or arg.startswith("--tenant="):
            if "=" in arg:
                options["tenant"] = arg.split("=", 1)[1]
            elif i + 1 < len(argv) and not argv[i + 1].startswith("-"):
                i += 1
                options["tenant"] = argv[i]
            else:
                raise UsageError("--tenant needs a tenant's name", hint="e.g. pfdb --tenant acme info")
        else:
            rest.append(arg)
        i += 1
    return options, rest


def main(argv: list[str] | None = None) -> int:
    """Run one pfdb command; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    from .config import debug_enabled

    try:
        debug = "--debug" in argv or debug_enabled()
    except PfdbError as exc:  # PFDB_DEBUG=banana: a configuration error like any other
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    try:
        from . import cli_spec

        options, args = _split_globals(argv)
        if (not args and not options.get("version")) or (args and args[0] in ("-h", "--help", "help")):
            summary = inspect.cleandoc(PfdbCLI.__doc__ or "").splitlines()[0]
            print(cli_spec.main_help(summary, list(command_specs().values())))
            return EXIT_OK
        if options.get("version"):
            from . import __version__

            print(f"pfdb {__version__}")
            return EXIT_OK
        spec = command_spec(args[0])
        if spec is None:
            what = "option" if args[0].startswith("-") else "command"
            names = list(_method_names())
            raise UsageError(
                f"unknown {what} {args[0]!r}{cli_spec.suggest(args[0], names)}", hint=f"commands: {', '.join(names)}"
            )
        rest = args[1:]
        if "--help" in rest or "-h" in rest:
            print(cli_spec.command_help(spec))
            return EXIT_OK
        values = cli_spec.parse(spec, rest)
        from .config import tenant_setting

        tenant = options.get("tenant", tenant_setting())
        if tenant is not None:
            from .tenants import validate_name

            tenant = validate_name(tenant)  # before anything connects: a bad name is a usage error
        cli = PfdbCLI(options.get("database_url"), tenant)
        cli._command = spec.method
        fire = _import_fire()

        method = getattr(PfdbCLI, spec.method)
        method.FIRE_METADATA = _dispatch_metadata(spec)
        fire_args = [f"--{name}={value}" for name, value in values.items()]
        try:
            with cli._scope:
                fire.Fire(cli, command=[spec.method, *fire_args], name="pfdb")
        finally:
            del method.FIRE_METADATA
        return EXIT_OK
    except Exit as verdict:
        return verdict.code
    except PfdbError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader had enough (pfdb export | head): stop quietly, exit 1
        _silence_stdout()
        return EXIT_FAILED
    except SystemExit as exc:  # Fire's own usage errors
        code = exc.code if isinstance(exc.code, int) else EXIT_USAGE
        return EXIT_USAGE if code not in (0, None) else EXIT_OK
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for a traceback)", file=sys.stderr)
        return EXIT_FAILED


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's final flush does not fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, AttributeError, ValueError):  # not a real file (captured in tests)
        pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
