"""003_postgres_jsonb_timestamptz: on PostgreSQL, JSON columns become jsonb and timestamps timestamptz.

Written by hand. pfdb's JSON fields were ``text`` on PostgreSQL, so ``attributes->'tags'``
failed, and its timestamps ``timestamp without time zone`` although pfdb stores UTC. Each
table is altered in one statement (one rewrite), in the step's transaction: every row is
kept, or nothing changes.

* JSON: ``USING col::jsonb``. A value that is not JSON (written by raw SQL) or a string
  holding ``\\u0000`` (jsonb cannot keep it) fails the migration, which then changes nothing.
* Timestamps: the stored values are UTC, so ``col AT TIME ZONE 'UTC'`` names that
  explicitly (it does not depend on the session's TimeZone); back: the same, reversed.
* Rollback turns jsonb back into text: the same JSON values, in jsonb's own spelling
  (keys ordered by length, then bytes), which pfdb reads back identically.

SQLite stores both as before (JSON text; timestamps as UTC text): nothing to do there.
The models keep plain ``TextField``/``DateTimeField`` bases, so ``pfdb check`` sees no drift.
"""

import peewee as pw
from peewee_migrate import Migrator

# pfdb lint: each table is rewritten once under an ACCESS EXCLUSIVE lock; a one-off type fix the
# running version is compatible with (it reads and writes the same values).
LINT_ACKNOWLEDGED = {
    "change_column_type *": "one rewrite per table; values unchanged for the running version; "
    "on a large database apply it in a quiet window",
}
# Listed here, not read from the models: a migration describes the schema as it was.
TIMESTAMPS = {
    "users": ("created_at", "updated_at", "last_login_at"),
    "categories": ("created_at", "updated_at", "shopify_synced_at"),
    "products": ("created_at", "updated_at", "shopify_synced_at"),
    "product_images": ("created_at", "updated_at"),
    "icons": ("created_at", "updated_at", "synced_at"),
    "jobs": ("created_at", "updated_at", "started_at", "completed_at"),
    "sync_history": ("created_at", "updated_at", "started_at", "completed_at"),
    "system_logs": ("created_at", "updated_at"),
    "configuration": ("created_at", "updated_at"),
}
JSON = {
    "products": ("attributes",),
    "icons": ("generation",),
    "jobs": ("parameters", "result"),
    "sync_history": ("error_details",),
    "system_logs": ("extra",),
}


def _alter(json_type: str, json_using: str, time_type: str) -> list[str]:
    statements = []
    for table in TIMESTAMPS:
        clauses = [f'ALTER COLUMN "{c}" TYPE {json_type} USING "{c}"{json_using}' for c in JSON.get(table, ())]
        clauses += [f'ALTER COLUMN "{c}" TYPE {time_type} USING "{c}" AT TIME ZONE \'UTC\'' for c in TIMESTAMPS[table]]
        statements.append(f'ALTER TABLE "{table}" ' + ", ".join(clauses))
    return statements


def migrate(migrator: Migrator, database: pw.Database, *, fake=False):
    """PostgreSQL: JSON columns to jsonb, timestamps to timestamptz (UTC). SQLite: nothing."""
    if isinstance(database, pw.PostgresqlDatabase):
        for statement in _alter("jsonb", "::jsonb", "timestamptz"):
            migrator.sql(statement)


def rollback(migrator: Migrator, database: pw.Database, *, fake=False):
    """PostgreSQL: back to text and timestamp without time zone (UTC). SQLite: nothing."""
    if isinstance(database, pw.PostgresqlDatabase):
        for statement in _alter("text", "::text", "timestamp"):
            migrator.sql(statement)
