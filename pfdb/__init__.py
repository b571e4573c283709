"""pfdb: the embeddable database of a product-feed integration system.

    from pfdb import init_database, db_session_scope
    from pfdb.models import Product

Importing pfdb reads no environment, opens no connection and creates no file:
``init_database()`` does that.
"""

from . import tenants  # noqa: E402  (pfdb.tenants: list, create, drop, move)
from ._peewee import peewee as _peewee  # noqa: F401  (first: keeps psycopg2 unloaded on SQLite)
from .database import (
    close_database,
    db,
    db_read_scope,
    db_session_scope,
    for_update,
    get_database,
    session_scope,
)
from .errors import (
    BackupError,
    ConfigError,
    ConnectionLostError,
    CopyError,
    DatabaseBusyError,
    DatabaseNotInitialisedError,
    DatabaseUnavailableError,
    DestructiveRollbackError,
    DuplicateError,
    FeedError,
    MigrationBlockedError,
    MigrationError,
    MigrationLockTimeout,
    NotFoundError,
    PfdbError,
    PoolExhaustedError,
    RestoreError,
    SchemaMissingError,
    ServerInRecoveryError,
    TenantError,
    UnsafePathError,
    UsageError,
    ValidationError,
)

# The application layer: init_database applies MIGRATION_AUTO_UPGRADE, the health check reads the
# migration state, and importing it gives pfdb.migrations its backup-before-change hook.
from .lifecycle import database_health_check, init_database, rehearse_migrations
from .models import (
    MODELS,
    Category,
    Configuration,
    Icon,
    Job,
    Product,
    ProductImage,
    SyncHistory,
    SystemLog,
    Tenant,
    User,
)
from .replicas import primary, replica
from .tenants import tenant

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "BackupError",
    "Category",
    "ConfigError",
    "Configuration",
    "ConnectionLostError",
    "CopyError",
    "DatabaseBusyError",
    "DatabaseNotInitialisedError",
    "DatabaseUnavailableError",
    "DestructiveRollbackError",
    "DuplicateError",
    "FeedError",
    "Icon",
    "Job",
    "MigrationBlockedError",
    "MigrationError",
    "MigrationLockTimeout",
    "NotFoundError",
    "PfdbError",
    "PoolExhaustedError",
    "Product",
    "ProductImage",
    "RestoreError",
    "SchemaMissingError",
    "ServerInRecoveryError",
    "SyncHistory",
    "SystemLog",
    "Tenant",
    "TenantError",
    "UnsafePathError",
    "UsageError",
    "User",
    "ValidationError",
    "close_database",
    "database_health_check",
    "db",
    "db_read_scope",
    "db_session_scope",
    "for_update",
    "get_database",
    "init_database",
    "primary",
    "rehearse_migrations",
    "replica",
    "session_scope",
    "tenant",
    "tenants",
]
