"""All pfdb models. ``MODELS`` lists them in dependency order (for create/drop and migrations)."""

from .base import BaseModel
from .catalog import Category, Icon, Product, ProductImage, gtin_is_valid, image_hash, to_money
from .fields import JSONField, PlacesDecimalField, UTCDateTimeField, utcnow
from .jobs import Job, SyncHistory
from .system import Configuration, SystemLog, Tenant
from .users import User

MODELS = (User, Category, Product, ProductImage, Icon, Job, SyncHistory, SystemLog, Configuration)
# The tenant registry is the main database's alone: not a table every tenant has (see migration 004).
REGISTRY_MODELS = (Tenant,)

__all__ = [
    "MODELS",
    "REGISTRY_MODELS",
    "BaseModel",
    "Category",
    "Configuration",
    "Icon",
    "JSONField",
    "Job",
    "PlacesDecimalField",
    "Product",
    "ProductImage",
    "SyncHistory",
    "SystemLog",
    "Tenant",
    "UTCDateTimeField",
    "User",
    "gtin_is_valid",
    "image_hash",
    "to_money",
    "utcnow",
]
