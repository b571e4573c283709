"""The value rules of a product, in one table that ``Product.validate()`` and the feed cleaner both read.

Each rule turns a value into its stored form or raises ``RuleError`` (``NumberError`` for
numbers) whose message completes "<field>: …"; the model wraps it in ``ValidationError``,
the feed cleaner in ``Invalid``. The feed cleaner adds per-row and per-column fast paths
(``grammar.fast``, memoised codes, ``gtins_valid``) in front of these rules, never a rule of
its own, so a value is accepted or refused, with the same reason, whichever way it arrives.

Also here: the words pfdb reads as true or false, in feed cells, settings and
``Configuration`` rows alike. Imports nothing of pfdb but ``numbers``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .numbers import DecimalGrammar, NumberError, parse_integer

#: Money columns, numeric(12, 2): never negative, never rounded (a third decimal is a mistake
#: in the feed, not a cent to guess).
MONEY = DecimalGrammar(12, 2)
#: Weights in kg, numeric(10, 3): measurements, so extra places are rounded half-up.
WEIGHT = DecimalGrammar(10, 3, rounding=True)

PRODUCT_STATUSES = ("draft", "active", "archived")
GTIN_LENGTHS = (8, 12, 13, 14)
_CURRENCY = re.compile(r"[A-Z]{3}")

#: Words read as true or false, lower-cased; a blank value means "none given", which each
#: caller decides (a feed cell: no value; a setting: off).
TRUE_WORDS = frozenset({"1", "true", "yes", "y", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "n", "off"})


class RuleError(ValueError):
    """A value a rule refuses; the message completes "<field>: …"."""


#: What a rule raises: the model and the feed catch these and nothing wider.
RULE_ERRORS = (RuleError, NumberError)


def gtin_is_valid(code: str) -> bool:
    """GTIN-8/12/13/14 (UPC and EAN included) of ASCII digits with a correct check digit.

    The check digit makes the weighted sum a multiple of ten: weights 3, 1, 3, … from the
    digit left of the check digit. The sums run in C (bytes), as this runs once per row of
    every feed.
    """
    if len(code) not in GTIN_LENGTHS or not code.isdigit() or not code.isascii():
        return False
    data = code.encode("ascii")
    odd, even = data[-2::-2], data[-3::-2]
    total = 3 * (sum(odd) - 48 * len(odd)) + sum(even) - 48 * len(even)
    return (10 - total % 10) % 10 == data[-1] - 48


# ``gtins_valid``: a digit's byte as its value, and as three times its value modulo 10.
_DIGIT = bytes.maketrans(b"0123456789", bytes(range(10)))
_TRIPLE = bytes.maketrans(b"0123456789", bytes(3 * d % 10 for d in range(10)))
_SIXTEEN_ONES = int.from_bytes(b"\x01" * 16, "little")
_NOT_TENS = bytes(v % 10 != 0 for v in range(256))  # a sum's byte -> 1 unless a multiple of ten


def gtins_valid(codes: list[str]) -> bool:
    """Whether every code has a correct check digit: ``gtin_is_valid`` for a whole column at once.

    The codes must be ASCII digits of a GTIN length already (the caller matched them). Each
    is zero-padded to 16 digits (zeros weigh nothing), so its weights 3, 1, 3, … fall on
    even and odd byte positions alike for every code; the weighted digits (each 0-9) are
    summed per code by one big-integer multiplication: byte ``16k + 15`` of
    ``weighted * 0x0101…01`` (16 ones) is the sum of code ``k``'s 16 bytes, at most 144,
    so no byte carries into the next. A feed's column costs a few C calls instead of a
    Python call per row. tests/test_feeds_validation.py checks it against ``gtin_is_valid``.
    """
    if not codes:
        return True
    data = "".join(map(str.zfill, codes, [16] * len(codes))).encode("ascii")
    weighted = bytearray(len(data))
    weighted[0::2] = data[0::2].translate(_TRIPLE)
    weighted[1::2] = data[1::2].translate(_DIGIT)
    sums = (int.from_bytes(weighted, "little") * _SIXTEEN_ONES).to_bytes(len(data) + 16, "little")[15::16]
    return 1 not in sums[: len(codes)].translate(_NOT_TENS)


def gtin_reason(code: str) -> str:
    return f"{code!r} is not a valid GTIN (8, 12, 13 or 14 digits with check digit)"


def identifier_text(raw: str) -> str:
    """An identifier as a spreadsheet may have kept it: trimmed, without one leading apostrophe.

    ``'7350177880121``: the apostrophe made a spreadsheet keep the digits as text.
    """
    text = raw.strip()
    if text[:1] == "'":
        text = text[1:].strip()
    return text


def gtin(value: Any) -> str | None:
    """A GTIN's stored form (``identifier_text``), ``None`` for blank; ``RuleError`` if invalid."""
    if value is None:
        return None
    code = identifier_text(str(value))
    if not code:
        return None
    if not gtin_is_valid(code):
        raise RuleError(gtin_reason(code))
    return code


def currency_code(text: str) -> str:
    """An upper-cased ISO 4217 code from trimmed, non-empty ``text``; ``RuleError`` otherwise."""
    code = text.upper()
    if not _CURRENCY.fullmatch(code):
        raise RuleError(f"{text!r} is not a three-letter ISO 4217 code")
    return code


def status_reason(value: Any) -> str:
    return f"must be one of {', '.join(PRODUCT_STATUSES)}, got {value!r}"


def truth(text: str) -> bool | None:
    """``True``/``False`` for a word of ``TRUE_WORDS``/``FALSE_WORDS`` (any case, trimmed), ``None`` for blank.

    Raises ``RuleError`` for any other word.
    """
    word = text.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    if not word:
        return None
    raise RuleError(f"{text!r} is not true or false")


@dataclass(frozen=True)
class Rule:
    """How one Product field's value is checked and normalised.

    ``check(value)`` returns the stored form (``None`` for no value) or raises one of
    ``RULE_ERRORS``. ``grammar`` is set for decimal columns, so a caller with a per-row fast
    path (the feed cleaner) can use ``grammar.fast`` before ``check``.
    """

    check: Callable[[Any], Any]
    grammar: DecimalGrammar | None = None


#: The Product fields whose values follow a rule beyond their column's type and length
#: (currency and status also need text: their models and feeds trim and require it first).
PRODUCT_RULES: dict[str, Rule] = {
    "price": Rule(MONEY.parse, MONEY),
    "compare_at_price": Rule(MONEY.parse, MONEY),
    "weight": Rule(WEIGHT.parse, WEIGHT),
    "inventory_quantity": Rule(parse_integer),
    "gtin": Rule(gtin),
}
