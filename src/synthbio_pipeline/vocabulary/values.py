"""Numbers read from text or config: whole numbers of bounded length, finite numbers only.

``int("9" * 5000)`` raises a bare ValueError (Python refuses more than 4,300 digits) and
``float("1e999")`` is infinity, which JSON cannot carry; both used to pass the table's checks
and fail later, far from the cell that caused them. These helpers say what is wrong at once.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterator, Mapping
from typing import Any

#: Digits a whole number may have (int64 holds 18 in full); more is a typo, not a seed.
MAX_DIGITS = 18
#: Characters a number in a table cell may have (digits, sign, point, exponent).
MAX_NUMBER_CHARS = 32
INT64_MAX = 2**63 - 1

_WHOLE = re.compile(r"[+-]?\d+")


def too_long(text: str) -> str | None:
    """Why a cell holding a number is too long to be one, or None."""
    stripped = text.strip()
    if _WHOLE.fullmatch(stripped) and len(stripped.lstrip("+-")) > MAX_DIGITS:
        return f"has {len(stripped.lstrip('+-')):,} digits; a whole number here has at most {MAX_DIGITS}"
    if len(stripped) > MAX_NUMBER_CHARS and re.fullmatch(r"[\d+\-.eE]+", stripped):
        return f"is {len(stripped):,} characters long; a number here has at most {MAX_NUMBER_CHARS}"
    return None


def parse_whole(text: Any) -> Any:
    """``text`` as an int when it spells a whole number of at most MAX_DIGITS digits; else unchanged.

    Left unchanged, the value reaches the checks as written, so their message names it.
    """
    if isinstance(text, str) and _WHOLE.fullmatch(text) and len(text.lstrip("+-")) <= MAX_DIGITS:
        return int(text)
    return text


def parse_finite(text: str) -> Any:
    """``text`` as a finite number (int when whole), or unchanged when it is not one."""
    if too_long(text):
        return text
    try:
        number = float(text)
    except ValueError:
        return text
    if not math.isfinite(number):
        return text
    return int(number) if number.is_integer() else number


def is_finite_number(value: Any) -> bool:
    """A real number that is neither NaN nor infinite (bools are not numbers here)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def non_finite(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every NaN or infinity inside a (nested) config value, as ``(dotted.path, value)``."""
    if isinstance(value, float) and not math.isfinite(value):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from non_finite(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from non_finite(item, f"{path}[{index}]")
