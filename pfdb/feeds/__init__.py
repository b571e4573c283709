"""Product feeds: streaming, idempotent import of supplier feeds, and export in pfdb's own format.

    from pfdb.feeds import import_products, export_products

    result = import_products("supplier.csv.gz", rejects="rejects.csv")
    print(result.created, result.updated, result.unchanged, result.rejected)
    export_products("catalogue.csv", category="shirts")

Modules: ``reading`` opens files (gzip, BOM, standard input, delimiter sniffing);
``formats`` detects pfdb CSV/JSON Lines, Shopify, Google Merchant and Google Retail feeds
and maps a column-mapping file; ``layout`` is the order of a cleaned row's fields, which
validation, the importer and the writer all read; ``validation`` checks values as
``Product.validate()`` does; ``upsert`` is the batch write fast path per backend; ``importer`` runs an import as
a Job with its SyncHistory; ``exporter`` writes products back out.
"""

import warnings
from typing import Any

from .formats import FEED_FIELDS, PFDB_COLUMNS, ColumnMapping
from .importer import ImportProgress, ImportResult, RowIssue, import_products

_EXPORTER = ("ExportResult", "export_products")


def __getattr__(name: str) -> Any:
    """The exporter on first use (``pfdb import`` is a process of its own and need not load it);
    ``Mapping``, which read like ``collections.abc.Mapping``, as ``ColumnMapping`` with a warning."""
    if name in _EXPORTER:
        from . import exporter

        value = getattr(exporter, name)
        globals()[name] = value
        return value
    if name == "Mapping":
        warnings.warn(
            "pfdb.feeds.Mapping is deprecated: use pfdb.feeds.ColumnMapping", DeprecationWarning, stacklevel=2
        )
        return ColumnMapping
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "FEED_FIELDS",
    "PFDB_COLUMNS",
    "ColumnMapping",
    "ExportResult",
    "ImportProgress",
    "ImportResult",
    "RowIssue",
    "export_products",
    "import_products",
]
