"""How long a background loop waits before retrying Redis: the policy, apart from the
sleeping (which the loop does through the runtime seam), as in redis-py's own
``redis.backoff``."""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """Doubling delays from ``first`` up to ``limit``; :meth:`reset` after a success."""

    __slots__ = ("_first", "_limit", "_next")

    def __init__(self, first: float = 0.1, limit: float = 2.0) -> None:
        self._first = self._next = first
        self._limit = limit

    def reset(self) -> None:
        self._next = self._first

    def next_delay(self) -> float:
        """The delay to wait now (the following one doubles, up to the limit)."""
        delay = self._next
        self._next = min(delay * 2, self._limit)
        return delay
