"""Pages of a name-ordered list: the names after a token, at most a page of them."""

from __future__ import annotations

from bisect import bisect_right

MAX_PAGE = 500  # items per answer, whatever a client asks: a page never holds the event loop long


def page(names: list[str], after: str, limit: int) -> list[str]:
    """The names after `after` in a sorted list, at most `limit` of them (0: no limit)."""
    start = bisect_right(names, after) if after else 0
    return names[start:start + limit] if limit else names[start:]

