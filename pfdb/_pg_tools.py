"""PostgreSQL backup, restore, info and optimize through the real ``pg_dump``/``pg_restore``.

Connection details reach the tools through libpq's environment variables, never argv:
other users can read a process's argv (``ps``), and the password belongs in
``PGPASSWORD``. Every message that quotes a tool's output has the password masked.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from . import _files
from .config import DatabaseURL, mask_secrets
from .errors import BackupError, PfdbError, RestoreError
from .migrations import HISTORY_TABLE
from .text import first_line, quote_identifier

RESTORE_ATTEMPTS = 3
SQLITE_HEADER = b"SQLite format 3\x00"
# Debian/Ubuntu install each client version here; /usr/bin/pg_dump may be another version.
VERSIONED_BIN_DIRS = ("/usr/lib/postgresql/{major}/bin",)
SETTINGS = (
    "server_version",
    "max_connections",
    "shared_buffers",
    "work_mem",
    "maintenance_work_mem",
    "effective_cache_size",
    "timezone",
    "statement_timeout",
    "lock_timeout",
)
# DATABASE_URL query options libpq also reads from the environment
_OPTION_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "application_name": "PGAPPNAME",
    "options": "PGOPTIONS",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
    "password": "PGPASSWORD",
}


def tool_env(url: DatabaseURL, *, lock_timeout: float | None = None) -> dict[str, str]:
    """The environment for a libpq tool: connection parameters and password as PG* variables."""
    env = dict(os.environ)
    for key, value in url.options.items():
        if key in _OPTION_ENV:
            env[_OPTION_ENV[key]] = str(value)
    for var, value in (
        ("PGHOST", url.host),
        ("PGPORT", url.port),
        ("PGUSER", url.user),
        ("PGDATABASE", url.database),
        ("PGPASSWORD", url.password),
    ):
        if value is not None:
            env[var] = str(value)
    if lock_timeout:
        # A restore must not queue forever behind another session's lock.
        env["PGOPTIONS"] = f"{env.get('PGOPTIONS', '')} -c lock_timeout={int(lock_timeout * 1000)}".strip()
    return env


def _mask(text: str, url: DatabaseURL) -> str:
    return mask_secrets(text.strip(), url)


def _major(version_text: str) -> int | None:
    match = re.search(r"\)\s*(\d+)", version_text) or re.search(r"(\d+)", version_text)
    return int(match.group(1)) if match else None


def server_major(database: Any) -> int:
    return int(database.execute_sql("SHOW server_version_num").fetchone()[0]) // 10000


_found: dict[tuple, str] = {}  # (tool, server major, candidates) -> the binary that fits


def find_tool(name: str, server: int, error: type[PfdbError]) -> str:
    """The ``name`` binary that can talk to a server of major version ``server``.

    pg_dump refuses servers newer than itself, so a version-matched Debian client is
    preferred over an older one on PATH. Raises ``error`` saying what to install.
    """
    install = f"install postgresql-client-{server} (apt-get install postgresql-client-{server})"
    candidates = [str(Path(d.format(major=server)) / name) for d in VERSIONED_BIN_DIRS]
    on_path = shutil.which(name)
    if on_path:
        candidates.append(on_path)
    key = (name, server, tuple(candidates))
    if key in _found:
        return _found[key]
    found = []
    for candidate in candidates:
        if not os.access(candidate, os.X_OK):
            continue
        try:
            out = subprocess.run([candidate, "--version"], capture_output=True, text=True, timeout=30).stdout
        except OSError:
            continue
        major = _major(out)
        if major is not None and major >= server:
            _found[key] = candidate
            return candidate
        found.append(major)
    if not found:
        raise error(f"{name} was not found on PATH; it is needed for PostgreSQL backups and restores", hint=install)
    raise error(
        f"{name} {found[0]} cannot {'dump' if name == 'pg_dump' else 'restore into'} a server of version {server}",
        hint=install,
    )


def _run(args: list[str], url: DatabaseURL, error: type[PfdbError], what: str, **kwargs: Any) -> str:
    try:
        # child_guard: the tool ends with pfdb; a pg_restore outliving a killed pfdb would
        # still replace the data after the operator saw the command die.
        proc = subprocess.run(
            args,
            capture_output=True,
            text=True,
            env=kwargs.pop("env", None) or tool_env(url),
            **_files.child_guard(),
            **kwargs,
        )
    except OSError as exc:
        raise error(f"cannot run {args[0]}: {exc.strerror}", hint="install the PostgreSQL client tools") from exc
    if proc.returncode != 0:
        message = _mask(proc.stderr, url) or f"exit code {proc.returncode}"
        hint = None
        if "version mismatch" in message:
            hint = "install the postgresql-client package of the server's major version"
        raise error(f"{what} failed: {first_line(message)}", hint=hint)
    return proc.stdout


def _conninfo(url: DatabaseURL) -> str:
    """``dbname='…'`` for --dbname: a name holding ``=`` would otherwise parse as a conninfo."""
    name = (url.database or "").replace("\\", "\\\\").replace("'", "\\'")
    return f"dbname='{name}'"


def backup(database: Any, url: DatabaseURL, target: Path, *, schema: str | None = None) -> None:
    """``pg_dump -Fc`` of the whole database into ``target``, or of one tenant's ``schema`` only."""
    pg_dump = find_tool("pg_dump", server_major(database), BackupError)
    # A tenant's backup holds its schema only; the main database's leaves every tenant out.
    only = [f"--schema={quote_identifier(schema)}"] if schema else [f"--exclude-schema={TENANT_SCHEMAS}"]
    _run(
        [pg_dump, "--format=custom", "--no-password", *only, f"--file={target}", f"--dbname={_conninfo(url)}"],
        url,
        BackupError,
        "pg_dump",
    )


TENANT_SCHEMAS = "tenant_*"  # pg_dump's pattern for pfdb.tenants.SCHEMA_PREFIX


def copy_into(database: Any, source: DatabaseURL, target: DatabaseURL, error: type[PfdbError]) -> None:
    """``pg_dump -Fc source | pg_restore`` into the empty database ``target`` (a rehearsal's scratch copy).

    ``database`` is a connection to ``source``, asked for the server version only. The dump
    reads one snapshot and takes no lock a reader or writer of ``source`` waits for.
    """
    major = server_major(database)
    pg_dump, pg_restore = find_tool("pg_dump", major, error), find_tool("pg_restore", major, error)
    dump = subprocess.Popen(
        [pg_dump, "--format=custom", "--no-password", f"--dbname={_conninfo(source)}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=tool_env(source),
        **_files.child_guard(),
    )
    try:
        restore = subprocess.run(
            [
                pg_restore,
                "--no-owner",
                "--no-privileges",
                "--exit-on-error",
                "--no-password",
                f"--dbname={_conninfo(target)}",
            ],
            stdin=dump.stdout,
            capture_output=True,
            text=True,
            env=tool_env(target),
            **_files.child_guard(),
        )
    finally:
        dump.stdout.close()
        dump_err = dump.stderr.read().decode("utf-8", "replace")
        dump.stderr.close()
        dump.wait()
    if dump.returncode != 0:
        raise error(f"pg_dump failed: {first_line(_mask(dump_err, source) or f'exit code {dump.returncode}')}")
    if restore.returncode != 0:
        message = _mask(restore.stderr, target) or f"exit code {restore.returncode}"
        raise error(f"pg_restore failed: {first_line(message)}")


# The COPY line pg_restore writes before the history table's rows (schema-qualified or not).
_HISTORY_COPY = re.compile(rf"COPY \S*{re.escape(HISTORY_TABLE)} \(([^)]*)\) FROM stdin;")


def _history_rows(path: Path, url: DatabaseURL, pg_restore: str, error: type[PfdbError]) -> list[str]:
    """The migration names in the dump's ``HISTORY_TABLE`` data, in id order."""
    script = _run(
        [pg_restore, "--data-only", f"--table={HISTORY_TABLE}", "--file=-", str(path)], url, error, f"reading {path}"
    )
    rows, columns, in_copy = [], [], False
    for line in script.splitlines():
        if not in_copy:
            match = _HISTORY_COPY.match(line)
            if match:
                columns, in_copy = [c.strip().strip('"') for c in match.group(1).split(",")], True
        elif line == "\\.":
            break
        else:
            values = line.split("\t")
            rows.append((int(values[columns.index("id")]), values[columns.index("name")]))
    return [name for _, name in sorted(rows)]


def last_migration(path: Path, url: DatabaseURL, database: Any, error: type[PfdbError]) -> str | None:
    names = _history_rows(path, url, find_tool("pg_restore", server_major(database), error), error)
    return names[-1] if names else None


def inspect_backup(
    path: Path, url: DatabaseURL, database: Any, *, schema: str | None = None
) -> tuple[str | None, set[str]]:
    """Check ``path`` is a whole pg_dump archive of a pfdb database (of tenant ``schema``, when given).

    A tenant's backup must hold that tenant's schema only, and the main database's no
    tenant's: pg_restore recreates each table in the schema it was dumped from.

    Returns (the migration names of the dump's history, oldest first; tables in the dump);
    raises ``RestoreError`` naming what is wrong.
    """
    with path.open("rb") as handle:
        head = handle.read(16)
    if head.startswith(SQLITE_HEADER):
        raise RestoreError(
            f"{path} is a SQLite database, not a PostgreSQL dump",
            hint="restore it into a SQLite database (DATABASE_URL=sqlite:///…)",
        )
    pg_restore = find_tool("pg_restore", server_major(database), RestoreError)
    try:
        toc = _run([pg_restore, "--list", str(path)], url, RestoreError, "pg_restore --list")
    except RestoreError as exc:
        if head.startswith(b"PGDMP"):  # the archive's magic: it is a dump, but not a whole one
            raise RestoreError(
                f"{path} is a truncated or damaged pg_dump archive ({exc.message})", hint="use an earlier backup"
            ) from None
        raise RestoreError(
            f"{path} is not a pg_dump custom-format archive ({exc.message})",
            hint="pass a file written by pfdb backup (pg_dump -Fc)",
        ) from None
    # "TABLE public products owner"; not "TABLE DATA public products owner" (that named "public")
    found = re.findall(r"^\d+;\s*\d+ \d+ TABLE (?!DATA )(\S+) (\S+) ", toc, flags=re.MULTILINE)
    tables = {table for _, table in found}
    schemas = {where for where, _ in found}
    if schema is not None and schemas - {schema}:
        raise RestoreError(
            f"{path} is not a backup of this tenant: it holds schema {', '.join(sorted(schemas - {schema}))}, "
            f"not {schema}",
            hint="restore it with --tenant set to the tenant it was taken from",
        )
    if schema is None and any(where.startswith(TENANT_SCHEMAS[:-1]) for where in schemas):
        raise RestoreError(
            f"{path} is a tenant's backup, not the main database's",
            hint="restore it with --tenant NAME (pfdb.tenant(name) in Python)",
        )
    if HISTORY_TABLE not in tables:
        raise RestoreError(
            f"{path} is a PostgreSQL dump but not of a pfdb database: it has no {HISTORY_TABLE} table",
            hint="pass a file written by pfdb backup",
        )
    # The table of contents sits at the start of the file; only reading every data block
    # proves the rest is there. A script to /dev/null reads them all and writes nothing.
    try:
        _run([pg_restore, f"--file={os.devnull}", str(path)], url, RestoreError, "pg_restore")
    except RestoreError as exc:
        raise RestoreError(
            f"{path} is a truncated or damaged pg_dump archive ({exc.message})", hint="use an earlier backup"
        ) from None
    return _history(path, url, pg_restore), tables


def _history(path: Path, url: DatabaseURL, pg_restore: str) -> list[str]:
    """The migration names a dump's history holds, oldest first (read from the archive, nothing restored)."""
    try:
        return _history_rows(path, url, pg_restore, RestoreError)
    except (ValueError, IndexError) as exc:  # a history table without pfdb's id and name columns
        raise RestoreError(
            f"{path} is not a pfdb backup: its {HISTORY_TABLE} table is not pfdb's ({exc})",
            hint="pass a file written by pfdb backup",
        ) from exc


def current_tables(database: Any) -> set[str]:
    sql = (
        "SELECT table_name FROM information_schema.tables "
        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
    )
    return {row[0] for row in database.execute_sql(sql).fetchall()}


def restore(
    path: Path,
    url: DatabaseURL,
    database: Any,
    *,
    lock_timeout: float,
    drop: set[str] = frozenset(),
    schema: str | None = None,
) -> None:
    """Restore ``path`` in one transaction that first drops ``drop``: all of it or none of it.

    ``drop`` are tables the backup does not know (a later migration made them): ``--clean``
    only drops what the dump holds, and cannot drop a table one of these still references.
    Dropping them in a transaction of their own left, if pfdb was killed before pg_restore
    ran, the old data without them. So pg_restore writes the archive as SQL
    (``--clean --if-exists``) and pfdb feeds it to ``psql`` between ``BEGIN``, the drops and
    ``COMMIT``, and sends ``COMMIT`` only after pg_restore has finished well: a failure or a
    kill anywhere (both tools die with pfdb) ends the session without it, and the server
    rolls everything back.
    """
    major = server_major(database)
    pg_restore = find_tool("pg_restore", major, RestoreError)
    psql = find_tool("psql", major, RestoreError)
    prefix = quote_identifier(schema) + "." if schema else ""  # psql's session has the default search_path
    drops = "".join(f"DROP TABLE IF EXISTS {prefix}{quote_identifier(t)} CASCADE;\n" for t in sorted(drop))
    env = tool_env(url, lock_timeout=lock_timeout)
    for attempt in range(1, RESTORE_ATTEMPTS + 1):
        try:
            _restore_once(pg_restore, psql, path, url, env, drops)
            return
        except RestoreError as exc:
            # pg_restore locks table after table as it drops them; a reader in another session
            # that holds one table while waiting for the next can deadlock with it. The server
            # then aborts one side; when that is the restore, its transaction rolled back whole,
            # so running it again is safe.
            if "deadlock detected" not in exc.message or attempt == RESTORE_ATTEMPTS:
                raise


def _restore_once(pg_restore: str, psql: str, path: Path, url: DatabaseURL, env: dict[str, str], drops: str) -> None:
    guard = _files.child_guard()
    # Their stderr goes to files: a pipe nobody reads while pfdb feeds psql could fill and stall both.
    with tempfile.TemporaryFile() as source_err, tempfile.TemporaryFile() as sink_err:
        try:
            source = subprocess.Popen(
                [pg_restore, "--clean", "--if-exists", "--file=-", str(path)],
                stdout=subprocess.PIPE,
                stderr=source_err,
                env=env,
                **guard,
            )
        except OSError as exc:
            raise RestoreError(
                f"cannot run {pg_restore}: {exc.strerror}", hint="install the PostgreSQL client tools"
            ) from exc
        try:
            sink = subprocess.Popen(
                [
                    psql,
                    "--no-psqlrc",
                    "--quiet",
                    "--no-password",
                    "--set=ON_ERROR_STOP=1",
                    f"--dbname={_conninfo(url)}",
                    "--file=-",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=sink_err,
                env=env,
                **guard,
            )
        except OSError as exc:
            source.kill()
            source.wait()
            raise RestoreError(
                f"cannot run {psql}: {exc.strerror}", hint="install the PostgreSQL client tools"
            ) from exc
        finished = False
        try:
            sink.stdin.write(b"BEGIN;\n" + drops.encode())
            while chunk := source.stdout.read(1 << 20):
                sink.stdin.write(chunk)
            finished = source.wait() == 0
            if finished:
                sink.stdin.write(b"COMMIT;\n")
        except BrokenPipeError:  # psql stopped at an error (ON_ERROR_STOP); its message says which
            pass
        finally:
            for stream in (source.stdout, sink.stdin):
                try:
                    stream.close()
                except BrokenPipeError:
                    pass
            if source.poll() is None:
                source.kill()
            source.wait()
            sink.wait()  # without COMMIT, psql's end of input ends the session: the server rolls back
        if sink.returncode == 0 and finished:
            return
        messages = []
        for handle in (sink_err, source_err):
            handle.seek(0)
            lines = handle.read().decode("utf-8", "replace").splitlines()
            messages += [line for line in lines if "ERROR:" in line or "FATAL:" in line or "error:" in line]
        first = re.sub(r"^psql:[^:]*:\d+: ", "", messages[0]) if messages else f"exit code {sink.returncode}"
        raise RestoreError(f"pg_restore failed: {_mask(first, url)}")


def database_size(database: Any) -> int:
    return int(database.execute_sql("SELECT pg_database_size(current_database())").fetchone()[0])


def info(database: Any) -> dict[str, Any]:
    """Server version, database size, main settings, row counts."""
    settings = {name: database.execute_sql(f"SHOW {name}").fetchone()[0] for name in SETTINGS}
    tables = sorted(current_tables(database))
    return {
        "server_version": settings["server_version"],
        "database_size": database_size(database),
        "settings": settings,
        "tables": {t: database.execute_sql(f'SELECT count(*) FROM "{t}"').fetchone()[0] for t in tables},
    }


def optimize(database: Any) -> list[str]:
    # VACUUM refuses to run inside a transaction block. peewee runs psycopg2 in autocommit
    # mode and only sends BEGIN for atomic(), so on a connection with no transaction open
    # this statement runs on its own, as VACUUM requires.
    database.execute_sql("VACUUM (ANALYZE)")
    return ["VACUUM (ANALYZE)"]
