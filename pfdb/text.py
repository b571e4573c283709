"""Small text helpers shared by models, feeds and migrations."""

from __future__ import annotations

import re
import unicodedata

_NON_SLUG = re.compile(r"[^a-z0-9]+")


def slugify(text: str, max_length: int = 200) -> str:
    """ASCII, lower-case, hyphen-separated, every script transliterated.

    ``"Boutonnière & Pins"`` -> ``"boutonniere-pins"``, ``"Одежда"`` -> ``"odezhda"``,
    ``"服装"`` -> ``"fu-zhuang"``, ``"Straße"`` -> ``"strasse"``, ``"Łódź"`` -> ``"lodz"``.
    text-unidecode (the table python-slugify uses, Artistic licence rather than Unidecode's GPL)
    does the transliteration; dropping what has no ASCII decomposition left Cyrillic, Greek
    and CJK names with no slug at all. ASCII text gives the same slug as before.
    """
    if not text.isascii():
        from text_unidecode import unidecode  # here: its 300 KB table loads on the first non-ASCII name

        text = unidecode(text)
    slug = _NON_SLUG.sub("-", text.lower()).strip("-")
    return slug[:max_length].rstrip("-")


def ascii_slug(text: str, max_length: int = 200) -> str:
    """The slug rule before transliteration: characters without an ASCII decomposition dropped.

    Kept for values that are identities, not labels: a Shopify variant's generated SKU is
    built with it, so re-importing an export made before transliteration finds the same SKUs.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    slug = _NON_SLUG.sub("-", ascii_text.lower()).strip("-")
    return slug[:max_length].rstrip("-")


def first_line(error: BaseException | str) -> str:
    """The first line of an error's message, trimmed; the exception's class name when it says nothing.

    Driver and tool messages run to several lines (a DETAIL, a HINT, the SQL with a caret):
    a one-line error quotes the first. An empty message must not become an IndexError.
    """
    text = str(error).strip()
    if not text:
        return type(error).__name__ if isinstance(error, BaseException) else ""
    return text.splitlines()[0].strip()


#: Why text holding a NUL (``\x00``) is refused, by the models and the feed importer alike:
#: PostgreSQL cannot store it in text (SQLite can), so a row must not depend on the backend.
NUL_REASON = "contains a NUL character (\\x00), which PostgreSQL cannot store; remove it"


def quote_identifier(name: str) -> str:
    """``name`` as an SQL identifier in double quotes, quotes doubled: safe for any table, schema
    or database name on SQLite and PostgreSQL, and taken literally by pg_dump's ``--schema``
    patterns (no wildcards inside quotes)."""
    return '"' + name.replace('"', '""') + '"'
