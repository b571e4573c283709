"""004_tenant_registry: the registry of tenants (name, server, schema version, created, state).

Written by hand. The registry is the main database's own (``pfdb.models.Tenant``, outside
``MODELS``), so it is made with SQL instead of ``create_model``: model drift checks and
``pfdb copy`` keep to the tables every pfdb database (and every tenant) has. A tenant's
schema or file gets an empty copy, since tenants run the same migrations; only the main
database's is read. Timestamps are ``timestamptz`` on PostgreSQL, like every table since 003.
"""

import peewee as pw
from peewee_migrate import Migrator

POSTGRESQL = (
    'CREATE TABLE IF NOT EXISTS "tenants" ("id" SERIAL NOT NULL PRIMARY KEY, "created_at" timestamptz NOT NULL, '
    '"updated_at" timestamptz NOT NULL, "name" VARCHAR(40) NOT NULL, "server" VARCHAR(63) NOT NULL, '
    '"schema_version" VARCHAR(255), "state" VARCHAR(16) NOT NULL)'
)
SQLITE = (
    'CREATE TABLE IF NOT EXISTS "tenants" ("id" INTEGER NOT NULL PRIMARY KEY, "created_at" DATETIME NOT NULL, '
    '"updated_at" DATETIME NOT NULL, "name" VARCHAR(40) NOT NULL, "server" VARCHAR(63) NOT NULL, '
    '"schema_version" VARCHAR(255), "state" VARCHAR(16) NOT NULL)'
)
# pfdb lint: the index is built on the table the step has just created, empty: nothing waits on it.
LINT_ACKNOWLEDGED = {"add_index tenants": "a new, empty table: its index is built at once"}
INDEX = 'CREATE UNIQUE INDEX IF NOT EXISTS "tenants_name" ON "tenants" ("name")'


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """Create the empty tenants table and its unique name index."""
    migrator.sql(POSTGRESQL if isinstance(database, pw.PostgresqlDatabase) else SQLITE)
    migrator.sql(INDEX)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """Drop the registry, only while it is empty: a registered tenant's data would be orphaned.

    Run directly, not queued with ``migrator.sql``: an empty table is no data to lose, so the
    rollback is not destructive, and a table with rows makes it fail (and change nothing).
    """
    if fake:
        return
    row = database.execute_sql('SELECT count(*) FROM "tenants"').fetchone()
    if row and row[0]:
        raise RuntimeError(f"{row[0]} tenant(s) are registered: drop them (pfdb tenant drop) before rolling back 004")
    database.execute_sql('DROP TABLE IF EXISTS "tenants"')
