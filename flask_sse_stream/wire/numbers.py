"""The one parser of decimal numbers that arrive as text from clients, headers, URLs,
config values and Redis ids.

``str.isdigit`` alone accepts "²", Arabic-Indic and fullwidth digits, which ``int`` then
rejects (a 500) or reads as another number: every number taken from outside is checked
here to be plain ASCII digits, with a bound on its length (``int`` of a huge string costs
quadratic time, and Python refuses more than 4,300 digits).
"""

from __future__ import annotations

__all__ = ["ascii_int"]


def ascii_int(text: str, max_digits: int = 18) -> int | None:
    """``text`` as a non-negative int if it is 1 to ``max_digits`` ASCII digits, else None."""
    if 0 < len(text) <= max_digits and text.isascii() and text.isdigit():
        return int(text)
    return None
