"""Import peewee without importing psycopg2; bind the driver only when PostgreSQL is used.

peewee imports psycopg2 at module import if it is installed (about 10 ms and a C
extension), although most pfdb processes (the CLI on the SQLite default, embedded
scripts, tests) never talk to PostgreSQL. Every pfdb module imports peewee through
this one, so the first import hides psycopg2 from peewee; ``enable_psycopg2()`` gives
peewee the driver back the moment a PostgreSQL database is built.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def psycopg2_hidden() -> Iterator[None]:
    """Import modules that would load psycopg2 eagerly (peewee, peewee-migrate) without it.

    Nothing is hidden once psycopg2 is loaded: then there is nothing left to save.
    """
    saved = sys.modules.get("psycopg2", ...)
    if saved is not ... and saved is not None:
        yield
        return
    sys.modules["psycopg2"] = None  # type: ignore[assignment]  # makes `import psycopg2` fail
    try:
        yield
    finally:
        if saved is ...:
            del sys.modules["psycopg2"]
        else:
            sys.modules["psycopg2"] = saved


with psycopg2_hidden():
    import peewee

__all__ = ["peewee", "enable_psycopg2", "psycopg2_hidden"]


def enable_psycopg2() -> None:
    """Bind psycopg2 into peewee as peewee's own import would have."""
    if peewee.psycopg2 is not None:
        return
    try:
        import psycopg2
        from psycopg2 import extensions
        from psycopg2.extras import Json, register_uuid
    except ImportError as exc:  # pragma: no cover - psycopg2-binary is a dependency
        from .errors import ConfigError

        raise ConfigError("PostgreSQL needs psycopg2", hint="pip install psycopg2-binary") from exc
    register_uuid()
    adapter = peewee.Psycopg2Adapter  # its class body read these constants at import
    adapter.txn_idle = extensions.TRANSACTION_STATUS_IDLE
    adapter.txn_inerror = extensions.TRANSACTION_STATUS_INERROR
    adapter.txn_unknown = extensions.TRANSACTION_STATUS_UNKNOWN
    peewee.psycopg2 = psycopg2
    peewee.pg_extensions = extensions
    peewee.pg_register_uuid = register_uuid
    peewee.Json_pg2 = Json
