"""How a problem names the words it allows: quoted lists and "did you mean" hints."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice (or one equal but for case), else ``""``."""
    choices = list(choices)
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if not matches:
        lowered = {choice.lower(): choice for choice in choices}
        if word.lower() in lowered:
            matches = [lowered[word.lower()]]
    return f"; did you mean {matches[0]!r}?" if matches else ""


def quoted(values: Iterable[object]) -> str:
    """``'a', 'b'``: values as the user would type them in a query."""
    return ", ".join(repr(value) for value in values)


def listed(words: Iterable[str], conjunction: str = "and") -> str:
    """``a, b and c`` (or ``a, b or c``)."""
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {conjunction} {words[-1]}"
