"""Every Redis failure becomes :class:`~flask_sse_stream.BrokerError` here, and only here."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis

from ..errors import BrokerError

__all__ = ["ERRORS", "broker_error", "mapped_errors"]

ERRORS = (redis.RedisError, OSError, redis.exceptions.RedisClusterException)
"""Everything a Redis call can raise, in every topology: the cluster client's
``SlotNotCoveredError`` and ``RedisClusterUnreachableError`` are no ``RedisError``."""


def broker_error(exc: BaseException) -> BrokerError:
    """The one translation of a Redis failure into what callers handle."""
    if isinstance(exc, redis.ResponseError):
        return BrokerError(f"redis refused the command: {exc}")
    return BrokerError(f"redis unavailable: {exc}")


@contextmanager
def mapped_errors() -> Iterator[None]:
    """Raise a Redis failure inside the block as ``BrokerError`` (chained)."""
    try:
        yield
    except ERRORS as exc:
        raise broker_error(exc) from exc
