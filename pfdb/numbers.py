"""The grammar of numbers pfdb accepts, in one place for the models and the feed importer.

A number written as text is plain decimal: ASCII digits with at most one ``.`` as the
decimal point, and a leading ``-`` only where the column allows negatives (``1234.50``,
``0.5``, ``.5``, ``-3``), surrounded by optional spaces. Everything else is refused with
a reason instead of being guessed at: Python's ``Decimal`` would read ``1_000``,
``٣.٥٠`` (Arabic-Indic digits), ``+3``, ``1e2`` and ``0E+1000000``, and ``1e30`` or
``1e999999999`` then fail deep inside a write (or, as a whole number, take hours to
expand). A column allows at most its digits before the point; extra decimal places are
refused for money and rounded for measurements. ``Decimal``, ``int`` and ``float`` values
from Python are numbers already and are checked by value (finite, in range, places).

Imports nothing of pfdb: ``pfdb.models`` and ``pfdb.feeds`` both build on it.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

# Sign, digits before the point, digits after it: [0-9] is ASCII only, unlike \d or str.isdigit.
_PLAIN = re.compile(r"(-?)([0-9]*)(?:\.([0-9]*))?")
_NOT_NUMBERS = {"nan", "snan", "inf", "infinity"}


class NumberError(ValueError):
    """A value the grammar refuses; the message completes "<field>: …" (the model and the feed add the field)."""


def _show(value: Any) -> str:
    """The value as a message quotes it, cut short: a refused cell may be megabytes long."""
    text = repr(value)
    return text if len(text) <= 42 else text[:40] + "…" + text[-1]


def _why_not_plain(text: str) -> str:
    """Why ``text`` (stripped, not matching the grammar) is refused: one reason a person can act on."""
    show = _show(text)
    if text.lower().lstrip("+-") in _NOT_NUMBERS:
        return f"{show} is not a number"
    if any(c.isdigit() and not c.isascii() for c in text):
        return f"{show} is not a plain decimal number: use the digits 0-9"
    if text[:1] == "+":
        return f"{show} is not a plain decimal number: write it without the '+'"
    if "_" in text:
        return f"{show} is not a plain decimal number: write the digits without '_'"
    if "," in text:
        return f"{show} is not a plain decimal number: use '.' for the decimal point and no thousands separator"
    if "e" in text.lower():
        try:
            Decimal(text)
        except (InvalidOperation, ValueError):
            pass
        else:
            return f"{show} is not a plain decimal number: write the digits out, without an exponent"
    return f"{show} is not a number"


class DecimalGrammar:
    """Plain decimal numbers for one column: ``digits`` in all, ``places`` of them after the point.

    Args:
        digits: the column's precision (``max_digits``); at most ``digits - places`` before the point.
        places: the column's decimal places.
        negative: whether a leading ``-`` is allowed.
        rounding: round extra places half-up (measurements) instead of refusing them (money).
    """

    def __init__(self, digits: int, places: int, *, negative: bool = False, rounding: bool = False):
        if not 0 <= places <= digits <= 28:  # 28: Decimal's default precision, so quantize never fails
            raise ValueError(f"unsupported decimal column ({digits}, {places})")
        self.digits, self.places, self.negative, self.rounding = digits, places, negative, rounding
        self.whole_digits = digits - places
        self.exponent = Decimal(1).scaleb(-places)
        self.limit = Decimal(10) ** self.whole_digits
        self.largest = "9" * self.whole_digits + ("." + "9" * places if places else "")
        # The form nearly every value takes, for callers with a per-row fast path (the feed
        # importer): a match is in the grammar, and ``Decimal(text).quantize(exponent)`` is its value.
        whole = f"[0-9]{{1,{self.whole_digits}}}"
        self.fast = re.compile(whole + (f"(?:\\.[0-9]{{1,{places}}})?" if places else ""))

    def __repr__(self) -> str:
        return f"DecimalGrammar({self.digits}, {self.places}, negative={self.negative}, rounding={self.rounding})"

    def parse(self, value: Any) -> Decimal | None:
        """``value`` as a Decimal with exactly ``places`` places; ``None`` for no value (None, blank text).

        Raises ``NumberError`` with the reason.
        """
        if value is None:
            return None
        if isinstance(value, str):
            return self._parse_text(value)
        if isinstance(value, bool):  # an int subclass, but True is no amount
            raise NumberError(f"{value!r} is not a number")
        if isinstance(value, int):
            if abs(value) >= 10**self.whole_digits:  # before Decimal(): no huge objects from a huge int
                raise NumberError(self._too_large(value))
            return self._checked(Decimal(value), value)
        if isinstance(value, float):
            if value != value or value in (float("inf"), float("-inf")):
                raise NumberError(f"{value!r} is not a number")
            return self._checked(Decimal(repr(value)), value)  # 19.99 -> "19.99", never the binary expansion
        if isinstance(value, Decimal):
            if not value.is_finite():
                raise NumberError(f"{_show(str(value))} is not a number")
            return self._checked(value, value)
        raise NumberError(f"{_show(value)} is not a number")

    def _parse_text(self, raw: str) -> Decimal | None:
        text = raw.strip()
        if not text:
            return None
        match = _PLAIN.fullmatch(text)
        if match is None:
            raise NumberError(_why_not_plain(text))
        sign, whole, fraction = match.groups()
        fraction = (fraction or "").rstrip("0")  # 19.990 has two places
        whole = whole.lstrip("0")
        if not match[2] and not match[3]:  # "-", ".", "-.": no digit at all
            raise NumberError(f"{_show(text)} is not a number")
        # Length checks before Decimal(): a megabyte of digits never becomes an object.
        if len(whole) > self.whole_digits:
            raise NumberError(self._too_large(text))
        if len(fraction) > self.places and not self.rounding:
            raise NumberError(self._too_precise(text))
        if len(fraction) > self.places + 30:  # rounding reads only the first places anyway
            fraction = fraction[: self.places + 30]
        return self._checked(Decimal(f"{sign}{whole or '0'}.{fraction or '0'}"), text)

    def _checked(self, amount: Decimal, shown: Any) -> Decimal:
        """A finite ``amount``: sign, range and places checked, quantized to ``places``."""
        if amount.is_zero():
            amount = amount.copy_abs()  # -0.00 is 0.00
        elif amount < 0 and not self.negative:
            raise NumberError(f"must not be negative, got {_show(str(shown)) if isinstance(shown, str) else shown}")
        if amount.copy_abs() >= self.limit:
            raise NumberError(self._too_large(shown))
        rounded = amount.quantize(self.exponent, rounding=ROUND_HALF_UP)  # in range: cannot overflow
        if rounded != amount and not self.rounding:
            raise NumberError(self._too_precise(shown))
        if rounded.copy_abs() >= self.limit:  # 9999999.9996 rounds up out of the column
            raise NumberError(self._too_large(shown))
        return rounded

    def _bounds(self) -> tuple[str, str]:
        return (f"-{self.largest}" if self.negative else "0"), self.largest

    def _too_large(self, shown: Any) -> str:
        shown = _show(shown) if isinstance(shown, str) else shown
        low, high = self._bounds()
        return f"{shown} is out of range ({low} to {high})"

    def _too_precise(self, shown: Any) -> str:
        shown = _show(shown) if isinstance(shown, str) else shown
        if not self.places:
            return f"{shown} is not a whole number"
        return f"{shown} has more than {self.places} decimal places"


#: 32-bit integer columns (IntegerField is ``integer`` on PostgreSQL).
INT_RANGE = (-(2**31), 2**31 - 1)


class _IntegerGrammar(DecimalGrammar):
    def _bounds(self) -> tuple[str, str]:
        return str(INT_RANGE[0]), str(INT_RANGE[1])


_WHOLE = _IntegerGrammar(10, 0, negative=True)


def parse_integer(value: Any) -> int | None:
    """A whole number in the 32-bit range by the same grammar (``12`` and ``12.0``, not ``1e2``).

    Raises ``NumberError`` with the reason.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    else:
        amount = _WHOLE.parse(value)
        if amount is None:
            return None
        number = int(amount)
    if not INT_RANGE[0] <= number <= INT_RANGE[1]:
        raise NumberError(_WHOLE._too_large(number))
    return number
