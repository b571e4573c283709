"""Small text helpers shared by models, feeds and migrations."""

from __future__ import annotations

import re
import unicodedata

_NON_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str, max_length: int = 200) -> str:
    """ASCII, lower-case, hyphen-separated: ``"Boutonnière & Pins"`` -> ``"boutonniere-pins"``."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NON_SLUG.sub("-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-")


#: Why text holding a NUL (``\x00``) is refused, by the models and the feed importer alike:
#: PostgreSQL cannot store it in text (SQLite can), so a row must not depend on the backend.
NUL_REASON = "contains a NUL character (\\x00), which PostgreSQL cannot store; remove it"
