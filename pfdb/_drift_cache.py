"""A cache of the drift between the models and the migrations, for ``pfdb status``.

Computing drift imports peewee-migrate and replays every migration (about 45 ms, a third
of ``pfdb status``), yet its answer only changes when the models, the migration files, the
backend kind or the libraries change. The answer is kept under a key that hashes all of
them, so a stale answer cannot be read: any change makes a new key. ``pfdb check`` (what
CI runs) never reads the cache.

The cache lives in ``$XDG_CACHE_HOME/pfdb`` (default ``~/.cache/pfdb``); any failure to
read or write it only costs the recomputation.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import tempfile
import types
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._peewee import peewee
from .config import cache_home

_DATABASES = (peewee.Database, peewee.DatabaseProxy)
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_FILE_NAME = "drift.json"
# Attributes that say where or in which process an object was made, not what it is.
_UNSTABLE = frozenset({"model", "_order", "_sort_key", "_hash"})  # _hash: salted per process


def cache_dir() -> Path:
    return cache_home() / "pfdb"


def _stable(value: Any, depth: int = 0) -> Any:
    """A JSON-able picture of a model attribute that is the same in every process.

    Functions, classes and fields are named rather than repr'd (a repr holds a memory
    address); other objects (SQL constraints, index expressions) are described by their
    attributes (to a bounded depth, against cycles).
    """
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        items = [_stable(v, depth + 1) for v in value]
        return sorted(items, key=repr) if isinstance(value, (set, frozenset)) else items
    if isinstance(value, dict):
        return {str(k): _stable(v, depth + 1) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (type, types.FunctionType, types.BuiltinFunctionType, types.MethodType)):
        return f"{getattr(value, '__module__', '')}.{value.__qualname__}"
    if isinstance(value, _DATABASES):  # what a table is bound to, with its pool's state: not schema
        return "<database>"
    model, name = getattr(value, "model", None), getattr(value, "name", None)
    if isinstance(model, type) and isinstance(name, str):  # a field
        return f"field:{model.__name__}.{name}"
    if depth < 6 and hasattr(value, "__dict__"):
        attributes = {k: v for k, v in vars(value).items() if k not in _UNSTABLE}
        return [type(value).__qualname__, _stable(attributes, depth + 1)]
    return _ADDRESS.sub("", repr(value))


def _model_signature(model: Any) -> Any:
    meta = model._meta
    # A field's classes, not just its own: peewee-migrate types a custom field by its first
    # peewee base class, so changing a base changes the drift.
    fields = [
        [
            f.name,
            [_stable(c) for c in type(f).__mro__],
            _stable({k: v for k, v in vars(f).items() if k not in _UNSTABLE}),
        ]
        for f in meta.sorted_fields
    ]
    return [
        meta.table_name,
        fields,
        _stable(meta.indexes),
        _stable(meta.constraints),
        _stable(getattr(meta, "primary_key", None)),
    ]


def _file_stamp(path: str | None) -> list[Any]:
    if not path:
        return [None]
    try:
        stat = os.stat(path)
    except OSError:
        return [path, None]
    return [path, stat.st_size, stat.st_mtime_ns]


def _peewee_version() -> str:
    return peewee.__version__


def drift_key(models: Iterable[Any], directory: Path, backend: str) -> str:
    """The hash of everything a drift answer depends on."""
    migrations = sorted(directory.glob("[0-9][0-9][0-9]_*.py"))
    spec = importlib.util.find_spec("peewee_migrate")
    peewee_migrate_dir = os.path.dirname(spec.origin) if spec and spec.origin else None
    parts = {
        "backend": backend,
        "models": [_model_signature(m) for m in models],
        "migrations": [[p.name, hashlib.sha256(p.read_bytes()).hexdigest()] for p in migrations],
        # The diff is computed by peewee-migrate, patched by pfdb.migrations: a new version
        # of either may answer differently.
        "code": [
            _file_stamp(os.path.join(os.path.dirname(__file__), "migrations.py")),
            _file_stamp(peewee_migrate_dir and os.path.join(peewee_migrate_dir, "auto.py")),
            _peewee_version(),
        ],
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def load(key: str) -> list[str] | None:
    """The cached changes for ``key``, or None when there is no answer for it."""
    try:
        data = json.loads((cache_dir() / _FILE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("key") != key or not isinstance(data.get("changes"), list):
        return None
    return [str(change) for change in data["changes"]]


def store(key: str, changes: list[str]) -> None:
    """Keep the answer for ``key``; written whole (temporary file, then rename) or not at all."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".drift-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump({"key": key, "changes": changes}, handle)
            os.replace(tmp, folder / _FILE_NAME)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        pass
