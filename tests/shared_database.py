"""The shared PostgreSQL test database: one migrated copy of the template, put back after each test.

``CREATE DATABASE … TEMPLATE`` costs about half a second here (PostgreSQL writes and flushes a
whole copy), emptying a database a tenth of that. So ordinary PostgreSQL tests share one
database, and after each of them :meth:`SharedDatabase.reset` returns it to the template's
exact state:

1. End every session still connected to it (pfdb's pool is closed first by the caller): a
   writer process left behind, or a connection the test opened itself, would make TRUNCATE
   wait for its locks.
2. Compare a fingerprint of the schema with the template's: relations, columns and defaults,
   indexes, constraints, sequence definitions, triggers, functions, types, extensions, views,
   rules and database settings. A test that rolled back, restored another schema, dropped or
   created a table, or altered a sequence leaves another fingerprint, and the database is then
   swapped for a fresh copy of the template, so the safe outcome needs no cooperation from tests.
   Schemas the template lacks (tenants') are dropped first; only what differs after that costs
   a copy. A quick look at the catalogs decides whether the fingerprint needs computing at all.
3. Otherwise empty the tables that hold rows, load back the template's own rows (the migration
   history) where they changed, and set every sequence back to the template's position.

An *empty* shared database (``empty=True``, for ``empty_url``) has a template with no tables at
all, so a test that migrated it changed its schema by design: the reset then drops the
template's schemas (``public``) with everything in them and makes them again, with the owner and
privileges they had, instead of creating a new database. Privileges on the schemas and on the
database itself are compared too, since the fingerprint does not see them.

Emptying is ``DELETE`` in foreign-key order (children first): for the few rows a test writes it
costs a sixth of ``TRUNCATE``, which makes and unlinks new files for every table and index
(37 ms against 215 ms measured here on a busy machine). ``TRUNCATE … RESTART IDENTITY CASCADE``
takes over when a DELETE fails (a cycle of RESTRICT keys) or when the schema has triggers or
rules, which a DELETE would fire.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import psycopg2
from psycopg2 import sql

# The resets' own session, kept between tests, names itself so that tests counting a database's
# sessions can leave it out.
RESET_APPLICATION = "pfdb-test-reset"

# Schemas that belong to PostgreSQL itself; everything else in the database is the test's to change.
_USER_SCHEMAS = """
    SELECT oid, nspname FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema')
      AND nspname NOT LIKE 'pg\\_toast%' AND nspname NOT LIKE 'pg\\_temp\\_%'
"""

# One line per schema object, hashed: one round trip of a few milliseconds. Names and
# definitions only (no OIDs), so a restore that recreates the same schema still matches.
FINGERPRINT = f"""
WITH ns AS ({_USER_SCHEMAS})
SELECT md5(coalesce(string_agg(line, E'\\n' ORDER BY line), '')) FROM (
    SELECT 'schema ' || nspname FROM ns
  UNION ALL
    SELECT format('relation %s.%s %s %s', ns.nspname, c.relname, c.relkind, c.relpersistence)
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
  UNION ALL
    SELECT format('column %s.%s %s %s %s %s %s %s', ns.nspname, c.relname, a.attnum, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull, a.attidentity, pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN ns ON ns.oid = c.relnamespace
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE a.attnum > 0 AND NOT a.attisdropped
  UNION ALL
    SELECT 'index ' || indexdef FROM pg_indexes WHERE schemaname IN (SELECT nspname FROM ns)
  UNION ALL
    SELECT format('constraint %s %s %s', co.conrelid::regclass, co.conname, pg_get_constraintdef(co.oid))
    FROM pg_constraint co JOIN ns ON ns.oid = co.connamespace
  UNION ALL
    SELECT format('sequence %s.%s %s %s %s %s %s %s %s', schemaname, sequencename, data_type, start_value,
                  min_value, max_value, increment_by, cycle, cache_size)
    FROM pg_sequences
  UNION ALL
    SELECT 'trigger ' || pg_get_triggerdef(t.oid)
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON ns.oid = c.relnamespace
    WHERE NOT t.tgisinternal
  UNION ALL
    SELECT format('function %s %s', p.oid::regprocedure, md5(p.prosrc))
    FROM pg_proc p JOIN ns ON ns.oid = p.pronamespace
  UNION ALL
    SELECT format('type %s.%s %s', ns.nspname, t.typname, t.typtype) FROM pg_type t JOIN ns ON ns.oid = t.typnamespace
  UNION ALL
    SELECT format('enum %s %s %s', enumtypid::regtype, enumsortorder, enumlabel) FROM pg_enum
  UNION ALL
    SELECT format('view %s %s', c.oid::regclass, pg_get_viewdef(c.oid))
    FROM pg_class c JOIN ns ON ns.oid = c.relnamespace WHERE c.relkind IN ('v', 'm')
  UNION ALL
    SELECT format('rule %s', definition) FROM pg_rules WHERE schemaname IN (SELECT nspname FROM ns)
  UNION ALL
    SELECT format('extension %s %s', extname, extversion) FROM pg_extension
  UNION ALL
    SELECT 'setting ' || array_to_string(setconfig, ',') FROM pg_db_role_setting
    WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())
) AS lines(line)
"""

# The catalogs the fingerprint reads, each as (rows, sum of their xmins). A committed change adds,
# removes or replaces row versions, and a new version carries another transaction's id, so an
# unchanged answer means an unchanged schema, whatever order transactions commit in: 1-2 ms
# against the fingerprint's 8 ms, which then runs only when this moved. The two large catalogs
# are read for user objects only (OIDs from 16384 on, through their indexes): the fingerprint
# sees no others.
_CATALOGS = (
    "pg_namespace", "pg_class", "pg_attribute WHERE attrelid >= 16384", "pg_attrdef", "pg_index",
    "pg_constraint", "pg_sequence", "pg_trigger", "pg_proc WHERE oid >= 16384", "pg_type", "pg_enum",
    "pg_rewrite", "pg_extension",
    "pg_db_role_setting WHERE setdatabase = (SELECT oid FROM pg_database WHERE datname = current_database())",
)  # fmt: skip
CATALOG_STATE = "SELECT ARRAY[{}]".format(
    ", ".join(f"(SELECT ARRAY[count(*), coalesce(sum(xmin::text::bigint), 0)] FROM {c})" for c in _CATALOGS)
)

TABLES = f"""
WITH ns AS ({_USER_SCHEMAS})
SELECT ns.nspname, c.relname FROM pg_class c JOIN ns ON ns.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') ORDER BY 1, 2
"""

SEQUENCES = "SELECT schemaname, sequencename, last_value FROM pg_sequences ORDER BY 1, 2"

FOREIGN_KEYS = """
SELECT cn.nspname, c.relname, pn.nspname, p.relname
FROM pg_constraint co
JOIN pg_class c ON c.oid = co.conrelid JOIN pg_namespace cn ON cn.oid = c.relnamespace
JOIN pg_class p ON p.oid = co.confrelid JOIN pg_namespace pn ON pn.oid = p.relnamespace
WHERE co.contype = 'f'
"""

# A DELETE fires these (TRUNCATE does not fire row triggers, and rules do not apply to it).
TRIGGERS_OR_RULES = f"""
WITH ns AS ({_USER_SCHEMAS})
SELECT EXISTS (SELECT FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN ns ON ns.oid = c.relnamespace
               WHERE NOT t.tgisinternal)
    OR EXISTS (SELECT FROM pg_rules WHERE schemaname IN (SELECT nspname FROM ns))
"""


# Owner and privileges of each user schema and of the database: what a schema dropped and made
# again must get back, and what a test may have granted.
PRIVILEGES = f"""
WITH ns AS ({_USER_SCHEMAS})
SELECT 'schema', n.nspname, pg_get_userbyid(n.nspowner), n.nspacl::text FROM pg_namespace n JOIN ns ON ns.oid = n.oid
UNION ALL
SELECT 'database', datname, pg_get_userbyid(datdba), datacl::text FROM pg_database WHERE datname = current_database()
ORDER BY 1, 2
"""

# A schema's privileges as GRANT statements' parts (grantee 0 is PUBLIC).
SCHEMA_GRANTS = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
       a.privilege_type, a.is_grantable
FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = %s AND a.grantee <> n.nspowner
"""


def fingerprint(cur) -> str:
    cur.execute(FINGERPRINT)
    return cur.fetchone()[0]


def catalog_state(cur) -> list:
    cur.execute(CATALOG_STATE)
    return cur.fetchone()[0]


def fingerprint_and_catalogs(cur) -> tuple[str, list]:
    """Both in one statement, so that the catalog state recorded is the one the fingerprint saw."""
    cur.execute(f"SELECT ({FINGERPRINT}), ({CATALOG_STATE})")
    return cur.fetchone()


def children_first(tables: list[tuple[str, str]], keys: list[tuple[tuple[str, str], tuple[str, str]]]) -> list:
    """Tables ordered so that each comes before the tables it references (self-references aside)."""
    order: list[tuple[str, str]] = []
    remaining = list(tables)
    while remaining:
        ready = [
            t for t in remaining if not any(parent == t and child != t and child not in order for child, parent in keys)
        ]
        if not ready:  # a cycle: any order; a failing DELETE hands over to TRUNCATE
            return order + remaining
        order += ready
        remaining = [t for t in remaining if t not in ready]
    return order


def _copy_out(cur, table: tuple[str, str]) -> bytes:
    buffer = io.BytesIO()
    cur.copy_expert(sql.SQL("COPY {} TO STDOUT").format(sql.Identifier(*table)).as_string(cur), buffer)
    return buffer.getvalue()


class SharedDatabase:
    """One migrated database for the session's ordinary PostgreSQL tests.

    ``create`` makes a fresh migrated copy (the server's copier), ``discard`` drops one in the
    background, ``url_of`` turns a name into a URL. The template's state is read from the first
    copy, never from the template itself: a session connected to the template would make every
    later ``CREATE DATABASE … TEMPLATE`` fail.
    """

    def __init__(
        self,
        create: Callable[[], str],
        discard: Callable[[str], None],
        url_of: Callable[[str], str],
        *,
        empty: bool = False,
    ):
        self._create, self._discard, self._url_of = create, discard, url_of
        self.empty = empty  # the template has no objects: its schemas are dropped and made again
        self._privileges: list = []  # PRIVILEGES of the template
        self._schema_grants: dict[str, list] = {}  # the template's grants per schema (empty databases)
        self.name: str | None = None
        self.replaced_after: list[str] = []  # tests after which the database had to be replaced
        self._fingerprint = ""
        self._schemas: set[str] = set()  # the template's user schemas
        self._catalogs: list = []  # catalog_state() when the schema last matched the fingerprint
        self._tables: list[tuple[str, str]] = []  # (schema, table)
        self._seeds: dict[tuple[str, str], bytes] = {}  # the template's rows, per table that has any
        self._sequences: dict[str, tuple[int, bool]] = {}  # the template's (last_value, is_called) per sequence
        self._sequence_state: sql.Composed | None = None  # the query that reads them
        self._delete_order: list[tuple[str, str]] = []  # children first
        self._truncate_only = False  # the schema has triggers or rules that a DELETE would fire
        self._conn = None  # the resets' own session, kept between tests (see _session)

    def acquire(self) -> str:
        """The name of the shared database, clean and migrated."""
        if self.name is None:
            self.name = self._create()
            self._snapshot()
        return self.name

    def _session(self):
        """The resets' connection to the shared database, opened once and kept.

        A new session per reset cost a server process and a cold catalog cache each time: the
        fingerprint alone took 14 ms in a new session against 6 ms in a warm one. The reset
        ends every *other* session, so this one outlives the tests; one a test killed is
        replaced here.
        """
        conn = self._conn
        if conn is not None and not conn.closed:
            try:
                conn.autocommit = True
                with conn.cursor() as cur:
                    cur.execute("SELECT 1")
                return conn
            except psycopg2.Error:
                self.close()
        conn = psycopg2.connect(self._url_of(self.name), connect_timeout=10, application_name=RESET_APPLICATION)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SET lock_timeout = '10s'")
        self._conn = conn
        return conn

    def close(self) -> None:
        """Close the resets' session (before the database is dropped or replaced)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _snapshot(self) -> None:
        conn = self._session()
        with conn.cursor() as cur:
            self._fingerprint, self._catalogs = fingerprint_and_catalogs(cur)
            cur.execute(_USER_SCHEMAS)
            self._schemas = {name for _, name in cur.fetchall()}
            cur.execute(TABLES)
            self._tables = [(schema, table) for schema, table in cur.fetchall()]
            self._seeds = {}
            for table in self._tables:
                cur.execute(sql.SQL("SELECT EXISTS (SELECT FROM {})").format(sql.Identifier(*table)))
                if cur.fetchone()[0]:
                    self._seeds[table] = _copy_out(cur, table)
            cur.execute("SELECT schemaname, sequencename FROM pg_sequences ORDER BY 1, 2")
            names = [sql.Identifier(schema, name) for schema, name in cur.fetchall()]
            self._sequence_state = (
                sql.SQL(" UNION ALL ").join(
                    sql.SQL("SELECT {}, last_value, is_called FROM {}").format(sql.Literal(n.as_string(cur)), n)
                    for n in names
                )
                if names
                else None
            )
            self._sequences = self._sequence_positions(cur)
            cur.execute(FOREIGN_KEYS)
            keys = [((cs, ct), (ps, pt)) for cs, ct, ps, pt in cur.fetchall()]
            self._delete_order = children_first(self._tables, keys)
            cur.execute(TRIGGERS_OR_RULES)
            self._truncate_only = cur.fetchone()[0]
            if self.empty:
                if self._tables or self._sequence_state is not None:
                    raise ValueError("an empty shared database's template must have no tables or sequences")
                cur.execute(PRIVILEGES)
                self._privileges = cur.fetchall()
                for schema in self._schemas:
                    cur.execute(SCHEMA_GRANTS, (schema,))
                    self._schema_grants[schema] = cur.fetchall()

    def reset(self, test: str = "") -> bool:
        """Put the shared database back into the template's state (True), or replace it by a fresh copy (False)."""
        if self.name is None:
            return True
        try:
            if self._reset():
                return True
        except Exception:  # a lock that did not come free, a dropped database: never hand it out half-reset
            pass
        self.replaced_after.append(test)
        self.replace()
        return False

    def replace(self) -> None:
        """Drop the shared database (in the background) and take a fresh copy of the template."""
        old, self.name = self.name, None
        self.close()
        if old is not None:
            self._discard(old)
        self.name = self._create()

    def _reset(self) -> bool:
        conn = self._session()
        try:
            with conn.cursor() as cur:
                # PostgreSQL 14+ waits (up to 5 s) for the backend to be gone, so its locks are too.
                terminate = (
                    "pg_terminate_backend(pid, 5000)" if conn.server_version >= 140000 else "pg_terminate_backend(pid)"
                )
                cur.execute(
                    f"SELECT {terminate} FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                )
                if catalog_state(cur) != self._catalogs and not self._schema_is_the_template_s(cur):
                    return False
                if self.empty and not self._privileges_are_the_template_s(cur):
                    return False
                dirty = self._changed_tables(cur)
                conn.autocommit = False
                # Visibility does not wait for the WAL flush; durability of a test database is not needed.
                cur.execute("SET LOCAL synchronous_commit = off")
                if dirty:
                    self._empty(conn, cur, dirty)
                    for table in reversed(self._delete_order):  # parents first, for their keys
                        if table in dirty and table in self._seeds:
                            copy = sql.SQL("COPY {} FROM STDIN").format(sql.Identifier(*table))
                            cur.copy_expert(copy.as_string(cur), io.BytesIO(self._seeds[table]))
                self._reset_sequences(cur)
                conn.commit()
            return True
        except BaseException:
            self.close()  # never reuse a session left in a failed transaction
            raise

    def _schema_is_the_template_s(self, cur) -> bool:
        """The fingerprint, once schemas the template lacks (a tenant's, say) are dropped.

        A tenant is a schema of its own beside pfdb's tables: dropping it is far cheaper than a
        new copy of the template, and tests that create tenants can share the database. The
        catalog state read with a matching fingerprint is the one the quick check compares next.
        """
        found, catalogs = fingerprint_and_catalogs(cur)
        if found != self._fingerprint:
            cur.execute(_USER_SCHEMAS)
            extra = sorted(name for _, name in cur.fetchall() if name not in self._schemas)
            if self.empty:
                self._make_schemas_again(cur)
            elif extra:
                cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, extra))))
            else:
                return False
            found, catalogs = fingerprint_and_catalogs(cur)
            if found != self._fingerprint:
                return False
        self._catalogs = catalogs
        return True

    def _privileges_are_the_template_s(self, cur) -> bool:
        """Privileges a test granted on a schema are undone by making it again; on the database, they cannot be."""
        cur.execute(PRIVILEGES)
        if cur.fetchall() == self._privileges:
            return True
        self._make_schemas_again(cur)
        cur.execute(PRIVILEGES)
        if cur.fetchall() != self._privileges:
            return False
        found, self._catalogs = fingerprint_and_catalogs(cur)
        return found == self._fingerprint

    def _make_schemas_again(self, cur) -> None:
        """Every user schema dropped with what is in it; the template's made again as they were."""
        cur.execute(_USER_SCHEMAS)
        names = sorted(name for _, name in cur.fetchall())
        if names:
            cur.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.SQL(", ").join(map(sql.Identifier, names))))
        owners = {name: owner for kind, name, owner, _ in self._privileges if kind == "schema"}
        for schema in sorted(self._schemas):
            cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
            cur.execute(
                sql.SQL("ALTER SCHEMA {} OWNER TO {}").format(sql.Identifier(schema), sql.Identifier(owners[schema]))
            )
            for grantee, privilege, grantable in self._schema_grants[schema]:
                cur.execute(
                    sql.SQL("GRANT {} ON SCHEMA {} TO {}{}").format(
                        sql.SQL(privilege),
                        sql.Identifier(schema),
                        sql.SQL(grantee),  # already quoted, or PUBLIC
                        sql.SQL(" WITH GRANT OPTION" if grantable else ""),
                    )
                )

    def _empty(self, conn, cur, tables: list[tuple[str, str]]) -> None:
        if not self._truncate_only:
            try:
                for table in self._delete_order:
                    if table in tables:
                        cur.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(*table)))
                return
            except psycopg2.Error:
                conn.rollback()
                cur.execute("SET LOCAL synchronous_commit = off")
        names = sql.SQL(", ").join(sql.Identifier(*table) for table in tables)
        cur.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY CASCADE").format(names))
        self._catalogs = []  # new files for each table are catalog changes: the next reset fingerprints

    def _changed_tables(self, cur) -> list[tuple[str, str]]:
        """Tables whose rows differ from the template's: any row at all, or other seed rows."""
        empty = [t for t in self._tables if t not in self._seeds]
        changed = []
        if empty:
            probes = sql.SQL(", ").join(sql.SQL("EXISTS (SELECT FROM {})").format(sql.Identifier(*t)) for t in empty)
            cur.execute(sql.SQL("SELECT {}").format(probes))
            changed = [t for t, filled in zip(empty, cur.fetchone(), strict=True) if filled]
        changed += [t for t, rows in self._seeds.items() if _copy_out(cur, t) != rows]
        return changed

    def _sequence_positions(self, cur) -> dict[str, tuple[int, bool]]:
        if self._sequence_state is None:  # no sequences at all
            return {}
        cur.execute(self._sequence_state)
        return {name: (value, called) for name, value, called in cur.fetchall()}

    def _reset_sequences(self, cur) -> None:
        """Every sequence back to the template's position: DELETE leaves them where the test left them.

        Read from the sequences themselves: ``pg_sequences`` shows no position for a sequence
        not yet used, and a test may have moved one without using it (``setval(…, false)``).
        ``setval`` puts back both the value and whether it was used, with no catalog change.
        """
        for name, position in self._sequence_positions(cur).items():
            if position != self._sequences.get(name):
                cur.execute("SELECT setval(%s::regclass, %s, %s)", (name, *self._sequences[name]))
